"""Baseline policies behind the same ``plan()`` interface (``PlannerConfig.policy``):
``hami-legacy`` (HAMi ≤ v2.9 first-match templates), ``hami-v210`` (HAMi v2.10 smallest-fit
placements), ``bestfit``."""

from __future__ import annotations

from collections.abc import Sequence

from models.plan import Plan
from models.requests import PodRequest
from models.types import ClusterState
from solver.planner.config import PlannerConfig

from . import bestfit, legacy, v210
from .common import run_greedy


def run_baseline(state: ClusterState, pod: PodRequest, config: PlannerConfig, pending: Sequence[PodRequest],
                 names: list[str], reasons: list[tuple[str, str]], t0: float) -> Plan:
    if config.policy == "hami-legacy":
        return run_greedy(state, pod, config, pending, names, reasons, t0, legacy.fit)
    if config.policy == "hami-v210":
        return run_greedy(state, pod, config, pending, names, reasons, t0, v210.fit)
    if config.policy == "bestfit":
        return run_greedy(state, pod, config, pending, names, reasons, t0, bestfit.fit, bestfit.node_key)
    raise ValueError(f"unknown baseline policy {config.policy!r}")


__all__ = ["run_baseline"]
