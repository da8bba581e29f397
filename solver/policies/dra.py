"""``dra-firstfit``: NVIDIA's DRA driver with the DynamicMIG feature gate, as behaviour.

The driver publishes every (MIG profile, placement) of every GPU as a device in the node's
ResourceSlice, with shared counters for the memory and compute slices; the scheduler's DRA
allocator takes the **first published device** whose attributes satisfy the claim (memory ≥
request, compute share ≥ gpucores) and whose counters are free. There is no scoring: nodes are
tried in order (the seeded node order) and the first node that fits wins; GPUs in index order;
profiles in NVML profile-ID order (1g, 2g, 3g, 4g, 7g, then the other memory variants), placements
by start. Media (``+me``) profiles are not published for plain requests.

The instance is created when the claim is prepared and destroyed when it is released, so every MIG
allocation is a layout change of that GPU (incremental: held instances are untouched; instances
left free by finished pods are gone). hami-core GPUs (a mixed cluster) are outside DRA MIG: there
units take the first GPU in index order that fits, as the other baselines do.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

from models.catalog import GpuModel, MigProfile
from models.layouts import Slot, is_valid
from models.plan import Plan, PodPlacement, UnitAssignment
from models.requests import ContainerRequest, PodRequest, profile_serves
from models.types import ClusterState, NodeMode
from models.validate import validate
from solver.baselines.common import WGpu, fit_containers, fit_shares, mig_assignment, run_greedy
from solver.planner import PlannerConfig, PlannerError
from solver.planner.context import Context
from solver.planner.single import candidate_nodes

NAME = "dra-firstfit"

__all__ = ["NAME", "device_order", "plan_dra"]


def device_order(m: GpuModel) -> list[MigProfile]:
    """Published profile order: for each compute size the smallest-memory profile (NVML's base
    profiles, IDs 0..4), then the remaining non-media variants, each group by compute slices."""
    plain = [p for p in m.profiles if not p.media]
    base: dict[int, MigProfile] = {}
    for p in sorted(plain, key=lambda p: (p.compute_slices, p.memory_slices, p.name)):
        base.setdefault(p.compute_slices, p)
    first = sorted(base.values(), key=lambda p: p.compute_slices)
    rest = sorted((p for p in plain if p not in first), key=lambda p: (p.compute_slices, p.memory_slices, p.name))
    return first + rest


def _pick(ctx: Context, pod: PodRequest, c: ContainerRequest, u: int, node: str,
          gpus: list[WGpu]) -> UnitAssignment | None:
    for w in sorted(gpus, key=lambda w: w.gpu.index):
        if w.gpu.mode is not NodeMode.MIG or not w.gpu.gpu_model.mig_capable:
            continue
        m = w.gpu.gpu_model
        held = [s for s in w.layout if s in w.held]
        for p in device_order(m):
            if not profile_serves(m, p, c):
                continue
            for start in sorted(p.starts):
                slot = Slot(p.name, start)
                if is_valid(m, [*held, slot]):
                    w.layout = [*held, slot]  # free leftovers were destroyed at release
                    w.changed = True
                    w.incremental = True
                    w.template_index = None
                    return mig_assignment(ctx, pod, c, u, node, w, slot)
    return None


def _shares_first_fit(pod: PodRequest, c: ContainerRequest, node: str,
                      gpus: list[WGpu]) -> list[UnitAssignment] | None:
    return fit_shares(pod, c, node, sorted(gpus, key=lambda w: w.gpu.index))


def _fit(ctx: Context, pod: PodRequest, node: str, gpus: list[WGpu]) -> list[UnitAssignment] | None:
    return fit_containers(ctx, pod, node, gpus, _pick, _shares_first_fit)


def _first_node(pod: PodRequest, name: str, before: list[WGpu], units: list[UnitAssignment]) -> tuple[object, ...]:
    return (name,)


def plan_dra(state: ClusterState, pod: PodRequest, config: PlannerConfig,
             nodes: Sequence[str] | None = None) -> Plan:
    """Plan one pod the DRA way; the plan is checked by :func:`models.validate.validate`.

    ``config`` gives the templates (only to learn which models are MIG-capable there) and the
    objective levels reported; its ``policy`` is ignored.
    """
    t0 = time.perf_counter()
    names, reasons = candidate_nodes(state, nodes)
    cfg = replace(config, policy="hami-v210")  # a greedy baseline config; the name is set below
    if not pod.wants_gpu:
        why = "pod requests no GPU (no nvidia.com/gpu, gpumem or gpucores)"
        every = tuple(sorted(reasons + [(n, why) for n in names]))
        return Plan((PodPlacement(pod.key, False),), (), (), "infeasible", 0.0, every, NAME)
    out = run_greedy(state, pod, cfg, (), names, reasons, t0, _fit, _first_node)
    renamed = tuple((n, r.replace("hami-v210:", f"{NAME}:")) for n, r in out.reasons)
    out = replace(out, policy=NAME, reasons=renamed)
    problems = validate(state, out, {pod.key: pod}, cfg.templates)
    if problems:
        raise PlannerError(f"{NAME} produced an invalid plan: " + "; ".join(str(v) for v in problems[:5]))
    return out
