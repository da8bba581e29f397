"""Level ``placed``: the pod is placed (single-pod path: a hard constraint, value 1); in batch mode,
the priority-weighted number of placed pods, maximised. A pod's weight is 1 + the rank of its
priority among the distinct priorities of the batch. The CP-SAT expression is ``Σ weight · placed``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from models.requests import PodRequest

NAME = "placed"


def weights(pods: Sequence[PodRequest]) -> dict[str, int]:
    levels = sorted({p.priority for p in pods})
    return {p.key: 1 + levels.index(p.priority) for p in pods}


def cpsat_terms(terms: list[tuple[Any, int]], var: Any, weight: int) -> None:
    terms.append((var, weight))
