"""One what-if run (the FGD protocol through a cluster-state policy of :mod:`solver.policies`)

Per run (README §7.2, RNG ``numpy.random.default_rng(seed)`` drawn in this order): shuffle and
tune the pods to ``tune_ratio ×`` the GPU capacity, permute the node order (nodes are renamed
``<rank>-<name>``, so the planner's name-order tie-breaking follows the seed), then one pod at a
time, no departures, no retries:

* ``arrived += demand`` (failed pods count as arrived);
* CPU-only pod: the ``LeastAllocated`` node with room for its CPU and memory (kube-scheduler's
  default; the extender does not place CPU-only pods), or failed -- except under the FGD paper's
  policies, which place CPU-only pods themselves (as in the paper), through the same placer;
* GPU pod: the nodes with room for its CPU and memory are the candidates of
  the policy's placer (``solver.plan`` for ``dynamig``) with ``nodes=candidates``; a placed plan is applied
  (``models.plan.apply_plan``) and the node's CPU and memory taken; otherwise the pod fails (the
  FGD paper's policies get no candidate list: their filter stage reads host CPU and memory from
  the state, as in the paper);
* host CPU and memory of every placed pod are in the :class:`models.ClusterState` the policy sees
  (the planner's stranding term reads them), and the planner's workload estimate is learned online
  from the arrived pods (:class:`solver.planner.OnlineWorkload`, the built-in prior until enough
  were seen; the cluster's CPU and GPU give the CPU pressure), as the extender would; the FGD
  paper's policies instead get the trace's typical pods (before tuning) and the run's RNG
  (:class:`solver.policies.PolicyContext`), exactly what :func:`solver.fgd.runner.run_loaded`
  gives them, so the RNG streams and the node order are the same as there;
* log the arrived demand and the allocated amounts (:mod:`.metrics`).

Counted per run: layout changes (``LayoutChange`` entries of applied plans: ``initial`` ones carve
a GPU that had no instance, ``repartitions`` change an existing layout, v2.10's incremental
changes included), planner latency of every GPU pod (wall time of ``solver.plan``, validator
included), placed and failed pods.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from models.catalog import model
from models.cluster import state_from_inventory
from models.config import Inventory
from models.plan import Plan, apply_plan
from models.requests import PodRequest, mig_memory_total
from models.types import ClusterState, HostUsage, NodeMode
from solver.bench import percentile
from solver.fgd.workload import SimPod, shuffle_and_tune
from solver.openb import MILLI_PER_GPU
from solver.planner import OnlineWorkload, PlannerConfig
from solver.policies import PolicyContext, info, placer
from solver.policies.fgd_model import check_state, typical_of

from .cluster import Hosts, ordered_inventory
from .mapping import NAMESPACE
from .metrics import UNALLOCATED_DEFINITIONS, WhatifBuckets, WhatifLog, node_allocation
from .workload import Job, jobs_from_openb, shuffle_and_tune_jobs

__all__ = ["RunSpec", "WhatifResult", "aggregate", "reference_memory", "run_once", "simulate", "workload_for"]

Progress = Callable[[int], None]
PROGRESS_EVERY = 200


def reference_memory(inv: Inventory) -> int:
    """What one whole GPU's memory means for a demand in milli-GPU: the GPU-weighted mean of the
    full-GPU memory (MIG: the full instance; hami-core: the GPU) over the inventory."""
    total = count = 0
    for n in inv.nodes:
        for name, k in n.gpus:
            m = model(name)
            total += k * (mig_memory_total(m) if n.mode is NodeMode.MIG else m.memory_mib)
            count += k
    return total // count if count else 1


@dataclass(frozen=True)
class RunSpec:
    """Everything one run needs (picklable; a worker process gets it whole).

    ``pods``: openb pods (:class:`SimPod`, tuned by the FGD code itself, then mapped with
    ``ref_memory_mib``: a MiB request against that full-GPU memory, or, when None, a memory
    percentage) or ready jobs (:class:`Job`, e.g. from Pod YAML). ``meta``: copied into the JSON.
    """

    inventory: Inventory
    pods: tuple[SimPod, ...] | tuple[Job, ...]
    policy: str = "dynamig"
    tune_ratio: float = 1.3
    ref_memory_mib: int | None = None
    time_budget_ms: float = 200.0
    meta: tuple[tuple[str, Any], ...] = ()
    objective: tuple[str, ...] | None = None  # None: the planner's default order
    tie: str = "name"
    tie_quantum: int = 1
    tie_break: str = "first"  # the FGD paper's policies: equal node scores to the first node or at random

    @property
    def total_gpus(self) -> int:
        return sum(k for n in self.inventory.nodes for _, k in n.gpus)

    @property
    def capacity_milli(self) -> int:
        return self.total_gpus * MILLI_PER_GPU

    def config(self) -> PlannerConfig:
        """Templates, layouts and budget; the policy itself comes from :func:`solver.policies.placer`."""
        extra: dict[str, Any] = {} if self.objective is None else {"objective": self.objective}
        return PlannerConfig(templates=self.inventory.templates, layouts_any=self.inventory.layouts_any,
                             time_budget_ms=self.time_budget_ms, tie=self.tie, tie_quantum=self.tie_quantum, **extra)



def untuned_jobs(spec: RunSpec) -> list[Job]:
    """The trace's pods as jobs, before shuffling and tuning (what FGD's typical pods come from)."""
    if spec.pods and isinstance(spec.pods[0], SimPod):
        return jobs_from_openb([p for p in spec.pods if isinstance(p, SimPod)], spec.ref_memory_mib)
    return [p for p in spec.pods if isinstance(p, Job)]


def job_request(job: Job) -> PodRequest:
    """The pod request the placer sees: the GPU request (none for a CPU-only pod) with host CPU and memory."""
    if job.request is None:
        return PodRequest(NAMESPACE, job.name, cpu_milli=job.cpu, host_memory_mib=job.mem)
    return replace(job.request, cpu_milli=job.cpu, host_memory_mib=job.mem)


def workload_for(spec: RunSpec, rng: np.random.Generator) -> list[Job]:
    """The seeded arrival order (shuffled and tuned) as jobs."""
    if spec.pods and isinstance(spec.pods[0], SimPod):
        sim = [p for p in spec.pods if isinstance(p, SimPod)]
        return jobs_from_openb(shuffle_and_tune(sim, spec.capacity_milli, spec.tune_ratio, rng), spec.ref_memory_mib)
    jobs = [p for p in spec.pods if isinstance(p, Job)]
    return shuffle_and_tune_jobs(jobs, spec.capacity_milli, spec.tune_ratio, rng)


@dataclass
class WhatifResult:
    policy: str
    seed: int
    pods: int
    gpu_pods: int
    placed: int
    failed: int
    failed_gpu_pods: int
    total_gpus: int
    nodes: int
    arrived_milli: int
    placed_demand_milli: int
    layout_changes: int
    initial_partitions: int
    latencies_ms: npt.NDArray[np.float64]
    buckets: WhatifBuckets
    elapsed_s: float
    plan_status: dict[str, int] = field(default_factory=dict)
    log: WhatifLog | None = None

    @property
    def repartitions(self) -> int:
        return self.layout_changes - self.initial_partitions

    def at(self, key: str, x: int = 100) -> float | None:
        return getattr(self.buckets, key).get(x)  # type: ignore[no-any-return]

    def latency(self, q: float) -> float:
        return round(percentile(self.latencies_ms.tolist(), q), 3)

    def to_json(self) -> dict[str, Any]:
        b = self.buckets
        return {
            "seed": self.seed,
            "pods": self.pods,
            "gpu_pods": self.gpu_pods,
            "placed": self.placed,
            "failed": self.failed,
            "failed_gpu_pods": self.failed_gpu_pods,
            "arrived_gpu_milli": self.arrived_milli,
            "placed_gpu_milli": self.placed_demand_milli,
            "reconfigurations": self.layout_changes,
            "initial_partitions": self.initial_partitions,
            "repartitions": self.repartitions,
            "planner_calls": int(self.latencies_ms.size),
            "planner_p50_ms": self.latency(50),
            "planner_p99_ms": self.latency(99),
            "planner_max_ms": round(float(self.latencies_ms.max()), 3) if self.latencies_ms.size else 0.0,
            "plan_status": dict(sorted(self.plan_status.items())),
            "elapsed_s": round(self.elapsed_s, 3),
            "unallocated_gpu_pct": {str(k): v for k, v in b.unallocated_gpu_pct.items()},
            "unallocated_gpu_mem_pct": {str(k): v for k, v in b.unallocated_gpu_mem_pct.items()},
            "unallocated_demand_pct": {str(k): v for k, v in b.unallocated_demand_pct.items()},
            "fragmentation_pct": {str(k): None for k in b.unallocated_gpu_pct},
        }


def run_once(spec: RunSpec, seed: int, progress: Progress | None = None, keep_log: bool = False) -> WhatifResult:
    """One run of ``spec`` with ``seed``; ``progress(n)`` is called every few hundred pods."""
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    jobs = workload_for(spec, rng)
    inv = ordered_inventory(spec.inventory, rng)
    state = state_from_inventory(inv)
    hosts = Hosts(inv.nodes)
    config = spec.config()
    learner = OnlineWorkload(cluster_cpu_milli=sum(n.cpu_milli or 0 for n in inv.nodes),
                             cluster_gpu_milli=spec.capacity_milli)
    workload = learner.estimate()
    pinfo = info(spec.policy)
    if pinfo.fgd_model:  # no RNG draw after the node order: the policy's stream is run_loaded's
        ctx = PolicyContext(typical_of((job_request(j) for j in untuned_jobs(spec)), spec.policy), rng,
                            spec.tie_break)
        place = placer(spec.policy, config, ctx)
    else:
        place = placer(spec.policy, replace(config, workload=workload))
    alloc = {n.name: (0.0, 0.0) for n in state.nodes}
    pos = {n.name: i for i, n in enumerate(state.nodes)}
    used_c = used_m = 0.0
    used_d = arrived = 0
    n = len(jobs)
    log_arrived = np.zeros(n, dtype=np.int64)
    log_c = np.zeros(n, dtype=np.float64)
    log_m = np.zeros(n, dtype=np.float64)
    log_d = np.zeros(n, dtype=np.int64)
    placed = np.zeros(n, dtype=np.bool_)
    lat: list[float] = []
    status: dict[str, int] = {}
    changes = initial = gpu_pods = failed_gpu = 0
    pending_progress = 0
    for i, job in enumerate(jobs):
        arrived += job.demand
        if job.request is None and pinfo.places_cpu_pods:
            request = job_request(job)
            p = place(state, request, None)  # its filter stage reads host CPU and memory from the state
            status[p.status] = status.get(p.status, 0) + 1
            if p.placed:
                state = _apply(state, p, {request.key: request}, pos)
                prim = p.primary
                assert prim is not None and prim.node is not None
                hosts.take(prim.node, job.cpu, job.mem)
                placed[i] = True
        elif job.request is None:
            learner.observe(PodRequest(NAMESPACE, job.name, cpu_milli=job.cpu, host_memory_mib=job.mem))
            target = hosts.least_allocated(job.cpu, job.mem)
            if target is not None:
                hosts.take(target, job.cpu, job.mem)
                state = _with_host(state, target, HostUsage(f"{NAMESPACE}/{job.name}", job.cpu, job.mem))
                placed[i] = True
        else:
            gpu_pods += 1
            request = replace(job.request, cpu_milli=job.cpu, host_memory_mib=job.mem)
            learner.observe(request, job.demand)  # arrived pods, as the extender sees them
            if learner.estimate() is not workload and not pinfo.fgd_model:
                workload = learner.estimate()
                place = placer(spec.policy, replace(config, workload=workload))
            cands = None if pinfo.fgd_model else hosts.candidates(job.cpu, job.mem)
            if cands is not None and not cands:
                failed_gpu += 1
            else:
                t = time.perf_counter()
                p = place(state, request, cands)
                lat.append((time.perf_counter() - t) * 1000.0)
                status[p.status] = status.get(p.status, 0) + 1
                if p.placed:
                    for ch in p.layout_changes:
                        changes += 1
                        if not state.gpu(ch.node, ch.gpu).instances:
                            initial += 1
                    state = _apply(state, p, {request.key: request}, pos)
                    prim = p.primary
                    assert prim is not None and prim.node is not None
                    hosts.take(prim.node, job.cpu, job.mem)
                    touched = {u.node for u in p.units()} | {c.node for c in p.layout_changes}
                    for name in touched:
                        old = alloc[name]
                        new = node_allocation(state.node(name))
                        alloc[name] = new
                        used_c += new[0] - old[0]
                        used_m += new[1] - old[1]
                    used_d += job.demand
                    placed[i] = True
                else:
                    failed_gpu += 1
        log_arrived[i] = arrived
        log_c[i] = used_c
        log_m[i] = used_m
        log_d[i] = used_d
        pending_progress += 1
        if progress is not None and pending_progress >= PROGRESS_EVERY:
            progress(pending_progress)
            pending_progress = 0
    if progress is not None and pending_progress:
        progress(pending_progress)
    log = WhatifLog(log_arrived, log_c, log_m, log_d, placed)
    total_gpus = spec.total_gpus
    n_placed = int(placed.sum())
    return WhatifResult(
        policy=spec.policy, seed=seed, pods=n, gpu_pods=gpu_pods, placed=n_placed, failed=n - n_placed,
        failed_gpu_pods=failed_gpu, total_gpus=total_gpus, nodes=len(inv.nodes), arrived_milli=arrived,
        placed_demand_milli=used_d, layout_changes=changes, initial_partitions=initial,
        latencies_ms=np.array(lat, dtype=np.float64), buckets=log.buckets(total_gpus),
        elapsed_s=time.perf_counter() - start, plan_status=status, log=log if keep_log else None,
    )


def _apply(state: ClusterState, plan: Plan, requests: Mapping[str, PodRequest], pos: Mapping[str, int]) -> ClusterState:
    """:func:`models.plan.apply_plan`, computed on the one node a plan touches (the usual case;
    the same pure function, without a pass over every node of a large cluster)."""
    touched = ({u.node for u in plan.units()} | {c.node for c in plan.layout_changes}
               | {pl.node for pl in plan.placements if pl.placed and pl.node is not None})
    if len(touched) != 1:
        return apply_plan(state, plan, requests)
    i = pos[touched.pop()]
    new = apply_plan(ClusterState((state.nodes[i],), state.layouts_any), plan, requests).nodes[0]
    return state.with_nodes((*state.nodes[:i], new, *state.nodes[i + 1:]))


def _with_host(state: ClusterState, name: str, usage: HostUsage) -> ClusterState:
    """``state`` with a CPU-only pod's host request taken on node ``name`` (the planner's host view)."""
    nodes = tuple(replace(n, host=(*n.host, usage)) if n.name == name else n for n in state.nodes)
    return state.with_nodes(nodes)


# --------------------------------------------------------------------------- many seeds

_QUEUE: Any = None


def _init_worker(q: Any) -> None:
    global _QUEUE
    _QUEUE = q


def _report(n: int) -> None:
    if _QUEUE is not None:
        _QUEUE.put(n)


def _worker(args: tuple[RunSpec, int]) -> WhatifResult:
    spec, seed = args
    return run_once(spec, seed, _report)


def simulate(spec: RunSpec, seeds: Sequence[int], processes: int | None = None, *,
             progress: Progress | None = None, on_result: Callable[[WhatifResult], None] | None = None,
             ) -> dict[str, Any]:
    """Run ``seeds`` (parallel processes; default: the number of CPUs) and :func:`aggregate`.

    ``progress(n)``: n more pods were attempted (all runs together); ``on_result``: a run finished.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("no seeds to run")
    if len(set(seeds)) != len(seeds):
        raise ValueError("duplicate seeds")
    if info(spec.policy).fgd_model:  # fail fast on an unknown policy or a cluster it cannot run on
        check_state(state_from_inventory(spec.inventory), spec.policy)
        PolicyContext(typical_of((job_request(j) for j in untuned_jobs(spec)), spec.policy),
                      np.random.default_rng(0), spec.tie_break)
    else:
        placer(spec.policy, spec.config())
    procs = processes if processes and processes > 0 else (os.cpu_count() or 1)
    procs = min(procs, len(seeds))
    results: list[WhatifResult] = []

    def done(r: WhatifResult) -> None:
        results.append(r)
        if on_result:
            on_result(r)

    if procs == 1:
        for s in seeds:
            done(run_once(spec, s, progress))
    else:
        ctx = multiprocessing.get_context()
        q = ctx.Queue()
        with ctx.Pool(procs, initializer=_init_worker, initargs=(q,)) as pool:
            it = pool.imap_unordered(_worker, [(spec, s) for s in seeds])
            remaining = len(seeds)
            while remaining:
                try:
                    r = it.next(timeout=0.2)
                except multiprocessing.TimeoutError:
                    r = None
                _drain(q, progress)
                if r is not None:
                    done(r)
                    remaining -= 1
            _drain(q, progress)
    results.sort(key=lambda r: seeds.index(r.seed))
    return aggregate(results, spec)


def _drain(q: Any, progress: Progress | None) -> None:
    while True:
        try:
            n = q.get_nowait()
        except queue.Empty:
            return
        if progress is not None:
            progress(int(n))


def _mean(xs: Sequence[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return round(statistics.fmean(vals), 4) if vals else None


def _sd(xs: Sequence[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return round(statistics.stdev(vals), 4) if len(vals) > 1 else None


def aggregate(results: Sequence[WhatifResult], spec: RunSpec) -> dict[str, Any]:
    """The JSON document (DESIGN §8 ``simulate --json`` plus the MIG fields)."""
    lat = np.concatenate([r.latencies_ms for r in results]) if results else np.zeros(0)
    keys = ("unallocated_gpu_pct", "unallocated_gpu_mem_pct", "unallocated_demand_pct")
    medians: dict[str, dict[str, float]] = {}
    for key in keys:
        per: dict[int, list[float]] = {}
        for r in results:
            for x, v in getattr(r.buckets, key).items():
                per.setdefault(x, []).append(v)
        medians[key] = {str(x): round(statistics.median(v), 2) for x, v in sorted(per.items())}
    inv = spec.inventory
    modes = sorted({n.mode.value for n in inv.nodes})
    models = sorted({m for n in inv.nodes for m, _ in n.gpus})
    doc: dict[str, Any] = {
        "protocol": "fgd",
        **dict(spec.meta),
        "policy": spec.policy,
        **({"tie_break": spec.tie_break} if info(spec.policy).fgd_model else {}),
        "layouts": "any" if inv.layouts_any else "templates",
        "tune_ratio": spec.tune_ratio,
        "cluster": {"nodes": len(inv.nodes), "gpus": spec.total_gpus, "modes": modes, "models": models,
                    "capacity_gpu_milli": spec.capacity_milli},
        "seeds": [r.seed for r in results],
        "per_seed": {str(r.seed): r.to_json() for r in results},
        "definitions": UNALLOCATED_DEFINITIONS,
        "mean_unallocated_gpu_pct_at_100": _mean([r.at("unallocated_gpu_pct") for r in results]),
        "sd_unallocated_gpu_pct_at_100": _sd([r.at("unallocated_gpu_pct") for r in results]),
        "mean_unallocated_gpu_mem_pct_at_100": _mean([r.at("unallocated_gpu_mem_pct") for r in results]),
        "mean_unallocated_demand_pct_at_100": _mean([r.at("unallocated_demand_pct") for r in results]),
        "sd_unallocated_demand_pct_at_100": _sd([r.at("unallocated_demand_pct") for r in results]),
        "mean_failed_pods": _mean([float(r.failed) for r in results]),
        "reconfigurations": _mean([float(r.layout_changes) for r in results]),
        "repartitions": _mean([float(r.repartitions) for r in results]),
        "planner_calls": int(lat.size),
        "planner_p50_ms": round(percentile(lat.tolist(), 50), 3),
        "planner_p99_ms": round(percentile(lat.tolist(), 99), 3),
        "elapsed_s": round(sum(r.elapsed_s for r in results), 2),
        "median_over_seeds": medians,
    }
    return doc


def with_meta(spec: RunSpec, **meta: Any) -> RunSpec:
    return replace(spec, meta=tuple(sorted({**dict(spec.meta), **meta}.items())))
