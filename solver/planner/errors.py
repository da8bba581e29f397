"""Planner errors."""

from __future__ import annotations


class PlannerError(RuntimeError):
    """An internal error: the planner produced a plan that the validator rejects (a bug)."""
