"""The objective of any plan, computed from the plan and the state alone (solver-independent).

The planner reports these values per stage; tests compare them with brute force; baselines are
scored with the same yardstick.
"""

from __future__ import annotations

from collections.abc import Mapping

from models.plan import Plan, apply_plan
from models.requests import PodRequest, mig_unit_memory
from models.types import ClusterState, Gpu, UnitKind

from .config import PlannerConfig
from .context import COMPONENTS, NODE_POLICY_MULT, Context, context_for, gpu_class_key
from .costs import PERMILLE
from .views import node_view


def placed_weights(pods: list[PodRequest]) -> dict[str, int]:
    """Batch weight of each pod: 1 + the rank of its priority among the distinct priorities."""
    levels = sorted({p.priority for p in pods})
    return {p.key: 1 + levels.index(p.priority) for p in pods}


def components(ctx: Context, state: ClusterState, plan: Plan, requests: Mapping[str, PodRequest]
               ) -> dict[str, int]:
    after = apply_plan(state, plan)
    reconf = len(plan.layout_changes)
    template = 0
    for ch in plan.layout_changes:
        g = state.gpu(ch.node, ch.gpu)
        mi = ctx.model_info(g.model)
        if mi is not None and not ch.incremental:
            held = [(u.slot.profile, 1) for u in plan.units() if u.gpu == ch.gpu and u.slot is not None]
            template += next((o.order(held) for o in mi.options if o.layout == ch.layout), 0)
    touched = {(c.node, c.gpu) for c in plan.layout_changes} | {(u.node, u.gpu) for u in plan.units()}
    frag = 0
    for node, uuid in sorted(touched):
        frag += _frag(ctx, after.gpu(node, uuid)) - _frag(ctx, state.gpu(node, uuid))
    policy = 0
    waste = 0
    for pl in plan.placements:
        if not pl.placed or pl.node is None:
            continue
        pod = requests[pl.pod]
        view = node_view(ctx, state.node(pl.node))
        node_term = PERMILLE - view.usage if pod.node_policy == "binpack" else view.usage
        policy += node_term * NODE_POLICY_MULT
        conts = {c.index: c for c in pod.containers}
        for u in pl.units:
            g = state.gpu(u.node, u.gpu)
            usage = ctx.class_info(gpu_class_key(g), g).usage
            policy += PERMILLE - usage if pod.gpu_policy == "binpack" else usage
            if u.kind is UnitKind.MIG:
                waste += u.memory_mib - mig_unit_memory(conts[u.container_index], g.gpu_model)
    return dict(zip(COMPONENTS, (reconf, template, frag, policy, waste), strict=True))


def _frag(ctx: Context, g: Gpu) -> int:
    return ctx.class_info(gpu_class_key(g), g).frag


def evaluate(state: ClusterState, plan: Plan, requests: Mapping[str, PodRequest],
             config: PlannerConfig | None = None) -> dict[str, int]:
    """Every objective level's value for ``plan`` (``placed``: the priority-weighted placed pods)."""
    config = config or PlannerConfig()
    ctx = context_for(config, config.layouts_any or state.layouts_any)
    out = components(ctx, state, plan, requests)
    pods = [requests[p.pod] for p in plan.placements if p.pod in requests]
    w = placed_weights(pods)
    out["placed"] = sum(w[p.pod] for p in plan.placements if p.placed and p.pod in w)
    return {k: out[k] for k in (*config.objective, *[c for c in COMPONENTS if c not in config.objective])}
