"""The extender over a KubeStore and a fake API server: filter -> bind end to end, a stale pod
resourceVersion from the scheduler's cache, a restart between filter and bind, and a race."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from fakes.apiserver import FakeApiServer
from test_extender_support import as_scheduler_sends, bind_body, cluster, filter_body, pod_manifest

import solver
from extender import ExtenderConfig, ServerHandle, create_app, serve_in_thread
from kube import KubeClient, KubeStore
from models.cluster import state_from_objects
from models.codecs import NODE_LOCK, POD_ALLOCATION, POD_BIND_PHASE, POD_NODE, decode_allocation, decode_lock
from models.store import node_objects

SOLO = """
nodes:
  - name: solo
    mode: mig
    gpus: {model: A100-SXM4-40GB, count: 1}
  - name: other
    mode: mig
    gpus: {model: A100-SXM4-40GB, count: 1}
"""


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    srv = FakeApiServer()
    srv.start()
    for obj in node_objects(cluster(SOLO)):
        srv.add_node(obj)
    yield srv
    srv.stop()


class Extender:
    """A KubeStore plus the app on loopback: one extender process."""

    def __init__(self, api: FakeApiServer, name: str, **cfg: Any) -> None:
        self.store = KubeStore(KubeClient.for_host(api.url), watch_timeout_s=2, backoff_min_s=0.05).start()
        assert self.store.wait_synced(5)
        self.handle: ServerHandle = serve_in_thread(create_app(self.store, ExtenderConfig(identity=name, **cfg)))
        self.http = httpx.Client(base_url=self.handle.url, timeout=20)

    def stop(self) -> None:
        self.http.close()
        self.handle.stop()
        self.store.stop()


def wait_for_pod(store: KubeStore, ns: str, name: str) -> None:
    deadline = time.monotonic() + 5
    while store.cached_pod(ns, name) is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def no_double_allocation(api: FakeApiServer) -> None:
    with api.lock:
        nodes, pods = list(api.nodes.values()), list(api.pods.values())
    _, problems = state_from_objects(nodes, pods)
    assert problems == []


def test_filter_then_bind_through_the_api(api: FakeApiServer) -> None:
    ext = Extender(api, "ext-a")
    try:
        pod = api.create_pod(pod_manifest("train", mem="10000"))
        wait_for_pod(ext.store, "ml", "train")
        doc = ext.http.post("/filter", json=filter_body(pod, ["solo", "other"])).json()
        assert doc["Error"] == "" and len(doc["NodeNames"]) == 1
        node = doc["NodeNames"][0]
        patches = [(c, b) for m, p, c, b in api.requests if m == "PATCH" and p == "/api/v1/namespaces/ml/pods/train"]
        ctype, body = patches[0]
        assert ctype == "application/merge-patch+json"
        assert body["metadata"]["resourceVersion"] == pod["metadata"]["resourceVersion"]
        stored = api.pod("ml", "train")["metadata"]["annotations"]
        assert stored[POD_NODE] == node and decode_allocation(stored[POD_ALLOCATION]).node == node
        assert ext.http.post("/bind", json=bind_body(pod, node)).json() == {"Error": ""}
        got = api.pod("ml", "train")
        assert got["spec"]["nodeName"] == node and got["metadata"]["annotations"][POD_BIND_PHASE] == "allocating"
        lock = decode_lock(api.node(node)["metadata"]["annotations"][NODE_LOCK])
        assert lock.pod == "ml/train" and lock.owner == "ext-a"
        # a second bind (scheduler retry): 409 from the API -> Error, HTTP 200; our lock is released
        again = ext.http.post("/bind", json=bind_body(pod, node))
        assert again.status_code == 200 and "already assigned" in again.json()["Error"]
        no_double_allocation(api)
    finally:
        ext.stop()


def test_stale_resource_version_from_scheduler_cache_is_retried(api: FakeApiServer) -> None:
    ext = Extender(api, "ext-a")
    try:
        pod = api.create_pod(pod_manifest("p", mem="3000"))
        stale = as_scheduler_sends(pod)
        # the pod changes after the scheduler cached it (a status update by the scheduler itself)
        api.update_pod("ml", "p", lambda o: o["status"].update({"conditions": [{"type": "PodScheduled",
                                                                                "status": "False"}]}))
        doc = ext.http.post("/filter", json={"Pod": stale, "Nodes": None, "NodeNames": ["solo"]}).json()
        assert doc["NodeNames"] == ["solo"], doc
        conflicts = [b for m, p, c, b in api.requests if m == "PATCH" and p.endswith("/pods/p")]
        assert len(conflicts) == 2  # 409 with the cached version, then success with the fresh one
        assert POD_ALLOCATION in api.pod("ml", "p")["metadata"]["annotations"]
    finally:
        ext.stop()


def test_restart_between_filter_and_bind(api: FakeApiServer) -> None:
    first = Extender(api, "ext-a")
    a = api.create_pod(pod_manifest("a", gpu="1"))  # a whole GPU
    wait_for_pod(first.store, "ml", "a")
    assert first.http.post("/filter", json=filter_body(a, ["solo"])).json()["NodeNames"] == ["solo"]
    first.stop()  # the extender dies after filter, before bind: it held nothing but the annotations

    second = Extender(api, "ext-b")
    try:
        b = api.create_pod(pod_manifest("b", gpu="1"))
        wait_for_pod(second.store, "ml", "b")
        # the new process rebuilt the state from the annotations: solo's GPU is taken by a
        doc = second.http.post("/filter", json=filter_body(b, ["solo"])).json()
        assert doc["NodeNames"] == [] and "solo" in doc["FailedNodes"]
        doc = second.http.post("/filter", json=filter_body(b, ["solo", "other"])).json()
        assert doc["NodeNames"] == ["other"]
        # and the bind of a (started by the dead extender's scheduler cycle) completes here
        assert second.http.post("/bind", json=bind_body(a, "solo")).json() == {"Error": ""}
        assert api.pod("ml", "a")["spec"]["nodeName"] == "solo"
        assert decode_lock(api.node("solo")["metadata"]["annotations"][NODE_LOCK]).owner == "ext-b"
        no_double_allocation(api)
        allocs = [decode_allocation(p["metadata"]["annotations"][POD_ALLOCATION]) for p in api.pods.values()]
        assert sorted(x.node for x in allocs) == ["other", "solo"]
    finally:
        second.stop()


def test_race_for_last_gpu_over_kube(api: FakeApiServer) -> None:
    n = 4
    barrier = threading.Barrier(n, timeout=10)
    count = {"n": 0}
    lock = threading.Lock()

    def plan(state: Any, pod: Any, config: Any, pending: Any = (), nodes: Any = None) -> Any:
        with lock:
            count["n"] += 1
            gate = count["n"] <= n
        out = solver.plan(state, pod, config, pending, nodes)
        if gate:
            barrier.wait()
        return out

    ext = Extender(api, "ext-a", planner=plan, planner_config=solver.PlannerConfig(), max_concurrent_solves=n)
    try:
        pods = [api.create_pod(pod_manifest(f"w{i}", gpu="1")) for i in range(n)]
        for p in pods:
            wait_for_pod(ext.store, "ml", p["metadata"]["name"])
        with ThreadPoolExecutor(n) as ex:
            docs = list(ex.map(lambda p: ext.http.post("/filter", json=filter_body(p, ["solo"])).json(), pods))
        assert sum(1 for d in docs if d["NodeNames"]) == 1, docs
        no_double_allocation(api)
    finally:
        ext.stop()
