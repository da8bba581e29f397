"""Level ``template_order``: HAMi's first match. A re-cut GPU costs the rank of its new layout (the
template's index in config order; with ``layouts: any``, the other valid layouts after every
template); a kept layout costs 0. With the default order (this level right below
``reconfigurations``) and one unit, the planner picks the first template that serves the unit, as
HAMi does. Same number for DP and CP-SAT; lower bound 0.
"""

from __future__ import annotations

from typing import Any

NAME = "template_order"
KEEP = -1


def pattern(option: int, rank: int) -> int:
    return 0 if option == KEEP else rank


def cpsat_terms(terms: list[tuple[Any, int]], var: Any, option: int, rank: int) -> None:
    if pattern(option, rank):
        terms.append((var, pattern(option, rank)))


LOWER_BOUND = 0
