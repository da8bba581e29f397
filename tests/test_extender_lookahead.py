"""The extender with lookahead (issue 13): filters answered from the queue's batch plan, deferred pods
told why, the flags and the metrics — on the real core and planner, memory store."""

from __future__ import annotations

import re
from typing import Any

from prometheus_client import generate_latest
from test_extender_support import memory_store, pod_manifest

import solver
from extender import ExtenderConfig
from extender.core import Extender
from extender.lookahead import LookaheadMetrics
from extender.wire import parse_extender_args
from models.store import InMemoryStore

ONE_40GB = """
nodes:
  - name: solo
    mode: mig
    gpus: {model: A100-SXM4-40GB, count: 1}
"""


def make(lookahead: int) -> tuple[InMemoryStore, Extender]:
    store = memory_store(ONE_40GB)
    ext = Extender(store, ExtenderConfig(planner=solver.plan, planner_config=solver.PlannerConfig(),
                                         identity="ext-a", lookahead=lookahead, lookahead_budget_ms=2000))
    return store, ext


def filt(store: InMemoryStore, ext: Extender, name: str) -> dict[str, Any]:
    pod = store.get_pod("ml", name)
    return ext.filter(parse_extender_args({"Pod": pod, "NodeNames": ["solo"]})).result


def test_the_queue_plan_places_both_pods_the_per_pod_planner_would_not() -> None:
    results = {}
    for la in (0, 8):
        store, ext = make(la)
        for name, mem in (("a", "8000"), ("b", "15000")):
            store.create_pod(pod_manifest(name, mem=mem))
        if la:
            assert ext.lookahead is not None and ext.lookahead.run_once()
        results[la] = [bool(filt(store, ext, n)["NodeNames"]) for n in ("a", "b")]
    assert results[8] == [True, True]
    assert results[0] != [True, True], "per-pod planning alone already places both: the test shows nothing"


def test_metrics_and_deferred_reason() -> None:
    store, ext = make(8)
    for name in ("first", "second"):
        store.create_pod(pod_manifest(name, mem="39000"))
    la = ext.lookahead
    assert la is not None
    from prometheus_client import CollectorRegistry

    reg = CollectorRegistry(auto_describe=False)
    la.metrics = LookaheadMetrics(reg, la)
    assert la.run_once()
    assert filt(store, ext, "first")["NodeNames"] == ["solo"]
    out = filt(store, ext, "second")
    assert out["NodeNames"] == []
    why = out["FailedNodes"]["solo"]
    assert "queued #2 of 2" in why, why
    text = generate_latest(reg).decode()
    assert "dynamig_batch_solves_total" in text and 'dynamig_filter_answers_total{source="batch"} 1.0' in text


def test_off_by_default_and_engine_reaches_the_planner() -> None:
    store = memory_store(ONE_40GB)
    ext = Extender(store, ExtenderConfig(identity="x"))
    assert ext.lookahead is None
    _, cfg = ExtenderConfig(engine="cpsat").make_planner()
    assert cfg.engine == "cpsat"


def test_a_deferred_pod_is_told_which_recut_it_waits_for() -> None:
    store, ext = make(8)
    for name, mem in (("x", "19000"), ("y", "19000"), ("z", "39000")):
        store.create_pod(pod_manifest(name, mem=mem))
    la = ext.lookahead
    assert la is not None and la.run_once()
    assert la.current is not None and set(la.current.placed) == {"ml/x", "ml/y"}
    assert [filt(store, ext, n)["NodeNames"] for n in ("x", "y")] == [["solo"], ["solo"]]
    out = filt(store, ext, "z")
    assert out["NodeNames"] == []
    why = out["FailedNodes"]["solo"]
    want = r"GPU \S+ \(solo #0\) is being re-cut to 3g\.20gb x2 for 2 queued pods; this pod is next"
    assert re.search(want, why), why
    assert "queued #3 of 3" in why


def test_monitor_shows_what_is_planned_for_the_queue() -> None:
    from extender.monitor import monitor_state

    off = monitor_state(make(0)[1])["queue_plan"]
    assert off == {"enabled": False}
    store, ext = make(8)
    for name, mem in (("x", "19000"), ("y", "19000"), ("z", "39000")):
        store.create_pod(pod_manifest(name, mem=mem))
    la = ext.lookahead
    assert la is not None and la.run_once()
    q = monitor_state(ext)["queue_plan"]
    plan = q["plan"]
    assert q["enabled"] and plan["queue"] == 3 and plan["age_s"] >= 0 and plan["status"]
    assert sorted(p["pod"] for p in plan["placed"]) == ["ml/x", "ml/y"]
    assert all(p["node"] == "solo" and p["gpus"] == ["solo/0 3g.20gb"] for p in plan["placed"])
    assert [d["pod"] for d in plan["deferred"]] == ["ml/z"]
    assert len(plan["recuts"]) == 1 and plan["recuts"][0]["gpu"] == 0
    assert [x.split("@")[0] for x in plan["recuts"][0]["layout"]] == ["3g.20gb", "3g.20gb"]
    assert "being re-cut to 3g.20gb x2" in plan["deferred"][0]["reason"]
