"""Level ``reconfigurations``: layout changes that cost something (reuse free instances before
changing a GPU that holds work).

A re-cut of an **idle** GPU (no instance held, :func:`models.relayout.may_change_layout`) costs 0:
it destroys nothing, only delays the pods planned onto it by the re-cut time, and ``template_order``
below ranks it like HAMi's reset (first match). Counting it here made the planner keep reusing free
instances that are too big rather than re-cut an idle GPU (issue 12: on a churning MIG cluster it
re-cut nothing after warm-up and queued longest; docs/decisions.md). A change of a GPU that is not
idle (an incremental change keeping held instances) costs 1.

Exact per-node cost (DP) and CP-SAT coefficient are the same number. Lower bound: 0.
"""

from __future__ import annotations

from typing import Any

NAME = "reconfigurations"
KEEP = -1


def pattern(option: int, idle: bool = False) -> int:
    """Cost of one GPU taking ``option`` (KEEP: its own layout; otherwise an index into the model's
    layout options); ``idle``: the GPU holds no instance (a whole re-cut destroys nothing)."""
    return 0 if option == KEEP or idle else 1


def cpsat_terms(terms: list[tuple[Any, int]], var: Any, option: int, idle: bool = False) -> None:
    if pattern(option, idle):
        terms.append((var, pattern(option, idle)))


LOWER_BOUND = 0
