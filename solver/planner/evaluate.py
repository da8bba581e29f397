"""The objective of any plan, computed from the plan and the state alone (solver-independent).

The planner reports these values per stage; tests compare them with brute force; baselines are
scored with the same yardstick.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from models.plan import Plan, apply_plan
from models.relayout import may_change_layout
from models.requests import PodRequest, mig_unit_memory
from models.types import ClusterState, UnitKind

from .config import PlannerConfig
from .context import COMPONENTS, Context, context_for, gpu_class_key
from .objective import fragmentation, policy, reconfigurations, template_order, waste
from .objective.placed import weights as placed_weights
from .shapes import gpu_containers
from .views import node_view

__all__ = ["components", "evaluate", "placed_weights"]


def components(ctx: Context, state: ClusterState, plan: Plan, requests: Mapping[str, PodRequest]
               ) -> dict[str, int]:
    after = apply_plan(state, plan)
    reconf = 0
    template = 0
    changed = {(ch.node, ch.gpu) for ch in plan.layout_changes}
    for ch in plan.layout_changes:
        g = state.gpu(ch.node, ch.gpu)
        mi = ctx.model_info(g.model)
        reconf += reconfigurations.change(ch.incremental, may_change_layout(g))
        if mi is not None and not ch.incremental:
            held = [(u.slot.profile, 1) for u in plan.units() if u.gpu == ch.gpu and u.slot is not None]
            template += template_order.pattern(0, next((o.order(held) for o in mi.options if o.layout == ch.layout),
                                                       0))
    kept: dict[tuple[str, str], list[tuple[str, int]]] = {}
    for u in plan.units():
        if u.slot is not None and (u.node, u.gpu) not in changed:
            kept.setdefault((u.node, u.gpu), []).append((u.slot.profile, 1))
    for (node, uuid), held in sorted(kept.items()):
        g = state.gpu(node, uuid)
        mi = ctx.model_info(g.model)
        if mi is not None:
            layout = Counter(i.slot.profile for i in g.instances)
            template += template_order.pattern(-1, template_order.keep_order(mi.options, layout,
                                                                             may_change_layout(g), held))
    touched = {(c.node, c.gpu) for c in plan.layout_changes} | {(u.node, u.gpu) for u in plan.units()}
    frag = 0
    for node, uuid in sorted(touched):
        before, now = state.gpu(node, uuid), after.gpu(node, uuid)
        frag += fragmentation.gpu_value(ctx, now) - fragmentation.gpu_value(ctx, before)
    pol = 0
    wasted = 0
    host = bool(ctx.workload.cpu_per_gpu_milli or ctx.workload.mem_per_gpu_milli)
    for pl in plan.placements:
        if not pl.placed or pl.node is None:
            continue
        pod = requests[pl.pod]
        view = node_view(ctx, state.node(pl.node))
        pol += policy.node(view.usage, pod.node_policy)
        if host:
            frag += fragmentation.node(ctx, view.node, view.free_gpu(ctx), gpu_containers(pod), pod.cpu_milli,
                                       pod.host_memory_mib)
        conts = {c.index: c for c in pod.containers}
        for u in pl.units:
            g = state.gpu(u.node, u.gpu)
            info = ctx.class_info(gpu_class_key(g), g)
            c = conts[u.container_index]
            pol += policy.unit(info.usage, pod.gpu_policy)
            frag += fragmentation.unit(ctx, info, c)
            if u.kind is UnitKind.MIG:
                wasted += waste.unit(u.memory_mib, mig_unit_memory(c, g.gpu_model))
    return dict(zip(COMPONENTS, (reconf, template, frag, pol, wasted), strict=True))


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
