"""The FGD paper's policies (``random`` … ``fgd``, ``share-pricing``) as cluster-state policies.

The score math stays :mod:`solver.fgd`'s own (vectorised over nodes); what changes is the state
and the loop: the one simulator's :class:`models.ClusterState` (hami-core GPUs, host CPU and
memory) is the truth, and :class:`MilliView` is a derived copy of it in the FGD package's numpy
layout (free CPU, host memory and milli-GPU per GPU, per-class pod counts), kept in step
incrementally: a node is re-derived only when its :class:`models.types.Node` object changed
(nodes are frozen, so identity says it all), and its modification stamp moves only when the
derived row really differs -- FGD's per-spec score caches stay valid across calls.

The milli-GPU model on hami-core: a GPU's used milli is ``max(10 · Σ gpucores, memory used in
per-mille)``, 1000 when a unit holds it exclusively, every share slot is taken or it is unhealthy; a pod's unit is
``10 · max(gpucores, gpumem-percentage)`` milli (no memory request: 100 %). Openb shares arrive as
``gpumem-percentage = gpucores = ⌈milli / 10⌉``, so a run is exact on every trace whose shares are
multiples of 10 milli (all openb traces) and otherwise rounds each share up to the next 10.

Limits, each a clear ``ValueError``: only hami-core GPUs (a MIG instance is not a milli share);
one GPU container per pod; no absolute ``gpumem`` (MiB means a different milli on each model);
no GPU type or UUID constraints (the FGD model's per-model access is not carried over).
"""

from __future__ import annotations

import operator
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from models.plan import Plan, PodPlacement, UnitAssignment
from models.requests import PodRequest, pod_of_holder
from models.types import ClusterState, Gpu, Node, NodeMode, UnitKind
from models.validate import validate
from solver.fgd import cluster as fgd_cluster
from solver.fgd.policy import TIE_BREAKS, Policy, make_policy
from solver.fgd.workload import SimPod, TypicalPods, typical_pods
from solver.openb import MILLI_PER_GPU

__all__ = ["FGD_MODEL_POLICIES", "UNLIMITED", "MilliPlacer", "MilliView", "PolicyContext", "check_state",
           "sim_pod", "typical_of"]

#: The names of the policies this module runs (each is :mod:`solver.fgd`'s algorithm of that name).
FGD_MODEL_POLICIES: tuple[str, ...] = ("random", "dotprod", "clustering", "packing", "fgd-bestfit", "fgd",
                                       "share-pricing")
UNLIMITED = 1 << 60
"""Host CPU or memory of a node that does not state it: never the limit."""

BOOL = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class PolicyContext:
    """What an FGD-model policy needs beyond the cluster state: the trace's typical-pod
    distribution (FGD optimises against it) and the run's seeded RNG (every random choice, so a
    run is reproducible from its seed), and the tie-break rule for equal node scores."""

    typical: TypicalPods
    rng: np.random.Generator = field(compare=False)
    tie_break: str = "first"

    def __post_init__(self) -> None:
        if self.tie_break not in TIE_BREAKS:
            raise ValueError(f"tie_break must be one of {', '.join(TIE_BREAKS)}, got {self.tie_break!r}")


def sim_pod(pod: PodRequest, policy: str = "fgd") -> SimPod:
    """``pod`` in the FGD milli-GPU model (host CPU and memory from the request)."""
    where = f"pod {pod.key}: policy {policy}"
    if pod.use_types or pod.nouse_types or pod.use_uuids or pod.nouse_uuids:
        raise ValueError(f"{where} does not take GPU type or UUID constraints (the FGD milli-GPU model)")
    gpu = [c for c in pod.containers if c.count > 0]
    if not gpu:
        return SimPod(pod.key, pod.cpu_milli, pod.host_memory_mib)
    if len(gpu) > 1:
        raise ValueError(f"{where} places one GPU container per pod, got {len(gpu)}")
    c = gpu[0]
    if c.memory_mib is not None:
        raise ValueError(f"{where} needs gpumem as a percentage (gpumem-percentage), not {c.memory_mib} MiB")
    pct = 100 if c.memory_percent is None else c.memory_percent
    milli = min(MILLI_PER_GPU, 10 * max(pct, c.cores))
    if milli <= 0:
        raise ValueError(f"{where}: a GPU unit with neither memory nor cores")
    if milli < MILLI_PER_GPU and c.count > 1:
        raise ValueError(f"{where}: {c.count} shares of a GPU each; the FGD model has one share or whole GPUs")
    return SimPod(pod.key, pod.cpu_milli, pod.host_memory_mib, c.count, milli)


def typical_of(pods: Iterable[PodRequest], policy: str = "fgd") -> TypicalPods:
    """The typical-pod distribution (:func:`solver.fgd.workload.typical_pods`) of a trace's pods,
    before tuning, in the milli of :func:`sim_pod` -- what :func:`solver.fgd.runner.run_loaded`
    computes from the same trace."""
    return typical_pods(sim_pod(p, policy) for p in pods)


def check_state(state: ClusterState, policy: str = "fgd") -> None:
    """Raise ``ValueError`` unless every GPU of ``state`` is hami-core (one model per node)."""
    for n in state.nodes:
        for g in n.gpus:
            if g.mode is not NodeMode.HAMI_CORE:
                raise ValueError(f"policy {policy} (the FGD milli-GPU model) runs on hami-core GPUs; node {n.name} "
                                 f"GPU {g.index} is {g.mode.value}")
        if len({g.model for g in n.gpus}) > 1:
            raise ValueError(f"policy {policy}: node {n.name} mixes GPU models (the FGD model has one per node)")


def _gpu_used_milli(g: Gpu) -> int:
    if not g.health:
        return MILLI_PER_GPU  # an unhealthy GPU takes no unit
    if not g.shares:
        return 0
    if len(g.shares) >= g.split or any(s.cores >= 100 for s in g.shares):
        return MILLI_PER_GPU
    mem = -(-g.used_memory_mib * MILLI_PER_GPU // g.memory_mib) if g.memory_mib else MILLI_PER_GPU
    return min(MILLI_PER_GPU, max(10 * g.used_cores, mem))


class MilliView(fgd_cluster.ClusterState):
    """:mod:`solver.fgd`'s cluster arrays derived from a :class:`models.ClusterState`; index ``i``
    is ``state.nodes[i]`` (the seeded node order of the run). ``allowed``, when set, restricts
    the filter stage to those nodes (the caller's candidates)."""

    def __init__(self, state: ClusterState, policy: str = "fgd") -> None:
        check_state(state, policy)
        super().__init__([
            fgd_cluster.SimNode(n.name, UNLIMITED if n.cpu_milli is None else n.cpu_milli,
                                UNLIMITED if n.memory_mib is None else n.memory_mib, len(n.gpus),
                                n.gpus[0].model if n.gpus else "")
            for n in state.nodes])
        self.index = {n.name: i for i, n in enumerate(state.nodes)}
        # per node, its GPUs by index: UUID, index and memory (fixed within a run) for the plans
        self.gpu_objs: list[tuple[Gpu, ...]] = [tuple(sorted(n.gpus, key=lambda g: g.index)) for n in state.nodes]
        self._seen: list[Node | None] = [None] * self.size
        self.allowed: BOOL | None = None
        self.sync(state)

    def sync(self, state: ClusterState) -> int:
        """Re-derive the nodes whose object changed since the last sync; returns how many rows
        really changed (their stamps move, so score caches recompute them). Raises
        ``ValueError`` when the nodes themselves (names, order) are not this view's."""
        if len(state.nodes) != self.size:
            raise ValueError(f"the cluster has {len(state.nodes)} nodes, this run's view {self.size}")
        changed = 0
        seen = self._seen
        for i in np.flatnonzero(np.fromiter(map(operator.is_not, state.nodes, seen), dtype=np.bool_, count=self.size)):
            node = state.nodes[i]
            if node.name != self.names[i]:
                raise ValueError(f"node {i} is {node.name}, this run's view has {self.names[i]}")
            if self._derive(int(i), node):
                changed += 1
            seen[i] = node
        return changed

    def _derive(self, i: int, node: Node) -> bool:
        cpu = int(self.cpu_cap[i]) - node.cpu_used_milli
        mem = int(self.mem_cap[i]) - node.memory_used_mib
        free = [MILLI_PER_GPU - _gpu_used_milli(g) for g in sorted(node.gpus, key=lambda g: g.index)]
        units: dict[str, list[int]] = {}
        for g in node.gpus:
            for s in g.shares:
                units.setdefault(pod_of_holder(s.holder), []).append(s.cores)
        classes = np.zeros(fgd_cluster.MAX_CLASS + 1, dtype=np.int64)
        for cores in units.values():
            cls = 0 if len(cores) == 1 and cores[0] < 100 else len(cores)
            classes[min(cls, fgd_cluster.MAX_CLASS)] += 1
        row = self.gpu_free[i]
        k = len(free)
        same = (cpu == self.cpu_free[i] and mem == self.mem_free[i] and bool(np.array_equal(row[:k], free))
                and bool(np.array_equal(self.class_count[i], classes)))
        self.pods_on_node[i] = len(units.keys() | {h.pod for h in node.host})
        if same:
            return False
        self.cpu_free[i] = cpu
        self.mem_free[i] = mem
        row[:k] = free
        self.gpu_free_sum[i] = row.sum()
        self.gpu_max_free[i] = row.max() if row.size else 0
        self.full_free[i] = int((row[:k] == MILLI_PER_GPU).sum())
        self.class_count[i] = classes
        self.clock += 1
        self.stamp[i] = self.clock
        return True

    def forget(self, i: int) -> None:
        """Re-derive node ``i`` at the next :meth:`sync` (after a placement the caller may apply)."""
        self._seen[i] = None

    def feasible(self, pod: SimPod) -> BOOL:
        ok = super().feasible(pod)
        return ok if self.allowed is None else ok & self.allowed

    def feasible_one(self, node: int, pod: SimPod) -> bool:
        return super().feasible_one(node, pod) and (self.allowed is None or bool(self.allowed[node]))


class MilliPlacer:
    """One run's decision function for FGD-model policy ``name``: ``(state, pod, nodes) -> Plan``.

    Built for one run (the policy's caches, the run's RNG); the first call fixes the node order.
    The caller applies every placed plan (``models.plan.apply_plan``) before the next call; the
    view re-derives the placed node from the state it is given next, so a plan that was not
    applied leaves no trace. Every plan is checked by :func:`models.validate.validate`.
    """

    def __init__(self, name: str, context: PolicyContext) -> None:
        if name not in FGD_MODEL_POLICIES:
            raise ValueError(f"unknown FGD-model policy {name!r} (known: {', '.join(FGD_MODEL_POLICIES)})")
        self.name = name
        self.context = context
        self.view: MilliView | None = None
        self.policy: Policy | None = None

    def _ready(self, state: ClusterState) -> tuple[MilliView, Policy]:
        if self.view is None or self.policy is None:
            self.view = MilliView(state, self.name)
            self.policy = make_policy(self.name)
            self.policy.tie_break = self.context.tie_break
            self.policy.prepare(self.view, self.context.typical, self.context.rng)
        else:
            self.view.sync(state)
        return self.view, self.policy

    def __call__(self, state: ClusterState, pod: PodRequest, nodes: Sequence[str] | None = None) -> Plan:
        t0 = time.perf_counter()
        view, pol = self._ready(state)
        sp = sim_pod(pod, self.name)
        if nodes is not None:
            mask = np.zeros(view.size, dtype=np.bool_)
            for n in nodes:
                i = view.index.get(n)
                if i is not None:
                    mask[i] = True
            view.allowed = mask
        try:
            choice = pol.select(view, sp)
        finally:
            view.allowed = None
        if choice is None:
            pol.observe(view, sp, None)
            why = "no node passes the filter (host CPU/memory, free milli-GPU)"
            return Plan((PodPlacement(pod.key, False),), (), (), "infeasible",
                        (time.perf_counter() - t0) * 1000.0, (("*", why),), self.name)
        i, gpus = int(choice[0]), tuple(int(g) for g in choice[1])
        view.allocate(i, gpus, sp)  # validated against the view (solver.fgd's own check)
        view.forget(i)
        pol.observe(view, sp, (i, gpus))
        node = state.nodes[i]
        units: list[UnitAssignment] = []
        c = next((c for c in pod.containers if c.count > 0), None)
        if c is not None:
            for u, g in enumerate(gpus):
                gpu = view.gpu_objs[i][g]
                mem = c.memory_for(gpu.memory_mib)
                units.append(UnitAssignment(pod.key, c.name, c.index, u, node.name, gpu.uuid, gpu.index,
                                            UnitKind.SHARE, mem, c.cores))
        plan = Plan((PodPlacement(pod.key, True, node.name, tuple(units)),), (), (), "feasible",
                    (time.perf_counter() - t0) * 1000.0, (), self.name)
        problems = validate(state, plan, {pod.key: pod})
        if problems:
            raise ValueError(f"policy {self.name} produced an invalid plan for {pod.key}: "
                             + "; ".join(str(v) for v in problems[:5]))
        return plan
