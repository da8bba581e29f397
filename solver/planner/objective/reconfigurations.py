"""Level ``reconfigurations``: layout changes that cost something (reuse free instances before
changing a GPU that holds work).

Two kinds of change (``models.relayout``), counted apart. A *whole* re-cut of an **idle** GPU (no
instance held, :func:`models.relayout.may_change_layout`) costs 0: it destroys nothing, only delays
the pods planned onto it by the re-cut time, and ``template_order`` below ranks it like HAMi's reset
(first match). Counting it here made the planner keep reusing free instances that are too big rather
than re-cut an idle GPU (issue 12: on a churning MIG cluster it re-cut nothing after warm-up and
queued longest; docs/decisions.md). A *partial* change of a busy GPU on an ``nvml`` node (held
instances stay, free ones are destroyed or created) costs :data:`PARTIAL` (1): it touches a GPU that
holds work, so an idle GPU's re-cut is preferred to it; the planner only proposes one with a unit on
it. A whole change of a busy GPU (never legal on ``mig-parted`` nodes) would cost :data:`WHOLE` (2).
The exact per-node cost (DP) and the CP-SAT coefficient are the same number. Lower bound: 0.

Options: :data:`KEEP`, an index into the model's layout options (whole re-cut), or
``PARTIAL_BASE + j`` for the class's ``j``-th partial layout (``ClassInfo.partial``).
"""

from __future__ import annotations

from typing import Any

NAME = "reconfigurations"
KEEP = -1
#: Options from here on are partial changes (an index into ``ClassInfo.partial``).
PARTIAL_BASE = 1 << 20
WHOLE = 2
PARTIAL = 1


def is_partial(option: int) -> bool:
    return option >= PARTIAL_BASE


def change(incremental: bool, idle: bool = False) -> int:
    """Cost of one layout change of a plan (``LayoutChange.incremental``; ``idle``: the GPU held no
    instance before the change)."""
    if incremental:
        return PARTIAL
    return 0 if idle else WHOLE


def pattern(option: int, idle: bool = False) -> int:
    """Cost of one GPU taking ``option`` (KEEP: its own layout; a partial option; otherwise an index
    into the model's layout options); ``idle``: the GPU holds no instance (a whole re-cut destroys
    nothing)."""
    if option == KEEP:
        return 0
    return change(is_partial(option), idle)


def cpsat_terms(terms: list[tuple[Any, int]], var: Any, option: int, idle: bool = False) -> None:
    if pattern(option, idle):
        terms.append((var, pattern(option, idle)))


LOWER_BOUND = 0
