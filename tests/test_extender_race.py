"""Concurrent filters racing for the last free capacity: exactly one wins; the loser re-plans
elsewhere or fails. The planner is wrapped so that every racer plans on the same snapshot before
any of them reserves (the worst interleaving), then the real planner decides."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from test_extender_support import filter_body, memory_store, pod_manifest

import solver
from extender import ExtenderConfig, create_app, serve_in_thread
from extender.core import Extender
from extender.wire import parse_extender_args
from models.cluster import state_from_objects
from models.codecs import POD_ALLOCATION, decode_allocation

ONE_GPU = """
nodes:
  - name: solo
    mode: mig
    gpus: {model: A100-SXM4-40GB, count: 1}
"""

TWO_NODES = """
nodes:
  - name: a
    mode: hami-core
    gpus: {model: A100-SXM4-80GB, count: 1}
    split: 1
  - name: b
    mode: hami-core
    gpus: {model: A100-SXM4-80GB, count: 1}
    split: 1
"""


def gated_planner(n: int) -> Any:
    """solver.plan, but the first ``n`` calls wait for each other (all plan on the same state)."""
    barrier = threading.Barrier(n, timeout=10)
    calls = {"n": 0}
    lock = threading.Lock()

    def plan(state: Any, pod: Any, config: Any, pending: Sequence[Any] = (), nodes: Any = None) -> Any:
        with lock:
            calls["n"] += 1
            first = calls["n"] <= n
        out = solver.plan(state, pod, config, pending, nodes)
        if first:
            barrier.wait()
        return out

    return plan, calls


def no_double_allocation(store: Any) -> None:
    _, problems = state_from_objects(store.list_nodes(), store.list_pods())
    assert problems == [], problems


def test_racing_filters_for_last_instance_exactly_one_wins() -> None:
    store = memory_store(ONE_GPU)
    n = 6
    pods = [store.create_pod(pod_manifest(f"whole-{i}", gpu="1")) for i in range(n)]  # each wants the whole GPU
    plan, calls = gated_planner(n)
    app = create_app(store, ExtenderConfig(planner=plan, planner_config=solver.PlannerConfig(),
                                           max_concurrent_solves=n))
    with serve_in_thread(app) as h, httpx.Client(base_url=h.url, timeout=20) as http, ThreadPoolExecutor(n) as ex:
        results = list(ex.map(lambda p: http.post("/filter", json=filter_body(p, ["solo"])).json(), pods))
    winners = [r for r in results if r["NodeNames"]]
    assert len(winners) == 1, results
    assert all(r["Error"] == "" for r in results)
    losers = [r for r in results if not r["NodeNames"]]
    assert all(r["NodeNames"] == [] and r["FailedNodes"].get("solo") for r in losers)
    reserved = [p for p in store.list_pods() if (p["metadata"].get("annotations") or {}).get(POD_ALLOCATION)]
    assert len(reserved) == 1
    assert calls["n"] > n  # the losers planned again on the fresh state
    no_double_allocation(store)


def test_loser_replans_onto_the_other_node() -> None:
    store = memory_store(TWO_NODES)  # two GPUs, one share each: room for exactly two pods
    pods = [store.create_pod(pod_manifest(f"p{i}", mem="1000", cores="10")) for i in range(2)]
    plan, _ = gated_planner(2)
    ext = Extender(store, ExtenderConfig(planner=plan, planner_config=solver.PlannerConfig()))
    with ThreadPoolExecutor(2) as ex:
        outs = list(ex.map(lambda p: ext.filter(parse_extender_args(filter_body(p, ["a", "b"]))), pods))
    nodes = sorted(o.result["NodeNames"][0] for o in outs)
    assert nodes == ["a", "b"], [o.result for o in outs]
    allocs = [decode_allocation(p["metadata"]["annotations"][POD_ALLOCATION]) for p in store.list_pods()]
    assert sorted(a.node for a in allocs) == ["a", "b"]
    no_double_allocation(store)


def test_many_concurrent_filters_never_overcommit() -> None:
    store = memory_store(TWO_NODES.replace("split: 1", "split: 3"))  # 6 shares in all
    pods = [store.create_pod(pod_manifest(f"p{i}", mem="1000", cores="10")) for i in range(12)]
    app = create_app(store, ExtenderConfig(max_concurrent_solves=4))
    with serve_in_thread(app) as h, httpx.Client(base_url=h.url, timeout=20) as http, ThreadPoolExecutor(12) as ex:
        results = list(ex.map(lambda p: http.post("/filter", json=filter_body(p, ["a", "b"])).json(), pods))
    placed = [r["NodeNames"][0] for r in results if r["NodeNames"]]
    assert len(placed) == 6 and placed.count("a") == 3 and placed.count("b") == 3
    no_double_allocation(store)
