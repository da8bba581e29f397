"""The planner (DESIGN §4): ``plan(state, pod, config, pending, nodes) -> Plan``.

Modules, one job each:

* :mod:`.config` — :class:`PlannerConfig`;
* :mod:`.costs` — per-GPU usage;
* :mod:`.objective` — one module per objective level (exact per-node cost and CP-SAT terms);
* :mod:`.workload` — the workload estimate (frozen) and its online learner;
* :mod:`.context` — per-configuration tables: objective weights, layout options per model, GPU
  classes (identical GPUs collapse into one class);
* :mod:`.shapes` — a pod reduced to what placement depends on;
* :mod:`.views` — per-node GPU classes with counts, cached by node identity;
* :mod:`.patterns`, :mod:`.unitcost` — per GPU class, how one GPU can host some of a pod's units
  (keep the layout and use free instances, or re-partition an idle GPU), with costs;
* :mod:`.nodesolve` — the exact per-node subproblem (DP over classes and unit counts);
* :mod:`.single` — the single-pod path: the best of the per-node optima;
* :mod:`.batch_model`, :mod:`.levels`, :mod:`.batch` — batch mode: one CP-SAT model over pod
  types and GPU classes, lexicographic levels, the greedy hint and fallback;
* :mod:`.assemble` — concrete GPUs and instances for a chosen solution;
* :mod:`.reasons` — why a pod cannot go on a node;
* :mod:`.evaluate` — every level's value for any plan (solver-independent);
* :mod:`.api` — dispatch (planner or baseline) and the validator check.
"""

from .api import plan
from .config import OBJECTIVES, POLICIES, TIES, PlannerConfig
from .errors import PlannerError
from .evaluate import evaluate
from .workload import PRIOR, OnlineWorkload, Workload

__all__ = ["OBJECTIVES", "POLICIES", "PRIOR", "TIES", "OnlineWorkload", "PlannerConfig", "PlannerError", "Workload",
           "evaluate", "plan"]
