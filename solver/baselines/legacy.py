"""``hami-legacy``: HAMi ≤ v2.9 template (geometry) dynamic MIG, reproduced as behaviour.

Per unit, GPUs are tried in GPU-policy order (spread: least used first; binpack: most used first);
on a MIG GPU (HAMi ``CustomFilterRule`` / ``AddResourceUsage``):

* GPU with no instance in use (HAMi's ``migNeedsReset``): take the **first geometry in config order
  with an entry that serves the request**, its first serving entry, the lowest free slot of it; if
  the GPU already has that layout nothing changes;
* otherwise: the first free slot of the current geometry (entry order, then start) that serves.

Several units of one pod may take instances of the same GPU (HAMi revisits the GPU in MIG mode).
hami-core units: first GPU that fits (memory, cores, split, exclusivity), a container's units on
distinct GPUs. The node: among nodes that fit, the best by node policy (binpack: most used).

Differences from HAMi (its bugs are not reproduced):

* #1054: memory is compared with the *real* instance memory (catalog/NVML), not the template's
  nominal ``memory`` field, so a 5000 MiB request never lands on a 4864 MiB 1g.5gb;
* #1074: a request equal to the instance memory fits (``>=``);
* #2513: the slot is the flattened offset of the chosen entry (no double booking);
* #2403: ``nvidia.com/gpu: N`` on a node with fewer MIG GPUs than N is not rejected up front;
* ``gpucores`` is checked against the instance's compute share (HAMi ignores it for selection);
* the reset branch resets only GPUs with no held instance *and* no instance planned in this plan;
* geometries that the model's placement rules cannot realise are skipped (HAMi would fail apply);
* HAMi's node score (a weighted sum over devices) is approximated by the node's mean GPU usage.
"""

from __future__ import annotations

from models.layouts import Slot, make_layout
from models.plan import UnitAssignment
from models.requests import ContainerRequest, PodRequest, profile_serves
from models.types import NodeMode
from solver.planner.context import Context

from .common import WGpu, fit_containers, fit_shares_in_policy_order, mig_assignment, ordered


def _entry_order(ctx: Context, w: WGpu) -> dict[str, int]:
    """Profile -> position of its entry in the GPU's current geometry (flattened order)."""
    m = w.gpu.gpu_model
    group = ctx.config.templates.group_for(m)
    mi = ctx.model_info(m.name)
    if group is None or mi is None:
        return {}
    idx = mi.template_of.get(make_layout(w.layout))
    if idx is None:
        return {}
    return {e.name: i for i, e in enumerate(group.geometries[idx].entries)}


def _first_match(ctx: Context, w: WGpu, c: ContainerRequest) -> tuple[int, list[Slot], str] | None:
    """The first geometry (config order) with an entry that serves ``c``: (index, layout, profile)."""
    m = w.gpu.gpu_model
    group = ctx.config.templates.group_for(m)
    if group is None:
        return None
    for t in ctx.config.templates.template_layouts(m):
        for e in group.geometries[t.index].entries:
            if e.count > 0 and m.has_profile(e.name) and profile_serves(m, m.profile(e.name), c):
                return t.index, list(t.layout), e.name
    return None


def _pick(ctx: Context, pod: PodRequest, c: ContainerRequest, u: int, node: str,
          gpus: list[WGpu]) -> UnitAssignment | None:
    for w in ordered(gpus, pod.gpu_policy):
        if w.gpu.mode is not NodeMode.MIG:
            continue
        m = w.gpu.gpu_model
        if not m.mig_capable:
            continue
        if not w.held and not w.changed:  # HAMi's reset case
            first = _first_match(ctx, w, c)
            if first is None:
                continue
            idx, layout, prof = first
            if make_layout(layout) != make_layout(w.layout):
                w.layout = layout
                w.changed = True
                w.template_index = idx
            slot = min((s for s in w.layout if s.profile == prof and s not in w.held), key=lambda s: s.start)
            return mig_assignment(ctx, pod, c, u, node, w, slot)
        order = _entry_order(ctx, w)
        free = sorted(w.free, key=lambda s: (order.get(s.profile, 99), s.start))
        ok = [s for s in free if profile_serves(m, m.profile(s.profile), c)]
        if ok:
            return mig_assignment(ctx, pod, c, u, node, w, ok[0])
    return None


def fit(ctx: Context, pod: PodRequest, node: str, gpus: list[WGpu]) -> list[UnitAssignment] | None:
    return fit_containers(ctx, pod, node, gpus, _pick, fit_shares_in_policy_order)
