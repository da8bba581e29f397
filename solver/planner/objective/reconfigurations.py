"""Level ``reconfigurations``: how many GPUs change layout (reuse free instances before re-cutting).

Two kinds of change (``models.relayout``), counted apart: a *whole* re-cut of an idle GPU costs
:data:`WHOLE` (2), a *partial* change of a busy GPU on an ``nvml`` node (held instances stay, free
ones are destroyed or created) costs :data:`PARTIAL` (1): it drains nothing and keeps idle GPUs whole.
Either costs more than keeping the layout (0), and the planner only proposes one with a unit on it,
so a change is worth it only when it serves a pod. Level value = 2·whole + partial; the exact
per-node cost (DP) and the CP-SAT coefficient are the same number. Lower bound: 0.

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


def change(incremental: bool) -> int:
    """Cost of one layout change of a plan (``LayoutChange.incremental``)."""
    return PARTIAL if incremental else WHOLE


def pattern(option: int) -> int:
    """Cost of one GPU taking ``option``."""
    if option == KEEP:
        return 0
    return change(is_partial(option))


def cpsat_terms(terms: list[tuple[Any, int]], var: Any, option: int) -> None:
    if pattern(option):
        terms.append((var, pattern(option)))


LOWER_BOUND = 0
