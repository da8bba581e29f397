"""Level ``policy``: HAMi's binpack/spread, at node and at GPU level.

Per unit: ``1000 − usage`` of its GPU under ``binpack`` (fuller GPUs first), ``usage`` under
``spread``; per pod: the same of its node's mean GPU usage, times :data:`NODE_POLICY_MULT` (so the
node term dominates and a person can read both terms in the decimal value). Usages are per-mille
before the plan. The same numbers in DP and CP-SAT (coefficients of unit and node-pod variables).
"""

from __future__ import annotations

from typing import Any

NAME = "policy"
PERMILLE = 1000
#: policy = node term x NODE_POLICY_MULT + GPU term.
NODE_POLICY_MULT = 10**7


def unit(usage: int, gpu_policy: str) -> int:
    return PERMILLE - usage if gpu_policy == "binpack" else usage


def node(usage: int, node_policy: str) -> int:
    return (PERMILLE - usage if node_policy == "binpack" else usage) * NODE_POLICY_MULT


def cpsat_terms(terms: list[tuple[Any, int]], var: Any, coef: int) -> None:
    terms.append((var, coef))


LOWER_BOUND = 0
