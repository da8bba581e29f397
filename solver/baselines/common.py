"""Shared machinery of the greedy baselines: a mutable working copy of the GPUs a plan touches,
sequential per-pod placement (the pod, then the pending pods in order), HAMi-style node choice by
node policy, and the final plan with the planner's own yardstick (``solver.planner.evaluate``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from models.catalog import GpuModel
from models.layouts import Slot, make_layout
from models.plan import LayoutChange, Plan, PodPlacement, StageResult, UnitAssignment
from models.requests import ContainerRequest, PodRequest, gpu_allowed, share_fit_problem
from models.types import ClusterState, Gpu, Node, NodeMode, UnitKind
from solver.planner.config import PlannerConfig
from solver.planner.context import Context, context_for
from solver.planner.costs import PERMILLE
from solver.planner.evaluate import evaluate, placed_weights
from solver.planner.objective.fragmentation import LOSS_BOUND_PER_UNIT


@dataclass
class WGpu:
    """A GPU as the plan under construction sees it."""

    gpu: Gpu
    layout: list[Slot]
    held: set[Slot]
    changed: bool = False
    incremental: bool = False
    template_index: int | None = None
    shares: list[tuple[int, int]] = field(default_factory=list)  # planned hami-core units (MiB, cores)

    @classmethod
    def of(cls, g: Gpu) -> WGpu:
        return cls(g, [i.slot for i in g.instances], {i.slot for i in g.instances if not i.free})

    def copy(self) -> WGpu:
        return WGpu(self.gpu, list(self.layout), set(self.held), self.changed, self.incremental,
                    self.template_index, list(self.shares))

    @property
    def idle(self) -> bool:
        return not self.held and not self.gpu.shares and not self.shares

    @property
    def free(self) -> list[Slot]:
        return sorted(s for s in self.layout if s not in self.held)

    def usage(self) -> int:
        g = self.gpu
        if g.mode is NodeMode.MIG:
            m = g.gpu_model
            used = sum(m.profile(s.profile).memory_slices for s in self.held)
            return used * PERMILLE // m.memory_slices
        used_mem = g.used_memory_mib + sum(m for m, _ in self.shares)
        return min(PERMILLE, used_mem * PERMILLE // g.memory_mib) if g.memory_mib else PERMILLE

    def fits_share(self, mem: int, cores: int) -> str | None:
        return share_fit_problem(self.gpu, mem, cores, tuple(self.shares))


#: A baseline's per-node rule: place every unit of ``pod`` on the node's working GPUs (mutating them)
#: and return the units, or None when the pod does not fit.
FitFn = Callable[[Context, PodRequest, str, list[WGpu]], list[UnitAssignment] | None]


def ordered(gpus: list[WGpu], gpu_policy: str) -> list[WGpu]:
    """GPUs in HAMi's try order: spread = least used first, binpack = most used first."""
    sign = -1 if gpu_policy == "binpack" else 1
    return sorted(gpus, key=lambda w: (sign * w.usage(), w.gpu.index))


def mig_assignment(ctx: Context, pod: PodRequest, c: ContainerRequest, unit: int, node: str, w: WGpu,
                   slot: Slot) -> UnitAssignment:
    m: GpuModel = w.gpu.gpu_model
    p = m.profile(slot.profile)
    w.held.add(slot)
    tpl = w.template_index
    if not w.changed:
        mi = ctx.model_info(m.name)
        tpl = mi.template_of.get(make_layout(w.layout)) if mi is not None else None
    return UnitAssignment(pod.key, c.name, c.index, unit, node, w.gpu.uuid, w.gpu.index, UnitKind.MIG,
                          p.memory_mib, m.core_percent(p), slot, w.changed, tpl)


def share_assignment(pod: PodRequest, c: ContainerRequest, unit: int, node: str, w: WGpu) -> UnitAssignment:
    mem = c.memory_for(w.gpu.memory_mib)
    w.shares.append((mem, c.cores))
    return UnitAssignment(pod.key, c.name, c.index, unit, node, w.gpu.uuid, w.gpu.index, UnitKind.SHARE, mem,
                          c.cores)


def fit_shares(pod: PodRequest, c: ContainerRequest, node: str, gpus: list[WGpu]) -> list[UnitAssignment] | None:
    """hami-core units of one container, each on a distinct GPU, first fit in the given order."""
    out: list[UnitAssignment] = []
    used: set[str] = set()
    for u in range(c.count):
        for w in gpus:
            if w.gpu.uuid in used or w.gpu.mode is not NodeMode.HAMI_CORE:
                continue
            if w.fits_share(c.memory_for(w.gpu.memory_mib), c.cores) is None:
                used.add(w.gpu.uuid)
                out.append(share_assignment(pod, c, u, node, w))
                break
        else:
            return None
    return out


#: Picks (and reserves in ``gpus``) the instance for one MIG unit, or None if none serves.
MigUnitPicker = Callable[[Context, PodRequest, ContainerRequest, int, str, list[WGpu]], UnitAssignment | None]
#: Places every hami-core unit of one container, or None.
ShareFitter = Callable[[PodRequest, ContainerRequest, str, list[WGpu]], list[UnitAssignment] | None]


def fit_containers(ctx: Context, pod: PodRequest, node: str, gpus: list[WGpu], pick_mig: MigUnitPicker,
                   fit_share: ShareFitter) -> list[UnitAssignment] | None:
    """The container loop every baseline shares: hami-core containers through ``fit_share``, MIG
    units one at a time through ``pick_mig``; None as soon as one unit cannot be placed."""
    units: list[UnitAssignment] = []
    for c in pod.containers:
        if c.count == 0:
            continue
        if gpus and gpus[0].gpu.mode is NodeMode.HAMI_CORE:
            got = fit_share(pod, c, node, gpus)
            if got is None:
                return None
            units.extend(got)
            continue
        for u in range(c.count):
            open_gpus = [w for w in gpus if len(w.held) < w.gpu.split]  # deviceSplitCount (HAMi)
            unit = pick_mig(ctx, pod, c, u, node, open_gpus)
            if unit is None:
                return None
            units.append(unit)
    return units


def fit_shares_in_policy_order(pod: PodRequest, c: ContainerRequest, node: str,
                               gpus: list[WGpu]) -> list[UnitAssignment] | None:
    return fit_shares(pod, c, node, ordered(gpus, pod.gpu_policy))


def node_usage(gpus: list[WGpu]) -> int:
    return sum(w.usage() for w in gpus) // len(gpus) if gpus else PERMILLE


class Greedy:
    """Sequential placement of pods with one baseline rule."""

    def __init__(self, state: ClusterState, config: PlannerConfig, fit: FitFn,
                 node_key: Callable[[PodRequest, str, list[WGpu], list[UnitAssignment]], tuple[object, ...]]
                 | None = None) -> None:
        self.state = state
        self.config = config
        self.ctx = context_for(config, config.layouts_any or state.layouts_any)
        self.fit = fit
        self.node_key = node_key or self._hami_node_key
        self.work: dict[str, list[WGpu]] = {}
        self.host_taken: dict[str, tuple[int, int]] = {}  # host CPU/memory planned per node

    @staticmethod
    def _hami_node_key(pod: PodRequest, name: str, before: list[WGpu], units: list[UnitAssignment]
                       ) -> tuple[object, ...]:
        u = node_usage(before)
        return (-u if pod.node_policy == "binpack" else u, name)

    def gpus(self, node: Node) -> list[WGpu]:
        w = self.work.get(node.name)
        return w if w is not None else [WGpu.of(g) for g in sorted(node.gpus, key=lambda g: g.index)]

    def place(self, pod: PodRequest, names: list[str], reasons: list[tuple[str, str]] | None) -> PodPlacement:
        best: tuple[tuple[object, ...], str, list[WGpu], list[UnitAssignment]] | None = None
        for name in names:
            node = self.state.node(name)
            cpu, mem = self.host_taken.get(name, (0, 0))
            host_why = node.host_fit_problem(cpu + pod.cpu_milli, mem + pod.host_memory_mib)
            if host_why is not None:
                if reasons is not None:
                    reasons.append((name, host_why))
                continue
            before = self.gpus(node)
            trial = [w.copy() for w in before]
            allowed = [w for w in trial if gpu_allowed(pod, w.gpu) is None]
            units = self.fit(self.ctx, pod, name, allowed) if allowed else None
            if units is None:
                if reasons is not None:
                    reasons.append((name, self._why(pod, node, allowed)))
                continue
            key = self.node_key(pod, name, before, units)
            if best is None or key < best[0]:
                best = (key, name, trial, units)
        if best is None:
            return PodPlacement(pod.key, False)
        _, name, trial, units = best
        self.work[name] = trial
        cpu, mem = self.host_taken.get(name, (0, 0))
        self.host_taken[name] = (cpu + pod.cpu_milli, mem + pod.host_memory_mib)
        units.sort(key=lambda u: (u.container_index, u.unit))
        return PodPlacement(pod.key, True, name, tuple(units))

    def _why(self, pod: PodRequest, node: Node, allowed: list[WGpu]) -> str:
        if not node.gpus:
            return "node has no GPUs"
        if not allowed:
            whys = sorted({gpu_allowed(pod, g) or "" for g in node.gpus})
            if pod.modes and all(g.mode not in pod.modes for g in node.gpus):
                want = ",".join(sorted(m.value for m in pod.modes))
                return f"no GPU matches vgpu-mode {want} (node is {node.mode.value})"
            return "; ".join(whys)
        return f"{self.config.policy}: no GPU of the node fits the pod's units"

    def changes(self) -> tuple[LayoutChange, ...]:
        out = []
        for name in sorted(self.work):
            for w in self.work[name]:
                if w.changed:
                    out.append(LayoutChange(name, w.gpu.uuid, make_layout(w.layout), w.template_index,
                                            w.incremental))
        return tuple(out)


def run_greedy(state: ClusterState, pod: PodRequest, config: PlannerConfig, pending: Sequence[PodRequest],
               names: list[str], reasons: list[tuple[str, str]], t0: float, fit: FitFn,
               node_key: Callable[[PodRequest, str, list[WGpu], list[UnitAssignment]], tuple[object, ...]]
               | None = None) -> Plan:
    g = Greedy(state, config, fit, node_key)
    why: list[tuple[str, str]] = []
    placements = [g.place(pod, names, why)]
    for p in pending:
        placements.append(g.place(p, names, None) if p.wants_gpu else PodPlacement(p.key, False))
    changes = {c.gpu: c for c in g.changes()}
    # a GPU changed by a later unit (v2.10 grows busy GPUs) is changed for the earlier units on it too
    placements = [replace(p, units=tuple(
        replace(u, reconfigure=True, template_index=changes[u.gpu].template_index)
        if u.slot is not None and u.gpu in changes else u for u in p.units)) for p in placements]
    plan = Plan(tuple(placements), g.changes(), (), "feasible", 0.0, (), config.policy)
    requests = {p.key: p for p in (pod, *pending)}
    values = evaluate(state, plan, requests, config) if placements[0].placed or pending else {}
    wall = (time.perf_counter() - t0) * 1000
    status = "feasible" if placements[0].placed else "infeasible"
    # a heuristic proves nothing: report the trivial bounds
    units = sum(p.units for p in (pod, *pending))
    trivial = {"placed": float(sum(placed_weights([pod, *pending]).values())),
               "fragmentation": float(units * LOSS_BOUND_PER_UNIT)}
    stages = tuple(StageResult(o, float(values.get(o, 0)), trivial.get(o, 0.0), status, wall if i == 0 else 0.0)
                   for i, o in enumerate(config.objective))
    all_reasons = tuple(sorted(reasons + why))
    return Plan(tuple(placements), plan.layout_changes, stages, status, wall, all_reasons, config.policy)
