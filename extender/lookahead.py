"""The extender's lookahead loop: a CP-SAT batch plan for the pending GPU pods, kept fresh in the
background and consulted by filters (never waited for).

The planning itself is :mod:`solver.lookahead` (pure; the simulator runs the same functions). This
module owns only what needs a process: the thread, when to re-solve, and the metrics. A re-solve is
triggered when the cluster state or the queue changed (a pod arrived, finished or was reserved, a
node re-registered), at most every ``min_interval_s``; ``notify()`` wakes the loop early.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from models.codecs import POD_ALLOCATION
from models.errors import RequestError
from models.plan import Plan
from models.requests import PodRequest, parse_pod
from models.templates import DeviceConfig
from models.types import ClusterState
from solver.lookahead import (
    BatchPlan,
    QueuedPod,
    answer_from,
    deferred_reason,
    needs_reservation,
    plan_around_queue,
    queue_order,
    reserved_for_queue,
    solve_queue,
)

log = logging.getLogger(__name__)

SOLVE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
TERMINAL = ("Succeeded", "Failed")


class SnapshotLike(Protocol):
    revision: int
    state: ClusterState
    pods: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class LookaheadSettings:
    """``limit``: pending pods planned together (0 = off). ``budget_ms``: CP-SAT time per re-solve."""

    limit: int = 0
    budget_ms: float = 1000.0
    min_interval_s: float = 0.5
    poll_s: float = 1.0
    scheduler_name: str = "dynamig-scheduler"

    def __post_init__(self) -> None:
        if self.limit < 0:
            raise ValueError("lookahead: the number of pending pods must be >= 0")
        if self.budget_ms <= 0:
            raise ValueError("lookahead budget must be > 0 ms")


def queued_pods(pods: Sequence[Mapping[str, Any]], scheduler_name: str) -> list[QueuedPod]:
    """The pending GPU pods this scheduler will filter: not bound, not reserved, not finished."""
    out = []
    for p in pods:
        meta = p.get("metadata") or {}
        spec = p.get("spec") or {}
        if spec.get("nodeName") or meta.get("deletionTimestamp") or \
                (p.get("status") or {}).get("phase") in TERMINAL:
            continue
        if spec.get("schedulerName") not in (None, "", scheduler_name):
            continue
        if (meta.get("annotations") or {}).get(POD_ALLOCATION):
            continue  # reserved: already held in the state
        try:
            req = parse_pod(p)
        except RequestError:
            continue  # the filter reports it
        if req.wants_gpu:
            out.append(QueuedPod(req, req.priority, str(meta.get("creationTimestamp") or "")))
    return out


class LookaheadMetrics:
    """Batch solves (count by status, time per stage), where filter answers came from, plan age."""

    def __init__(self, registry: CollectorRegistry, loop: Lookahead) -> None:
        self.solves = Counter("dynamig_batch_solves", "Lookahead batch plans solved, by planner status.",
                              ["status"], registry=registry)
        self.solve_seconds = Histogram("dynamig_batch_solve_seconds",
                                       "Lookahead batch solve time per objective stage ('total' = whole solve).",
                                       ["stage"], registry=registry, buckets=SOLVE_BUCKETS)
        self.answers = Counter("dynamig_filter_answers", "Placed filter answers by source: the queue's batch "
                               "plan, the per-pod planner around the queue's reservations, or plain per-pod.",
                               ["source"], registry=registry)
        registry.register(_PlanCollector(loop))

    def observe_solve(self, plan: Plan) -> None:
        self.solves.labels(plan.status).inc()
        for s in plan.stages:
            self.solve_seconds.labels(s.name).observe(max(0.0, s.wall_ms) / 1000.0)
        self.solve_seconds.labels("total").observe(max(0.0, plan.solve_ms) / 1000.0)


class _PlanCollector(Collector):
    def __init__(self, loop: Lookahead) -> None:
        self.loop = loop

    def collect(self) -> Iterator[Metric]:
        b = self.loop.current
        age = GaugeMetricFamily("dynamig_batch_plan_age_seconds",
                                "Seconds since the current lookahead batch plan was solved (absent: none).")
        pods = GaugeMetricFamily("dynamig_batch_plan_pods", "Pods in the current lookahead batch plan.",
                                 labels=["state"])
        if b is not None:
            age.add_metric([], max(0.0, self.loop.clock() - b.solved_at))
            pods.add_metric(["placed"], len(b.placed))
            pods.add_metric(["deferred"], len(b.queue) - len(b.placed))
        yield age
        yield pods


class Lookahead:
    """The batch plan for the queue, re-solved in a daemon thread; reads never block on a solve."""

    def __init__(self, snapshot: Callable[[], SnapshotLike], plan_fn: Callable[..., Plan], planner_config: Any,
                 templates: DeviceConfig, settings: LookaheadSettings,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.snapshot = snapshot
        self.plan_fn = plan_fn
        self.config = replace(planner_config, time_budget_ms=settings.budget_ms) \
            if hasattr(planner_config, "time_budget_ms") else planner_config
        self.templates = templates
        self.settings = settings
        self.clock = clock
        self.current: BatchPlan | None = None
        self.requests: dict[str, PodRequest] = {}
        self.metrics: LookaheadMetrics | None = None
        #: placed filter answers by source and solves by status (what the metrics count, in process)
        self.answered: Tally[str] = Tally()
        self.solved: Tally[str] = Tally()
        self._soft: tuple[BatchPlan, ClusterState, ClusterState] | None = None
        self._last: tuple[int, tuple[str, ...]] | None = None
        self._last_solve = -1e18
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.settings.limit > 0

    # ------------------------------------------------------------------ the loop
    def run_once(self) -> bool:
        """Re-solve if the state or the queue changed since the last solve. True if it solved."""
        if not self.enabled:
            return False
        snap = self.snapshot()
        queue = queue_order(queued_pods(snap.pods, self.settings.scheduler_name), self.settings.limit)
        key = (id(snap.state), tuple(q.key for q in queue))
        if key == self._last:
            return False
        with self._lock:
            self._last = key
            self._last_solve = self.clock()
        if not queue:
            self.current = None
            return False
        batch = solve_queue(self.plan_fn, self.config, snap.state, queue, snap.revision, self.clock())
        self.requests = {q.key: q for q in queue}
        self.current = batch
        if batch is not None:
            self.solved[batch.plan.status] += 1
        if self.metrics is not None and batch is not None:
            self.metrics.observe_solve(batch.plan)
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.settings.poll_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            wait = self._last_solve + self.settings.min_interval_s - self.clock()
            if wait > 0 and self._stop.wait(wait):
                break
            try:
                self.run_once()
            except Exception:  # the loop must outlive a bad snapshot or a planner error
                log.exception("lookahead: batch solve failed; the per-pod planner answers meanwhile")

    def start(self) -> None:
        if self.enabled and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="dynamig-lookahead", daemon=True)
            self._thread.start()
            self._wake.set()

    def notify(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # ------------------------------------------------------------------ used by filters
    def answer(self, request: PodRequest, state: ClusterState, nodes: Sequence[str]) -> Plan | None:
        """The batch plan's placement for ``request`` if it still holds on ``state``."""
        got = answer_from(self.current, request, state, self.templates, nodes)
        if got is not None:
            self._count("batch")
        return got

    def _count(self, source: str) -> None:
        self.answered[source] += 1
        if self.metrics is not None:
            self.metrics.answers.labels(source).inc()

    def around_queue(self, request: PodRequest, state: ClusterState, nodes: Sequence[str],
                     plan: Callable[[ClusterState, PodRequest, Sequence[str]], Plan]) -> Plan:
        """A per-pod plan that first avoids what the batch plan gives to other queued pods (and is
        valid on the live state); the plain per-pod plan when that finds nothing."""
        batch = self.current
        soft = self._around(batch, state, request.key) if batch is not None and \
            needs_reservation(batch, request.key) else None
        got, source = plan_around_queue(request, state, soft, self.templates,
                                        lambda s, r, _n: plan(s, r, nodes), nodes)
        if source:
            self._count(source)
        return got

    def _around(self, batch: BatchPlan, state: ClusterState, key: str) -> ClusterState:
        """:func:`reserved_for_queue`, kept for the last (plan, state) pair. It is asked only for pods
        the plan does not place (:func:`needs_reservation`), for which the excepted key is a no-op,
        so one result serves every such filter on the same state, queued or not."""
        cached = self._soft
        if cached is not None and cached[0] is batch and cached[1] is state:
            return cached[2]
        soft = reserved_for_queue(batch, state, self.requests, self.templates, key,
                                  cached[2] if cached is not None else None)
        self._soft = (batch, state, soft)
        return soft

    def reason(self, key: str, state: ClusterState) -> str | None:
        return deferred_reason(self.current, key, state)
