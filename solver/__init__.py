"""dynamig.solver: the planner (CP-SAT and exact per-node decomposition), baselines, benchmarks.

Public API: :func:`plan`, :class:`PlannerConfig`, :func:`evaluate`, :class:`PlannerError`, the workload
estimate (:class:`Workload`, :class:`OnlineWorkload`, :data:`PRIOR`).
OR-Tools is imported lazily (only the batch model needs it).
"""

from .planner import (
           OBJECTIVES,
           POLICIES,
           PRIOR,
           TIES,
           OnlineWorkload,
           PlannerConfig,
           PlannerError,
           Workload,
           evaluate,
           plan,
)

__all__ = ["OBJECTIVES", "POLICIES", "PRIOR", "TIES", "OnlineWorkload", "PlannerConfig", "PlannerError", "Workload",
           "evaluate", "plan"]
