"""Level ``reconfigurations``: how many GPUs change layout (reuse free instances before re-cutting).

Exact per-node cost (DP) and CP-SAT coefficient are the same number: 1 for a GPU pattern that
re-cuts the GPU (only where :func:`models.relayout.may_change_layout` allows it), 0 for one that
keeps its layout. Lower bound: 0.
"""

from __future__ import annotations

from typing import Any

NAME = "reconfigurations"
KEEP = -1


def pattern(option: int) -> int:
    """Cost of one GPU taking ``option`` (KEEP: its own layout; otherwise an index into the model's
    layout options)."""
    return 0 if option == KEEP else 1


def cpsat_terms(terms: list[tuple[Any, int]], var: Any, option: int) -> None:
    if pattern(option):
        terms.append((var, pattern(option)))


LOWER_BOUND = 0
