"""Level ``waste``: instance memory minus the request, summed over MIG units (hami-core units waste
nothing: they take what they ask). Per unit, the same number in DP and CP-SAT; lower bound 0."""

from __future__ import annotations

from typing import Any

NAME = "waste"


def unit(instance_mib: int | None, request_mib: int) -> int:
    """Waste of one unit on an instance of ``instance_mib`` (None: a hami-core share)."""
    return 0 if instance_mib is None else instance_mib - request_mib


def cpsat_terms(terms: list[tuple[Any, int]], var: Any, instance_mib: int | None, request_mib: int) -> None:
    terms.append((var, unit(instance_mib, request_mib)))


LOWER_BOUND = 0
