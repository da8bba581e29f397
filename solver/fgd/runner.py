"""One run of the FGD protocol (README §7.2) and many seeds in parallel processes."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from solver.fgd.cluster import ClusterState, SimNode
from solver.fgd.frag import FragModel, FragTracker
from solver.fgd.metrics import Buckets, StepLog, bucketize
from solver.fgd.policy import TIE_BREAKS, PolicyFactory, make_policy, resolve_policy
from solver.fgd.workload import SimPod, shuffle_and_tune, typical_pods
from solver.openb import OpenbNode, OpenbPod, load_nodes, load_pods

__all__ = ["DEFAULT_TUNE_RATIO", "RunResult", "aggregate", "run", "run_loaded", "simulate"]

DEFAULT_TUNE_RATIO = 1.3


@dataclass(frozen=True)
class RunResult:
    """The outcome of one (trace, policy, seed) run."""

    policy: str
    seed: int
    pods: int  # after tuning
    placed: int
    failed: int
    total_gpus: int
    capacity_milli: int
    arrived_milli: int
    used_milli: int
    typical_specs: int
    buckets: Buckets
    elapsed_s: float
    trace: str = ""
    nodes: str = ""
    steps: StepLog | None = field(default=None, repr=False)

    @property
    def unallocated_gpu_pct_at_100(self) -> float | None:
        return self.buckets.unallocated_gpu_pct.get(100)

    def to_json(self) -> dict[str, Any]:
        b = self.buckets
        return {
            "seed": self.seed,
            "pods": self.pods,
            "placed": self.placed,
            "failed": self.failed,
            "arrived_gpu_milli": self.arrived_milli,
            "used_gpu_milli": self.used_milli,
            "typical_specs": self.typical_specs,
            "elapsed_s": round(self.elapsed_s, 3),
            "unallocated_gpu_pct": {str(k): v for k, v in b.unallocated_gpu_pct.items()},
            "fragmentation_pct": {str(k): v for k, v in b.fragmentation_pct.items()},
            "frag_rate_pct": {str(k): v for k, v in b.frag_rate_pct.items()},
        }


def run_loaded(
    nodes: Sequence[OpenbNode | SimNode],
    pods: Sequence[OpenbPod | SimPod],
    policy: str | PolicyFactory,
    seed: int,
    *,
    tune_ratio: float = DEFAULT_TUNE_RATIO,
    tie_break: str = "first",
    keep_steps: bool = True,
) -> RunResult:
    """README §7.2 on in-memory nodes and pods.

    RNG (``numpy.random.default_rng(seed)``) call order: pod shuffle, tuning draws, node order,
    then the policy's choices. ``tie_break``: ``"first"`` (equal scores go to the first node in
    the seeded node order, as the FGD artifact's scheduler does) or ``"random"`` (uniform).
    """
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"tie_break must be one of {', '.join(TIE_BREAKS)}, got {tie_break!r}")
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    sim_pods = [p if isinstance(p, SimPod) else SimPod.from_openb(p) for p in pods]
    typical = typical_pods(sim_pods)
    sim_nodes = sorted((n if isinstance(n, SimNode) else SimNode.from_openb(n) for n in nodes), key=lambda n: n.name)
    capacity = sum(n.gpus for n in sim_nodes) * 1000
    workload = shuffle_and_tune(sim_pods, capacity, tune_ratio, rng)
    order = rng.permutation(len(sim_nodes))
    state = ClusterState([sim_nodes[i] for i in order])
    pol = make_policy(policy)
    pol.tie_break = tie_break
    pol.prepare(state, typical, rng)
    tracker = FragTracker(FragModel(typical, state.models), state)

    n = len(workload)
    arrived_log = np.zeros(n, dtype=np.int64)
    used_log = np.zeros(n, dtype=np.int64)
    frag_log = np.zeros(n, dtype=np.float64)
    idle_log = np.zeros(n, dtype=np.int64)
    placed_log = np.zeros(n, dtype=np.bool_)
    arrived = 0
    used = state.used_gpu_milli
    for i, pod in enumerate(workload):
        arrived += pod.demand
        placement = pol.select(state, pod)
        if placement is not None:
            node, gpus = placement
            state.allocate(int(node), tuple(int(g) for g in gpus), pod)
            tracker.update(int(node))
            used += pod.demand
            placed_log[i] = True
        pol.observe(state, pod, placement)
        arrived_log[i] = arrived
        used_log[i] = used
        frag_log[i] = tracker.frag_milli
        idle_log[i] = state.capacity_milli - used
    steps = StepLog(arrived_log, used_log, frag_log, idle_log, placed_log)
    buckets = bucketize(steps, state.total_gpus)
    placed = int(placed_log.sum())
    return RunResult(
        policy=policy if isinstance(policy, str) else pol.name,
        seed=seed,
        pods=n,
        placed=placed,
        failed=n - placed,
        total_gpus=state.total_gpus,
        capacity_milli=state.capacity_milli,
        arrived_milli=arrived,
        used_milli=used,
        typical_specs=typical.size,
        buckets=buckets,
        elapsed_s=time.perf_counter() - start,
        steps=steps if keep_steps else None,
    )


def run(
    trace_csv: str | Path,
    nodes_csv: str | Path,
    policy: str | PolicyFactory,
    seed: int,
    *,
    tune_ratio: float = DEFAULT_TUNE_RATIO,
    tie_break: str = "first",
    keep_steps: bool = True,
) -> RunResult:
    """One run of the FGD protocol: ``trace_csv`` (a pod list) on ``nodes_csv`` (a node list).

    Raises :class:`solver.openb.OpenbFormatError` for unreadable or malformed files and
    ``ValueError`` for an unknown policy name.
    """
    nodes = load_nodes(nodes_csv)
    pods = load_pods(trace_csv)
    result = run_loaded(nodes, pods, policy, seed, tune_ratio=tune_ratio, tie_break=tie_break, keep_steps=keep_steps)
    return _with_files(result, trace_csv, nodes_csv)


def _with_files(result: RunResult, trace_csv: str | Path, nodes_csv: str | Path) -> RunResult:
    return dataclasses.replace(result, trace=str(trace_csv), nodes=str(nodes_csv))


def _worker(args: tuple[str, str, PolicyFactory, int, float, str]) -> RunResult:
    trace_csv, nodes_csv, factory, seed, tune_ratio, tie_break = args
    return run(trace_csv, nodes_csv, factory, seed, tune_ratio=tune_ratio, tie_break=tie_break, keep_steps=False)


def simulate(
    trace_csv: str | Path,
    nodes_csv: str | Path,
    policy: str | PolicyFactory,
    seeds: Sequence[int],
    processes: int | None = None,
    *,
    tune_ratio: float = DEFAULT_TUNE_RATIO,
    tie_break: str = "first",
    progress: Callable[[RunResult], None] | None = None,
) -> dict[str, Any]:
    """Run ``seeds`` (in parallel processes; default: the number of CPUs) and aggregate.

    Returns the JSON document of DESIGN §8: ``protocol``, ``policy``, ``trace``, ``nodes``,
    ``seeds``, ``per_seed`` (seed → ``unallocated_gpu_pct``/``fragmentation_pct``/``frag_rate_pct``
    per arrived-load bucket, plus counts), ``mean_unallocated_gpu_pct_at_100`` and
    ``sd_unallocated_gpu_pct_at_100`` (over seeds), and per-bucket medians over seeds.
    ``progress`` is called with each finished run.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("no seeds to run")
    if len(set(seeds)) != len(seeds):
        raise ValueError("duplicate seeds")
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"tie_break must be one of {', '.join(TIE_BREAKS)}, got {tie_break!r}")
    # fail fast, in this process, on bad files or an unknown policy
    load_nodes(nodes_csv)
    load_pods(trace_csv)
    factory = resolve_policy(policy)
    name = policy if isinstance(policy, str) else factory().name
    procs = processes if processes and processes > 0 else (os.cpu_count() or 1)
    procs = min(procs, len(seeds))
    jobs = [(str(trace_csv), str(nodes_csv), factory, s, tune_ratio, tie_break) for s in seeds]
    results: list[RunResult] = []
    if procs == 1:
        for job in jobs:
            res = _worker(job)
            results.append(res)
            if progress:
                progress(res)
    else:
        with multiprocessing.get_context().Pool(procs) as pool:
            for res in pool.imap_unordered(_worker, jobs):
                results.append(res)
                if progress:
                    progress(res)
    results.sort(key=lambda r: seeds.index(r.seed))
    return aggregate(
        results, policy=name, trace=str(trace_csv), nodes=str(nodes_csv), tune_ratio=tune_ratio, tie_break=tie_break
    )


def aggregate(
    results: Sequence[RunResult],
    *,
    policy: str,
    trace: str,
    nodes: str,
    tune_ratio: float = DEFAULT_TUNE_RATIO,
    tie_break: str = "first",
) -> dict[str, Any]:
    """The JSON document of :func:`simulate` from finished runs."""
    at100 = [r.unallocated_gpu_pct_at_100 for r in results]
    vals = [v for v in at100 if v is not None]
    medians: dict[str, dict[str, float]] = {}
    for key in ("unallocated_gpu_pct", "fragmentation_pct", "frag_rate_pct"):
        per_bucket: dict[int, list[float]] = {}
        for r in results:
            for x, v in getattr(r.buckets, key).items():
                per_bucket.setdefault(x, []).append(v)
        medians[key] = {str(x): round(statistics.median(v), 2) for x, v in sorted(per_bucket.items())}
    return {
        "protocol": "fgd",
        "policy": policy,
        "trace": trace,
        "nodes": nodes,
        "tune_ratio": tune_ratio,
        "tie_break": tie_break,
        "seeds": [r.seed for r in results],
        "per_seed": {str(r.seed): r.to_json() for r in results},
        "mean_unallocated_gpu_pct_at_100": round(statistics.fmean(vals), 4) if vals else None,
        "sd_unallocated_gpu_pct_at_100": round(statistics.stdev(vals), 4) if len(vals) > 1 else None,
        "median_over_seeds": medians,
    }
