"""Plans: what the planner decided (per unit: node, GPU, instance or share; per GPU: new layouts),
and applying a plan to a snapshot as a pure function.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from .layouts import Layout, Slot
from .requests import PodRequest, holder_id
from .types import ClusterState, Gpu, HostUsage, MigInstance, Node, ShareUsage, UnitKind


@dataclass(frozen=True)
class UnitAssignment:
    """One unit of one container, placed."""

    pod: str  # namespace/name
    container: str
    container_index: int
    unit: int
    node: str
    gpu: str  # GPU UUID
    gpu_index: int
    kind: UnitKind
    memory_mib: int  # granted: instance memory (mig) or share memory
    cores: int  # granted: instance compute share (mig) or requested cores
    slot: Slot | None = None  # mig only
    reconfigure: bool = False  # the GPU is re-partitioned for this plan
    template_index: int | None = None  # geometry index of the GPU's (new) layout, if a template

    @property
    def holder(self) -> str:
        return holder_id(self.pod, self.container_index, self.unit)


@dataclass(frozen=True)
class LayoutChange:
    """Re-partition an idle MIG GPU to ``layout``.

    ``incremental`` (HAMi v2.10 style): instead of re-partitioning the whole GPU, create and destroy
    individual *free* instances so that the GPU ends with ``layout``; every held instance stays
    untouched (it must be in ``layout``), so the GPU may be busy. Such a layout is a set of
    per-placement instances, not a template. Realising it needs per-instance NVML create/destroy,
    not a whole-GPU ``mig-parted apply``.
    """

    node: str
    gpu: str
    layout: Layout
    template_index: int | None = None
    incremental: bool = False


@dataclass(frozen=True)
class PodPlacement:
    pod: str
    placed: bool
    node: str | None = None
    units: tuple[UnitAssignment, ...] = ()


@dataclass(frozen=True)
class StageResult:
    name: str
    value: float
    bound: float
    status: str
    wall_ms: float = 0.0


@dataclass(frozen=True)
class Plan:
    """The planner's answer. ``placements[0]`` is the pod asked about (others: batch lookahead)."""

    placements: tuple[PodPlacement, ...]
    layout_changes: tuple[LayoutChange, ...] = ()
    stages: tuple[StageResult, ...] = ()
    status: str = "optimal"  # optimal | feasible | fallback | infeasible
    solve_ms: float = 0.0
    reasons: tuple[tuple[str, str], ...] = ()  # (node, why the pod cannot go there)
    policy: str = "dynamig"

    @property
    def placed(self) -> bool:
        return bool(self.placements) and self.placements[0].placed

    @property
    def primary(self) -> PodPlacement | None:
        return self.placements[0] if self.placements else None

    def units(self) -> Iterable[UnitAssignment]:
        for p in self.placements:
            yield from p.units


def apply_plan(state: ClusterState, plan: Plan, requests: Mapping[str, PodRequest] | None = None) -> ClusterState:
    """The state after the plan: new layouts first (fresh free instances), then every unit held;
    with ``requests``, each placed pod's host CPU and memory are taken on its node too.

    Pure and trusting: run :func:`models.validate.validate` first; this does not re-check.
    """
    changes = {(c.node, c.gpu): c for c in plan.layout_changes}
    by_gpu: dict[tuple[str, str], list[UnitAssignment]] = {}
    for u in plan.units():
        by_gpu.setdefault((u.node, u.gpu), []).append(u)
    host: dict[str, list[HostUsage]] = {}
    for pl in plan.placements:
        req = requests.get(pl.pod) if requests is not None else None
        if pl.placed and pl.node is not None and req is not None and (req.cpu_milli or req.host_memory_mib):
            host.setdefault(pl.node, []).append(HostUsage(pl.pod, req.cpu_milli, req.host_memory_mib))
    touched_nodes = {n for n, _ in changes} | {n for n, _ in by_gpu} | set(host)
    # Only the touched nodes are rebuilt (O(touched), the index shared): at 1,000 nodes a plan for
    # one pod no longer walks every node (the lookahead applies up to 63 of them per filter).
    new: dict[str, Node] = {}
    for name in touched_nodes:
        if not state.has_node(name):
            continue  # trusting: a unit on an unknown node is dropped, as before
        node = state.node(name)
        gpus: list[Gpu] = []
        for gpu in node.gpus:
            key = (node.name, gpu.uuid)
            if key in changes:
                ch = changes[key]
                gpu = _grow(gpu, ch.layout) if ch.incremental else gpu.with_layout(ch.layout)
            units = by_gpu.get(key, [])
            if units:
                gpu = _hold(gpu, units)
            gpus.append(gpu)
        new[name] = replace(node, gpus=tuple(gpus), host=node.host + tuple(host.get(node.name, ())))
    return state.with_replaced(new)


def _grow(gpu: Gpu, layout: Layout) -> Gpu:
    """An incremental change: instances kept in ``layout`` stay as they are (holder, UUID); the
    others go; new slots come in free."""
    old = {i.slot: i for i in gpu.instances}
    return replace(gpu, instances=tuple(old.get(s) or MigInstance(s) for s in layout))


def _hold(gpu: Gpu, units: list[UnitAssignment]) -> Gpu:
    mig = {u.slot: u.holder for u in units if u.kind is UnitKind.MIG and u.slot is not None}
    shares = tuple(ShareUsage(u.holder, u.memory_mib, u.cores) for u in units if u.kind is UnitKind.SHARE)
    instances = tuple(
        MigInstance(i.slot, mig[i.slot], i.uuid) if i.slot in mig else i for i in gpu.instances
    )
    return replace(gpu, instances=instances, shares=gpu.shares + shares)


def release_pod(state: ClusterState, pod_key: str) -> ClusterState:
    """The state after a pod ends: its instances become free (layout kept), its shares and host
    requests go."""
    prefix = pod_key + "/"
    nodes = []
    for node in state.nodes:
        changed = False
        if any(h.pod == pod_key for h in node.host):
            node = replace(node, host=tuple(h for h in node.host if h.pod != pod_key))
            changed = True
        gpus = []
        for g in node.gpus:
            if any(i.holder and i.holder.startswith(prefix) for i in g.instances) or any(
                s.holder.startswith(prefix) for s in g.shares
            ):
                changed = True
                g = replace(
                    g,
                    instances=tuple(
                        MigInstance(i.slot, None, i.uuid) if i.holder and i.holder.startswith(prefix) else i
                        for i in g.instances
                    ),
                    shares=tuple(s for s in g.shares if not s.holder.startswith(prefix)),
                )
            gpus.append(g)
        nodes.append(replace(node, gpus=tuple(gpus)) if changed else node)
    return state.with_nodes(tuple(nodes))
