"""The ``churn`` protocol: a live cluster where pods arrive, wait, run and leave.

One run = one (policy, offered load ρ, seed). Everything random is drawn before the first event,
from four independent streams spawned from ``numpy.random.SeedSequence(seed)``: node order, pod
shapes (uniform over the GPU pods of the source, with replacement), durations, inter-arrival gaps
(Exp(1)). The arrival times are the gaps divided by the rate
``λ = ρ · capacity / (E[demand] · E[duration])`` (milli-GPU demand, the same measure for every
policy), so every policy sees the same arrival sequence, and a higher load only compresses time
(the i-th pod has the same shape and duration at every load).

Events, in time order (at equal times: departures, re-cut completions, arrivals, abandonments):

* arrival — the pod is planned at once; if it does not fit it joins the FIFO wait queue;
* departure — the pod's instances become free (layout kept), its shares and host requests go;
  then the queue is retried in order (kube-scheduler re-queues unschedulable pods on such events);
* re-cut done — a GPU whose layout changed ``reconfig_s`` ago serves again; the queue is retried;
* abandonment (``max_wait_s``) — a pod still queued that long leaves unplaced.

A layout change makes the GPU serve nothing for ``reconfig_s``: it is marked unhealthy (so no
policy places anything else on it) and the pods planned onto it start when it is done. A
non-incremental change needs an idle GPU (the validator enforces it); incremental changes
(``hami-v210``, ``dra-firstfit``) may touch a busy GPU while its held instances keep running:
those are counted as ``busy_repartitions``. Evictions (a held instance lost) are counted and must
be 0. Within one retry pass a pod shape that failed is not planned again until capacity frees
(the state only shrinks in between, so the answer would be the same).

Lookahead (``lookahead`` > 0, policy ``dynamig`` only) runs the extender's batch planning — the
same :mod:`solver.lookahead` functions — on the simulated clock: after a departure, a re-cut
completion or an arrival that queues, the head of the wait queue (``lookahead`` pods, FIFO = the
queue's creation order) is re-solved as one ``solver.plan`` batch (CP-SAT, single worker, fixed
seed, ``lookahead_budget_ms`` wall budget), at most once per ``lookahead_interval_s`` of simulated
time (the extender's ``min_interval_s``). The solve is taken as instantaneous on the simulated
clock. A queued pod the batch plan places is placed from it after :func:`answer_from` re-validates
it on the live state; every other pod gets the per-pod plan around the queue's reservations
(:func:`plan_around_queue`), exactly as the extender's filter answers.

A warm-up is excluded: statistics cover the ``pods`` arrivals after ``t_w`` (default: the
duration distribution's horizon, the longest duration, after which the offered work in progress
is stationary), up to ``t_end``, the last arrival. A pod
still queued at ``t_end`` counts with its wait so far (a lower bound), abandoned ones with
``max_wait_s``.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from models.cluster import state_from_inventory
from models.config import Inventory
from models.plan import Plan, apply_plan, release_pod
from models.requests import PodRequest
from models.types import ClusterState
from solver.bench import percentile
from solver.lookahead import (
    BatchPlan,
    QueuedPod,
    answer_from,
    needs_reservation,
    plan_around_queue,
    queue_order,
    reserved_for_queue,
    solve_queue,
)
from solver.openb import MILLI_PER_GPU
from solver.planner import OBJECTIVES, OnlineWorkload, PlannerConfig, plan
from solver.policies import info, placer
from solver.traces import Durations
from solver.whatif.cluster import ordered_inventory
from solver.whatif.metrics import node_allocation
from solver.whatif.workload import Job

__all__ = ["ChurnSpec", "arrival_count", "arrival_rate", "run_churn"]

Progress = Callable[[int], None]
DEPART, READY, ARRIVE, ABANDON, RESOLVE = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class ChurnSpec:
    """What a churn run needs (picklable: a Ray task gets it whole).

    ``shapes``: the GPU pods to draw from (request with host CPU/memory set). ``pods``: measured
    arrivals per run (after the warm-up). ``warmup_s``: None = ``durations.horizon``.
    ``learn_workload``: ``dynamig`` plans with an online workload estimate learned from the arrivals,
    as the extender does (``ExtenderConfig.learn_workload``, on by default); False: the prior only.
    """

    inventory: Inventory
    shapes: tuple[Job, ...]
    durations: Durations
    pods: int = 1000
    warmup_s: float | None = None
    reconfig_s: float = 10.0
    max_wait_s: float | None = None
    time_budget_ms: float = 200.0
    objective: tuple[str, ...] = OBJECTIVES
    samples: int = 120
    lookahead: int = 0
    lookahead_budget_ms: float = 1000.0
    lookahead_interval_s: float = 0.5
    learn_workload: bool = True
    meta: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if not self.shapes:
            raise ValueError("no GPU pod to draw arrivals from")
        if self.pods < 1:
            raise ValueError("a churn run needs at least 1 measured arrival")
        if self.warmup_s is not None and self.warmup_s < 0:
            raise ValueError("warm-up seconds must be >= 0")
        if self.reconfig_s < 0:
            raise ValueError("reconfig seconds must be >= 0")
        if self.max_wait_s is not None and self.max_wait_s <= 0:
            raise ValueError("max wait must be > 0 seconds")
        if self.lookahead < 0:
            raise ValueError("lookahead: the number of pending pods must be >= 0 (0 = off)")
        if not self.lookahead_budget_ms > 0:
            raise ValueError("lookahead budget must be > 0 ms")
        if self.lookahead_interval_s < 0:
            raise ValueError("lookahead interval must be >= 0 seconds")

    @property
    def total_gpus(self) -> int:
        return sum(k for n in self.inventory.nodes for _, k in n.gpus)

    @property
    def capacity_milli(self) -> int:
        return self.total_gpus * MILLI_PER_GPU

    @property
    def warmup(self) -> float:
        return self.durations.horizon if self.warmup_s is None else self.warmup_s

    @property
    def mean_demand(self) -> float:
        return sum(j.demand for j in self.shapes) / len(self.shapes)

    def config(self) -> PlannerConfig:
        return PlannerConfig(objective=self.objective, templates=self.inventory.templates,
                             layouts_any=self.inventory.layouts_any, time_budget_ms=self.time_budget_ms)

    def batch_config(self) -> PlannerConfig:
        """The lookahead's batch solves: the extender's settings (one worker, seed 0), its budget."""
        return replace(self.config(), time_budget_ms=self.lookahead_budget_ms, workers=1, seed=0)


def arrival_rate(spec: ChurnSpec, load: float) -> float:
    """Arrivals per second for offered load ``load`` (fraction of the GPU capacity)."""
    return load * spec.capacity_milli / (spec.mean_demand * spec.durations.mean)


def _streams(seed: int) -> list[np.random.Generator]:
    """Node order, shapes, durations, gaps: independent streams of one seed."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)]


def arrival_count(spec: ChurnSpec, load: float, seed: int) -> int:
    """How many arrivals (warm-up included) a run of ``spec`` at ``load`` with ``seed`` has."""
    return int(_arrivals(_streams(seed)[3], arrival_rate(spec, load), spec.warmup, spec.pods).size)


def _arrivals(rng: np.random.Generator, lam: float, warmup: float, measured: int) -> np.ndarray:  # type: ignore[type-arg]
    """Poisson arrival times: every arrival before ``warmup``, then ``measured`` more."""
    times: list[float] = []
    t = 0.0
    after = 0
    while after < measured:
        for g in rng.exponential(1.0, size=1024):
            t += float(g) / lam
            times.append(t)
            after += t >= warmup
            if after == measured:
                break
    return np.asarray(times, dtype=np.float64)


def _classes(shapes: tuple[Job, ...]) -> list[int]:
    """Per shape, the index of the first shape with the same request (names aside)."""
    first: dict[PodRequest, int] = {}
    out = []
    for i, j in enumerate(shapes):
        assert j.request is not None
        out.append(first.setdefault(replace(j.request, name="", uid=""), i))
    return out


def _with_health(state: ClusterState, gpus: set[tuple[str, str]], health: bool) -> ClusterState:
    names = {n for n, _ in gpus}
    nodes = tuple(
        replace(node, gpus=tuple(replace(g, health=health) if (node.name, g.uuid) in gpus else g for g in node.gpus))
        if node.name in names else node
        for node in state.nodes)
    return state.with_nodes(nodes)


def _pct(xs: list[float], q: float) -> float:
    return round(percentile(xs, q), 3) if xs else 0.0


def run_churn(spec: ChurnSpec, policy: str, load: float, seed: int, progress: Progress | None = None,
              detail: bool = False) -> dict[str, Any]:
    """One churn run; returns its JSON document (fields in ``docs/churn.md``). ``detail``: also
    ``pods``, per arrival (warm-up included) its arrival and start time (None: never started) and
    whether it was abandoned."""
    if load <= 0:
        raise ValueError(f"load must be > 0, got {load}")
    pinfo = info(policy)
    base_cfg = spec.config()
    place = placer(policy, base_cfg)
    learner = OnlineWorkload(base_cfg.workload) if policy == "dynamig" and spec.learn_workload else None
    known = base_cfg.workload
    if spec.lookahead and policy != "dynamig":
        raise ValueError(f"lookahead plans with solver.plan: only policy 'dynamig' runs it, not {policy!r}")
    batch_cfg = spec.batch_config()
    templates = spec.inventory.templates
    start_wall = time.perf_counter()
    r_nodes, r_shapes, r_durs, r_gaps = _streams(seed)
    inv: Inventory = ordered_inventory(spec.inventory, r_nodes)
    lam = arrival_rate(spec, load)
    arrive = _arrivals(r_gaps, lam, spec.warmup, spec.pods)
    n = arrive.size
    warm = n - spec.pods
    shape_idx = r_shapes.integers(len(spec.shapes), size=n)
    klass = _classes(spec.shapes)  # equal requests share a class: one failure answers for all
    dur = spec.durations.sample(r_durs, n)
    t_w, t_end = float(arrive[warm]), float(arrive[-1])

    state = state_from_inventory(inv)
    rev = 0  # bumped on every state change: the lookahead's re-solve key (an id() could be reused)
    alloc = {node.name: node_allocation(node)[0] for node in state.nodes}
    alloc_total = 0.0
    holding_demand = 0.0
    start_t = np.full(n, np.nan)
    placed_t = np.full(n, np.nan)
    waited = np.zeros(n, dtype=np.bool_)
    abandoned = np.zeros(n, dtype=np.bool_)
    queue: dict[int, None] = {}  # insertion-ordered: the FIFO wait queue
    failed_shapes: set[int] = set()
    pod_nodes: dict[int, set[str]] = {}
    lat: list[float] = []
    counts = {"idle": 0, "busy": 0, "initial": 0, "evictions": 0}
    heap: list[tuple[float, int, int, Any]] = []
    seq = 0
    la: dict[str, Any] = {"batch": None, "requests": {}, "last": -1e18, "pending": False, "key": None}
    batch_ms: list[float] = []
    sources = {"batch": 0, "per_pod_around_queue": 0, "per_pod": 0}

    def push(t: float, kind: int, data: Any) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(heap, (t, kind, seq, data))

    for i in range(n):
        push(float(arrive[i]), ARRIVE, i)
        if spec.max_wait_s is not None:
            push(float(arrive[i]) + spec.max_wait_s, ABANDON, i)

    # time integrals over [t_w, t_end] and the sampled timeline
    acc = {"alloc": 0.0, "demand": 0.0}
    last_t = 0.0
    timeline: list[tuple[float, float, float, int]] = []
    sample_every = t_end / max(1, spec.samples)
    next_sample = 0.0
    cap = float(spec.capacity_milli)

    def advance(now: float) -> None:
        nonlocal last_t, next_sample
        lo, hi = max(last_t, t_w), min(now, t_end)
        if hi > lo:
            acc["alloc"] += alloc_total * (hi - lo)
            acc["demand"] += holding_demand * (hi - lo)
        while next_sample <= now and next_sample <= t_end:
            timeline.append((round(next_sample, 1), round(100 * alloc_total / cap, 2),
                             round(100 * holding_demand / cap, 2), len(queue)))
            next_sample += sample_every
        last_t = now

    def request(i: int) -> PodRequest:
        job = spec.shapes[int(shape_idx[i])]
        assert job.request is not None
        return replace(job.request, name=f"{job.request.name}-a{i}")

    def touch(names: set[str]) -> None:
        nonlocal alloc_total
        for name in names:
            new = node_allocation(state.node(name))[0]
            alloc_total += new - alloc[name]
            alloc[name] = new

    def answer(req: PodRequest) -> Plan:
        """What the extender's filter answers: the batch plan if it places ``req`` and still holds,
        else the per-pod planner (first around the queue's reservations)."""
        batch: BatchPlan | None = la["batch"]
        got = answer_from(batch, req, state, templates)
        if got is not None:
            sources["batch"] += 1
            return got
        soft = reserved_for_queue(batch, state, la["requests"], templates, req.key) \
            if batch is not None and needs_reservation(batch, req.key) else None
        p, source = plan_around_queue(req, state, soft, templates, place)
        if source:
            sources[source] += 1
        return p

    def resolve(now: float) -> None:
        """Re-solve the queue's batch plan if the state or the queue changed (the extender's loop)."""
        if not spec.lookahead:
            return
        if now < la["last"] + spec.lookahead_interval_s:
            if not la["pending"]:
                la["pending"] = True
                push(la["last"] + spec.lookahead_interval_s, RESOLVE, None)
            return
        reqs = queue_order((QueuedPod(request(i), 0, f"{i:09d}") for i in queue), spec.lookahead)
        key = (rev, tuple(r.key for r in reqs))
        if key == la["key"]:
            return
        la["key"], la["last"] = key, now
        t0 = time.perf_counter()
        la["batch"] = solve_queue(plan, batch_cfg, state, reqs, 0, now)
        if reqs:
            batch_ms.append((time.perf_counter() - t0) * 1000.0)
        la["requests"] = {r.key: r for r in reqs}

    def learn(req: PodRequest) -> None:
        """The extender's online estimate: every arriving pod observed once; a new snapshot (on
        its fixed schedule) gives the planner, and the lookahead's batch solves, a new workload."""
        nonlocal place, known, batch_cfg
        if learner is None:
            return
        learner.observe(req)
        est = learner.estimate()
        if est is not known:
            known = est
            place = placer(policy, replace(base_cfg, workload=est))
            batch_cfg = replace(batch_cfg, workload=est)

    def try_place(i: int, now: float) -> bool:
        nonlocal state, rev, holding_demand
        req = request(i)
        t0 = time.perf_counter()
        p = answer(req)
        lat.append((time.perf_counter() - t0) * 1000.0)
        if not p.placed:
            return False
        before = {(c.node, c.gpu): state.gpu(c.node, c.gpu) for c in p.layout_changes}
        state = apply_plan(state, p, {req.key: req})
        rev += 1
        measured = now >= t_w
        changed: set[tuple[str, str]] = set()
        for key, old in before.items():
            held = {x.holder for x in old.instances if x.holder}
            after = {x.holder for x in state.gpu(*key).instances if x.holder}
            counts["evictions"] += len(held - after)
            changed.add(key)
            if measured:
                counts["busy" if held else "idle"] += 1
                counts["initial"] += not old.instances
        begin = now
        if changed and spec.reconfig_s > 0:
            state = _with_health(state, changed, False)
            for key in changed:
                push(now + spec.reconfig_s, READY, key)
            begin = now + spec.reconfig_s
        touched = {u.node for u in p.units()} | {c.node for c in p.layout_changes}
        touch(touched)
        pod_nodes[i] = {u.node for u in p.units()}
        placed_t[i] = now
        start_t[i] = begin
        holding_demand += spec.shapes[int(shape_idx[i])].demand
        push(begin + float(dur[i]), DEPART, i)
        return True

    def retry(now: float) -> None:
        for i in list(queue):
            s = klass[int(shape_idx[i])]
            if s in failed_shapes:
                continue
            if try_place(i, now):
                del queue[i]
            else:
                failed_shapes.add(s)

    done = 0
    while heap:
        now, kind, _, data = heapq.heappop(heap)
        if now > t_end:
            break
        advance(now)
        if kind == ARRIVE:
            i = int(data)
            learn(request(i))
            s = klass[int(shape_idx[i])]
            if s in failed_shapes or not try_place(i, now):
                failed_shapes.add(s)
                waited[i] = True
                queue[i] = None
                resolve(now)
            done += 1
            if progress is not None and done % 100 == 0:
                progress(100)
        elif kind == DEPART:
            i = int(data)
            state = release_pod(state, request(i).key)
            rev += 1
            holding_demand -= spec.shapes[int(shape_idx[i])].demand
            touch(pod_nodes.pop(i))
            failed_shapes.clear()
            resolve(now)
            retry(now)
        elif kind == READY:
            state = _with_health(state, {data}, True)
            rev += 1
            failed_shapes.clear()
            resolve(now)
            retry(now)
        elif kind == RESOLVE:
            la["pending"] = False
            if queue:
                resolve(now)
                failed_shapes.clear()
                retry(now)
        elif kind == ABANDON:
            i = int(data)
            if i in queue:
                del queue[i]
                abandoned[i] = True
    advance(t_end)
    if progress is not None and done % 100:
        progress(done % 100)

    meas = np.arange(warm, n)
    waits: list[float] = []
    for i in range(warm, n):
        if abandoned[i]:
            waits.append(float(spec.max_wait_s or 0.0))
        elif not np.isnan(start_t[i]):
            waits.append(float(start_t[i] - arrive[i]))
        else:
            waits.append(t_end - float(arrive[i]))
    placed_meas = int(np.sum(~np.isnan(placed_t[meas])))
    span = max(t_end - t_w, 1e-9)
    per_k = 1000.0 / placed_meas if placed_meas else 0.0
    still = sum(1 for i in queue if i >= warm)
    doc: dict[str, Any] = {
        "policy": policy,
        "load": load,
        "seed": seed,
        "keeps_held": pinfo.keeps_held,
        "arrivals": n,
        "measured_pods": int(meas.size),
        "placed": placed_meas,
        "waited_share": round(float(np.mean(waited[meas])), 4),
        "abandoned": int(np.sum(abandoned[meas])),
        "still_waiting": still,
        "wait_mean_s": round(float(np.mean(waits)), 3),
        "wait_p50_s": _pct(waits, 50),
        "wait_p95_s": _pct(waits, 95),
        "wait_p99_s": _pct(waits, 99),
        "wait_max_s": round(max(waits), 3),
        "throughput_per_h": round(placed_meas / span * 3600.0, 3),
        "offered_per_h": round(lam * 3600.0, 3),
        "allocated_compute_pct": round(100 * acc["alloc"] / (span * cap), 3),
        "demand_utilisation_pct": round(100 * acc["demand"] / (span * cap), 3),
        "reconfigurations": counts["idle"] + counts["busy"],
        "idle_repartitions": counts["idle"],
        "busy_repartitions": counts["busy"],
        "initial_partitions": counts["initial"],
        "reconf_per_1000_idle": round(counts["idle"] * per_k, 3),
        "reconf_per_1000_busy": round(counts["busy"] * per_k, 3),
        "evictions": counts["evictions"],
        "planner_calls": len(lat),
        "planner_p50_ms": _pct(lat, 50),
        "planner_p99_ms": _pct(lat, 99),
        "lookahead": spec.lookahead,
        "batch_solves": len(batch_ms),
        "batch_solve_p50_ms": _pct(batch_ms, 50),
        "batch_solve_p99_ms": _pct(batch_ms, 99),
        "placed_from_batch_plan": sources["batch"],
        "placed_per_pod_around_queue": sources["per_pod_around_queue"],
        "sim_time_s": round(t_end, 1),
        "measured_from_s": round(t_w, 1),
        "elapsed_s": round(time.perf_counter() - start_wall, 3),
        "timeline": [list(x) for x in timeline],
    }
    if detail:
        doc["pods"] = {"arrive": [float(x) for x in arrive],
                       "start": [None if np.isnan(x) else float(x) for x in start_t],
                       "abandoned": [bool(x) for x in abandoned], "measured_from": warm}
    return doc

