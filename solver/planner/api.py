"""``plan()``: the one entry point. Dispatches on the policy, checks every plan with the validator."""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from dataclasses import replace

from models.plan import Plan, PodPlacement, StageResult
from models.requests import PodRequest
from models.types import ClusterState
from models.validate import validate

from .assemble import Workspace, place_result
from .config import PlannerConfig
from .context import COMPONENTS, Context, context_for
from .errors import PlannerError
from .objective.fragmentation import LOSS_BOUND_PER_UNIT
from .reasons import cluster_too_small
from .shapes import gpu_containers
from .single import candidate_nodes, solve_single
from .workload import Workload


def effective_state(state: ClusterState, config: PlannerConfig) -> ClusterState:
    if config.layouts_any and not state.layouts_any:
        return ClusterState(state.nodes, True)
    return state


def checked(state: ClusterState, plan_: Plan, pods: Sequence[PodRequest], config: PlannerConfig) -> Plan:
    """Return ``plan_`` if the validator accepts it; raise :class:`PlannerError` otherwise."""
    requests = {p.key: p for p in pods}
    problems = validate(effective_state(state, config), plan_, requests, config.templates)
    if problems:
        raise PlannerError(f"planner ({plan_.policy}) produced an invalid plan: " +
                           "; ".join(str(v) for v in problems[:5]))
    return plan_


def unique_pending(pod: PodRequest, pending: Sequence[PodRequest]) -> list[PodRequest]:
    seen = {pod.key}
    out = []
    for p in pending:
        if p.key not in seen:
            seen.add(p.key)
            out.append(p)
    return out


def not_placed(pod: PodRequest, pending: Sequence[PodRequest], reasons: list[tuple[str, str]], policy: str,
               config: PlannerConfig, t0: float, status: str = "infeasible") -> Plan:
    placements = (PodPlacement(pod.key, False), *(PodPlacement(p.key, False) for p in pending))
    stages = tuple(StageResult(o, 0.0, 0.0, status) for o in config.objective)
    return Plan(placements, (), stages, status, (time.perf_counter() - t0) * 1000, tuple(sorted(reasons)), policy)


def frag_lower_bound(ctx: Context, units: int) -> int:
    """No placement of ``units`` units scores lower (see objective.fragmentation)."""
    return units * LOSS_BOUND_PER_UNIT


def plan(state: ClusterState, pod: PodRequest, config: PlannerConfig = PlannerConfig(),
         pending: Sequence[PodRequest] = (), nodes: Sequence[str] | None = None,
         workload: Workload | None = None) -> Plan:
    """Plan ``pod`` (and, in batch mode, the ``pending`` pods) on ``state``. See DESIGN §4.

    ``workload``: the workload estimate (overrides ``config.workload``; e.g. the snapshot of an
    :class:`~solver.planner.workload.OnlineWorkload`). ``nodes``: the candidates (all when None),
    in the order ``config.tie == "order"`` breaks ties by.

    The cyclic garbage collector is paused during the call (a full collection over the planner's
    caches costs tens of milliseconds; the planner itself creates no reference cycles worth
    collecting), and resumed afterwards if it was on.
    """
    if workload is not None and workload is not config.workload:
        config = replace(config, workload=workload)
    was = gc.isenabled()
    gc.disable()
    try:
        out = _plan(state, pod, config, pending, nodes)
        why = None if out.placements[0].placed else cluster_too_small(state, pod)
        return out if why is None else replace(out, reasons=tuple((n, why) for n, _ in out.reasons))
    finally:
        if was:
            gc.enable()


def _plan(state: ClusterState, pod: PodRequest, config: PlannerConfig, pending: Sequence[PodRequest],
          nodes: Sequence[str] | None) -> Plan:
    t0 = time.perf_counter()
    deadline = t0 + config.time_budget_ms / 1000.0
    pending = unique_pending(pod, pending)
    names, reasons = candidate_nodes(state, nodes, config.tie)
    if not pod.wants_gpu:
        why = "pod requests no GPU (no nvidia.com/gpu, gpumem or gpucores)"
        return not_placed(pod, pending, reasons + [(n, why) for n in names], config.policy, config, t0)
    if config.policy != "dynamig":
        from solver.baselines import run_baseline

        out = run_baseline(state, pod, config, pending, names, reasons, t0)
        return checked(state, out, [pod, *pending], config)
    ctx = context_for(config, config.layouts_any or state.layouts_any)
    ctx.trim()
    if pending or config.engine == "cpsat":
        from .batch import solve_batch  # imports OR-Tools once; that one-time cost is not budgeted

        t1 = time.perf_counter()
        if t1 - t0 > 0.05:
            t0, deadline = t1, t1 + config.time_budget_ms / 1000.0
        out = solve_batch(ctx, state, pod, pending, names, reasons, t0, deadline)
        return checked(state, out, [pod, *pending], config)
    got = solve_single(ctx, state, pod, names, deadline)
    reasons = reasons + got.reasons
    if got.best is None:
        return not_placed(pod, pending, reasons, config.policy, config, t0)
    ws = Workspace()
    placement = place_result(ws, ctx, pod, gpu_containers(pod), got.best)
    wall = (time.perf_counter() - t0) * 1000
    status = "optimal" if got.complete else ("fallback" if got.fallback else "feasible")
    comps = dict(zip(COMPONENTS, got.best.comps, strict=True))
    lower = {"reconfigurations": 0, "template_order": 0, "policy": 0, "waste": 0,
             "fragmentation": frag_lower_bound(ctx, pod.units)}
    stages = []
    for i, name in enumerate(config.objective):
        if name == "placed":
            value = bound = 1.0
            st = "optimal"
        else:
            value = float(comps[name])
            bound = value if got.complete else float(min(lower[name], comps[name]))
            st = status if not got.complete else "optimal"
        stages.append(StageResult(name, value, bound, st, wall if i == 0 else 0.0))
    out = Plan((placement,), ws.layout_changes(), tuple(stages), status, wall, tuple(sorted(reasons)),
               config.policy)
    return checked(state, out, [pod], config)
