"""The extender's lookahead loop: when it re-solves, what filters get from it, its metrics, and that a
failing solve does not stop it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from test_planner import mig_node

from extender.lookahead import Lookahead, LookaheadMetrics, LookaheadSettings, queued_pods
from models.config import builtin_device_config
from models.plan import Plan
from models.requests import PodRequest
from models.types import ClusterState
from solver import PlannerConfig, plan

TEMPLATES = builtin_device_config()


def pod_obj(name: str, mem: int, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "t", "creationTimestamp": f"2026-01-01T00:00:{name[-1]}0Z"},
            "spec": {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": 1,
                                                                             "nvidia.com/gpumem": mem}}}],
                     **spec},
            "status": {"phase": "Pending"}}


@dataclass
class Snap:
    revision: int
    state: ClusterState
    pods: tuple[dict[str, Any], ...]


@dataclass
class Source:
    snap: Snap
    calls: int = 0
    log: list[int] = field(default_factory=list)

    def __call__(self) -> Snap:
        self.calls += 1
        return self.snap


def loop(src: Source, limit: int = 8, plan_fn: Any = plan) -> Lookahead:
    return Lookahead(src, plan_fn, PlannerConfig(), TEMPLATES, LookaheadSettings(limit=limit, budget_ms=2000,
                                                                                   min_interval_s=0.0, poll_s=0.05))


def test_queued_pods_are_the_pending_unreserved_gpu_pods_of_this_scheduler() -> None:
    pods = [pod_obj("a1", 8000), pod_obj("b2", 8000, nodeName="n"), pod_obj("c3", 8000, schedulerName="other"),
            pod_obj("d4", 8000, schedulerName="dynamig-scheduler"),
            {**pod_obj("e5", 8000), "status": {"phase": "Succeeded"}},
            {**pod_obj("f6", 8000), "metadata": {"name": "f6", "namespace": "t",
                                                 "annotations": {"dynamig.io/allocation": "x"}}},
            {"metadata": {"name": "g7", "namespace": "t"}, "spec": {"containers": [{"name": "c"}]}}]
    assert [q.request.name for q in queued_pods(pods, "dynamig-scheduler")] == ["a1", "d4"]


def test_run_once_solves_on_change_only_and_answers_filters() -> None:
    state = ClusterState((mig_node("n"),))
    src = Source(Snap(1, state, (pod_obj("a1", 8000), pod_obj("b2", 15000))))
    la = loop(src)
    reg = CollectorRegistry(auto_describe=False)
    la.metrics = LookaheadMetrics(reg, la)
    assert la.run_once() is True
    assert la.run_once() is False  # same state object, same queue
    assert la.current is not None and set(la.current.placed) == {"t/a1", "t/b2"}
    req = la.requests["t/a1"]
    got = la.answer(req, state, ["n"])
    assert got is not None and got.placed
    text = generate_latest(reg).decode()
    assert 'dynamig_batch_solves_total{status="optimal"} 1.0' in text
    assert 'dynamig_filter_answers_total{source="batch"} 1.0' in text
    assert 'dynamig_batch_plan_pods{state="placed"} 2.0' in text
    src.snap = Snap(2, state, (pod_obj("a1", 8000),))  # b2 left the queue: re-solve
    assert la.run_once() is True and la.current is not None and la.current.queue == ("t/a1",)
    src.snap = Snap(3, state, ())
    la.run_once()
    assert la.current is None


def test_off_means_no_solve_and_plain_per_pod_answers() -> None:
    state = ClusterState((mig_node("n"),))
    la = loop(Source(Snap(1, state, (pod_obj("a1", 8000),))), limit=0)
    assert not la.enabled and la.run_once() is False and la.current is None
    la.start()  # no thread when off
    assert la._thread is None
    req: PodRequest = queued_pods([pod_obj("a1", 8000)], "dynamig-scheduler")[0].request
    assert la.answer(req, state, ["n"]) is None
    assert la.around_queue(req, state, ["n"], lambda s, r, n: plan(s, r, PlannerConfig(), (), n)).placed


def test_per_pod_answers_go_around_the_queue_when_they_can() -> None:
    state = ClusterState((mig_node("n1"), mig_node("n2")))
    src = Source(Snap(1, state, (pod_obj("a1", 39000), pod_obj("b2", 39000))))
    la = loop(src)
    la.run_once()
    small = queued_pods([pod_obj("s3", 3000)], "dynamig-scheduler")[0].request
    seen: list[ClusterState] = []

    def per_pod(s: ClusterState, r: PodRequest, n: Any) -> Plan:
        seen.append(s)
        return plan(s, r, PlannerConfig(), (), n)

    got = la.around_queue(small, state, ["n1", "n2"], per_pod)
    assert got.placed and len(seen) == 2 and seen[0] is not state  # tried around the queue first, then live


def test_the_background_thread_survives_a_failing_planner() -> None:
    state = ClusterState((mig_node("n"),))
    calls: list[int] = []

    def broken(*_: Any) -> Plan:
        calls.append(1)
        raise RuntimeError("boom")

    src = Source(Snap(1, state, (pod_obj("a1", 8000),)))
    la = loop(src, plan_fn=broken)
    la.start()
    try:
        deadline = time.monotonic() + 5
        while not calls and time.monotonic() < deadline:
            time.sleep(0.02)
        src.snap = Snap(2, ClusterState((mig_node("n"),)), (pod_obj("a1", 8000),))
        la.notify()
        while len(calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(calls) >= 2 and la._thread is not None and la._thread.is_alive()
    finally:
        la.stop()
    assert la._thread is None
