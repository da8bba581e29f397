"""``hami-v210``: HAMi v2.10 reservation-first dynamic MIG (``selectMigCandidate``), as behaviour.

No templates: per unit, GPUs in GPU-policy order; on each, the **smallest allowed profile (by
memory, then slices) that serves the request and has a free legal placement**, at HAMi's preferred
start (``orderedMigPlacements``: 1g and 3g at the highest legal start, other profiles at the lowest).
The allowed profiles are the distinct profiles of the model's templates (HAMi's
``migProfileAllowlist``). Instances are created one by one, so a busy GPU grows: the plan records
an *incremental* layout change (held instances untouched; free instances that overlap the new one
are destroyed, as v2.10's reconciler destroys the instances of finished pods). A free instance that
already sits at the chosen placement is reused. hami-core units as in ``hami-legacy``.

Realising an incremental change needs per-instance NVML create/destroy (v2.10's plugin); dynamig's
device plugin applies whole layouts with mig-parted on idle GPUs only, so this policy is for
what-if studies.
"""

from __future__ import annotations

from models.catalog import MigProfile
from models.layouts import Slot, is_valid
from models.plan import UnitAssignment
from models.requests import ContainerRequest, PodRequest, profile_serves
from models.types import NodeMode
from solver.planner.context import Context

from .common import WGpu, fit_containers, fit_shares_in_policy_order, mig_assignment, ordered


def allowlist(ctx: Context, model_name: str) -> list[MigProfile]:
    mi = ctx.model_info(model_name)
    if mi is None:
        return []
    m = mi.gpu_model
    names = {s.profile for o in mi.options for s in o.layout}
    return sorted((m.profile(n) for n in names), key=lambda p: (p.memory_mib, p.memory_slices, p.name))


def preferred_starts(p: MigProfile) -> list[int]:
    high = p.klass in ("1g", "3g")
    return sorted(p.starts, reverse=high)


def _candidate(w: WGpu, p: MigProfile) -> Slot | None:
    m = w.gpu.gpu_model
    held = [s for s in w.layout if s in w.held]
    for start in preferred_starts(p):
        slot = Slot(p.name, start)
        if slot in w.layout and slot not in w.held:
            return slot
        if is_valid(m, [*held, slot]):
            return slot
    return None


def _create(w: WGpu, slot: Slot) -> None:
    if slot in w.layout:
        return
    m = w.gpu.gpu_model
    layout = [s for s in w.layout if s in w.held] + [slot]
    for s in sorted(x for x in w.layout if x not in w.held):  # keep free instances that still fit
        if is_valid(m, [*layout, s]):
            layout.append(s)
    w.layout = layout
    w.changed = True
    w.incremental = True
    w.template_index = None


def _pick(ctx: Context, pod: PodRequest, c: ContainerRequest, u: int, node: str,
          gpus: list[WGpu]) -> UnitAssignment | None:
    for w in ordered(gpus, pod.gpu_policy):
        if w.gpu.mode is not NodeMode.MIG or not w.gpu.gpu_model.mig_capable:
            continue
        m = w.gpu.gpu_model
        for p in allowlist(ctx, m.name):
            if not profile_serves(m, p, c):
                continue
            slot = _candidate(w, p)
            if slot is None:
                continue
            _create(w, slot)
            return mig_assignment(ctx, pod, c, u, node, w, slot)
    return None


def fit(ctx: Context, pod: PodRequest, node: str, gpus: list[WGpu]) -> list[UnitAssignment] | None:
    return fit_containers(ctx, pod, node, gpus, _pick, fit_shares_in_policy_order)
