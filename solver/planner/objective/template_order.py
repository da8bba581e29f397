"""Level ``template_order``: HAMi's first match. A re-cut GPU costs the rank of its new layout (the
template's index in config order; with ``layouts: any``, the other valid layouts after every
template). An **idle** GPU that keeps its layout costs that layout's rank too (:func:`keep_order`):
HAMi resets an idle GPU to the first matching template whatever it holds, so keeping a 7g for a 1g
unit is no cheaper here than re-cutting to the template that serves it first. A kept layout of a
busy GPU costs 0. With the default order and one unit, the planner picks the first template that
serves the unit, as HAMi does. Same number for DP and CP-SAT; lower bound 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..context import LayoutOption

NAME = "template_order"
KEEP = -1


def pattern(option: int, rank: int) -> int:
    """Cost of one GPU taking ``option`` with rank ``rank`` (for KEEP: :func:`keep_order`)."""
    return rank


def keep_order(options: Sequence[LayoutOption], layout: Mapping[str, int], idle: bool,
               held: Iterable[tuple[str, int]]) -> int:
    """The rank of keeping ``layout`` for units of ``held`` profiles: 0 on a busy GPU; on an idle one
    the rank of the option with that layout (after every option when it is none of them)."""
    if not idle:
        return 0
    for o in options:
        if dict(o.counts) == dict(layout):
            return o.order(held)
    return max((o.order(held) for o in options), default=0) + 1


def cpsat_terms(terms: list[tuple[Any, int]], var: Any, option: int, rank: int) -> None:
    if pattern(option, rank):
        terms.append((var, pattern(option, rank)))


LOWER_BOUND = 0
