"""dynamig.solver: the planner (CP-SAT and exact per-node decomposition), baselines, benchmarks.

Public API: :func:`plan`, :class:`PlannerConfig`, :func:`evaluate`, :class:`PlannerError`.
OR-Tools is imported lazily (only the batch model needs it).
"""

from .planner import OBJECTIVES, POLICIES, PlannerConfig, PlannerError, evaluate, plan

__all__ = ["OBJECTIVES", "POLICIES", "PlannerConfig", "PlannerError", "evaluate", "plan"]
