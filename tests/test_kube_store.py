"""kube/: KubeStore, node lock and Lease against a fake API server speaking the real REST paths."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fakes.apiserver import MICRO_TIME, FakeApiServer

from kube import KubeClient, KubeStore, LeaderElector, micro_time, parse_micro_time
from models import nodelock
from models.codecs import NODE_LOCK, decode_lock
from models.errors import Conflict, NotFound


def eventually(cond: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def gpu_pod(name: str, ns: str = "ml", **ann: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns, "annotations": dict(ann),
                         "managedFields": [{"manager": "kubectl"}]},
            "spec": {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}


def cpu_pod(name: str, ns: str = "ml") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns}, "spec": {"containers": [{"name": "c"}]}}


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    srv = FakeApiServer()
    srv.start()
    srv.add_node({"metadata": {"name": "n1", "annotations": {"a": "1"}}})
    srv.add_node({"metadata": {"name": "n2"}})
    yield srv
    srv.stop()


@pytest.fixture
def store(api: FakeApiServer) -> Iterator[KubeStore]:
    s = KubeStore(KubeClient.for_host(api.url), watch_timeout_s=1, backoff_min_s=0.05, backoff_max_s=0.2)
    s.start()
    assert s.wait_synced(5)
    yield s
    s.stop()


def pod_names(store: KubeStore) -> set[str]:
    return {p["metadata"]["name"] for p in store.list_pods()}


def test_list_and_watch_keep_gpu_pods_and_nodes(api: FakeApiServer, store: KubeStore) -> None:
    assert {n["metadata"]["name"] for n in store.list_nodes()} == {"n1", "n2"}
    assert all("managedFields" not in n["metadata"] for n in store.list_nodes())
    rev = store.revision()
    api.create_pod(gpu_pod("g1"))
    api.create_pod(cpu_pod("web"))
    api.create_pod({**cpu_pod("tagged"), "metadata": {"name": "tagged", "namespace": "ml",
                                                      "annotations": {"dynamig.io/node": "n1"}}})
    eventually(lambda: pod_names(store) == {"g1", "tagged"})
    assert store.revision() > rev
    assert all("managedFields" not in p["metadata"] for p in store.list_pods())
    # a CPU pod that gains a dynamig annotation becomes interesting; a GPU pod that is deleted goes
    api.update_pod("ml", "web", lambda o: o["metadata"].setdefault("annotations", {}).update({"dynamig.io/x": "1"}))
    api.delete_pod("ml", "g1")
    eventually(lambda: pod_names(store) == {"web", "tagged"})
    api.add_node({"metadata": {"name": "n3"}})
    eventually(lambda: len(store.list_nodes()) == 3)
    assert store.has_synced()


def test_list_is_paginated(api: FakeApiServer) -> None:
    for i in range(7):
        api.create_pod(gpu_pod(f"p{i}"))
    s = KubeStore(KubeClient.for_host(api.url), page_size=3, watch_timeout_s=1).start()
    try:
        assert s.wait_synced(5)
        assert len(s.list_pods()) == 7
        pages = [b for m, p, _, b in api.requests if m == "GET" and p == "/api/v1/pods"]
        assert len(pages) == 3
    finally:
        s.stop()


def test_gone_relists_and_catches_up(api: FakeApiServer, store: KubeStore) -> None:
    relists = (store.pod_informer.relists, store.node_informer.relists)
    api.compact()  # a watch resuming from any version seen so far now gets ERROR 410 Gone
    api.drop_watches()
    api.create_pod(gpu_pod("during-gap"))
    api.add_node({"metadata": {"name": "n9"}})
    eventually(lambda: "during-gap" in pod_names(store) and len(store.list_nodes()) == 3)
    assert store.pod_informer.relists == relists[0] + 1 and store.node_informer.relists == relists[1] + 1
    watches = [b for m, p, _, b in api.requests if p == "/api/v1/pods?watch"]
    assert int(watches[-1]["resourceVersion"]) >= api.compacted  # watching again from the relist
    api.create_pod(gpu_pod("after"))
    eventually(lambda: {"during-gap", "after"} <= pod_names(store))


def test_watch_timeout_resumes_without_relist(api: FakeApiServer, store: KubeStore) -> None:
    relists = store.pod_informer.relists
    watches = store.pod_informer.watches
    eventually(lambda: store.pod_informer.watches > watches, timeout=5)  # timeoutSeconds elapsed, re-watched
    api.create_pod(gpu_pod("x"))
    eventually(lambda: "x" in pod_names(store))
    assert store.pod_informer.relists == relists
    watch_rvs = [b.get("resourceVersion") for m, p, _, b in api.requests if p == "/api/v1/pods?watch"]
    assert all(watch_rvs) and watch_rvs == sorted(watch_rvs, key=int)


def test_list_failure_backs_off_and_recovers(api: FakeApiServer) -> None:
    api.fail_next("GET", r"^/api/v1/pods$", 500)
    api.fail_next("GET", r"^/api/v1/pods$", 503)
    s = KubeStore(KubeClient.for_host(api.url), watch_timeout_s=1, backoff_min_s=0.05).start()
    try:
        assert s.wait_synced(5)
        assert api.count("GET", r"^/api/v1/pods$") >= 3
    finally:
        s.stop()


def test_merge_patch_with_resource_version(api: FakeApiServer, store: KubeStore) -> None:
    api.create_pod(gpu_pod("p", **{"dynamig.io/old": "x"}))
    pod = store.get_pod("ml", "p")
    rv = pod["metadata"]["resourceVersion"]
    rev = store.revision()
    out = store.patch_pod_annotations("ml", "p", {"dynamig.io/new": "1", "dynamig.io/old": None}, rv)
    method, path, ctype, body = api.requests[-1]
    assert (method, path, ctype) == ("PATCH", "/api/v1/namespaces/ml/pods/p", "application/merge-patch+json")
    assert body == {"metadata": {"annotations": {"dynamig.io/new": "1", "dynamig.io/old": None},
                                 "resourceVersion": rv}}
    assert out["metadata"]["annotations"] == {"dynamig.io/new": "1"}
    # read-your-writes: the cache has it now, and the watch echo does not count as another change
    cached = store.cached_pod("ml", "p")
    assert cached is not None and cached["metadata"]["annotations"] == {"dynamig.io/new": "1"}
    assert store.revision() == rev + 1
    time.sleep(0.2)
    assert store.revision() == rev + 1
    # stale resourceVersion -> Conflict; re-read and retry -> ok
    with pytest.raises(Conflict):
        store.patch_pod_annotations("ml", "p", {"dynamig.io/new": "2"}, rv)
    fresh = store.get_pod("ml", "p")["metadata"]["resourceVersion"]
    assert store.patch_pod_annotations("ml", "p", {"dynamig.io/new": "2"}, fresh)["metadata"]["annotations"][
        "dynamig.io/new"] == "2"
    # unguarded patches apply; missing objects are NotFound
    store.patch_node_annotations("n1", {"dynamig.io/x": "y"})
    assert api.node("n1")["metadata"]["annotations"] == {"a": "1", "dynamig.io/x": "y"}
    with pytest.raises(NotFound):
        store.patch_pod_annotations("ml", "ghost", {"a": "b"})
    with pytest.raises(NotFound):
        store.get_node("ghost")


def test_binding_subresource(api: FakeApiServer, store: KubeStore) -> None:
    uid = api.create_pod(gpu_pod("p"))["metadata"]["uid"]
    with pytest.raises(Conflict, match="Precondition"):
        store.bind("ml", "p", "wrong-uid", "n1")
    store.bind("ml", "p", uid, "n1")
    method, path, ctype, body = api.requests[-1]
    assert (method, path, ctype) == ("POST", "/api/v1/namespaces/ml/pods/p/binding", "application/json")
    assert body == {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p", "namespace": "ml", "uid": uid},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": "n1"}}
    assert api.pod("ml", "p")["spec"]["nodeName"] == "n1"
    with pytest.raises(Conflict, match="already assigned"):
        store.bind("ml", "p", uid, "n2")
    with pytest.raises(NotFound):
        store.bind("ml", "ghost", "", "n1")
    eventually(lambda: (store.cached_pod("ml", "p") or {}).get("spec", {}).get("nodeName") == "n1")


def test_node_lock_over_kube(api: FakeApiServer, store: KubeStore) -> None:
    api.create_pod(gpu_pod("a"))
    api.create_pod(gpu_pod("b"))

    def exists(key: str) -> bool:
        ns, name = key.split("/")
        try:
            store.get_pod(ns, name)
        except NotFound:
            return False
        return True

    t0 = 1_000_000.0
    lock = nodelock.acquire(store, "n1", "ml/a", "ext-1", t0, expiry_s=300, pod_exists=exists)
    assert decode_lock(api.node("n1")["metadata"]["annotations"][NODE_LOCK]) == lock
    assert lock.owner == "ext-1"
    patches = [b for m, p, c, b in api.requests if m == "PATCH" and p == "/api/v1/nodes/n1"]
    assert patches[-1]["metadata"]["resourceVersion"]  # taken with a guarded merge patch
    # re-entrant for the same pod; refused for another live pod
    nodelock.acquire(store, "n1", "ml/a", "ext-1", t0 + 1, pod_exists=exists)
    with pytest.raises(nodelock.LockHeld):
        nodelock.acquire(store, "n1", "ml/b", "ext-1", t0 + 2, pod_exists=exists)
    # expired: b takes it over; a's late release must not free b's lock (HAMi #3096/#2214)
    nodelock.acquire(store, "n1", "ml/b", "ext-2", t0 + 400, expiry_s=300, pod_exists=exists)
    assert nodelock.release(store, "n1", "ml/a") is False
    assert decode_lock(api.node("n1")["metadata"]["annotations"][NODE_LOCK]).pod == "ml/b"
    # holder's pod gone: taken over at once, long before expiry
    api.delete_pod("ml", "b")
    nodelock.acquire(store, "n1", "ml/a", "ext-1", t0 + 401, expiry_s=300, pod_exists=exists)
    assert nodelock.release(store, "n1", "ml/a") is True
    assert NODE_LOCK not in api.node("n1")["metadata"]["annotations"]


def test_node_lock_race_one_winner(api: FakeApiServer, store: KubeStore) -> None:
    from concurrent.futures import ThreadPoolExecutor

    for i in range(6):
        api.create_pod(gpu_pod(f"r{i}"))

    def take(i: int) -> bool:
        try:
            nodelock.acquire(store, "n2", f"ml/r{i}", "ext", time.time(), pod_exists=lambda _k: True)
            return True
        except nodelock.LockHeld:
            return False

    with ThreadPoolExecutor(6) as ex:
        won = list(ex.map(take, range(6)))
    assert won.count(True) == 1


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_micro_time() -> None:
    s = micro_time(1_740_816_000.0)
    assert s == "2025-03-01T08:00:00.000000Z" and MICRO_TIME.match(s)
    assert parse_micro_time(s) == 1_740_816_000.0
    assert MICRO_TIME.match(micro_time(1_740_816_000.123456789))


def test_lease_acquire_renew_and_lose(api: FakeApiServer) -> None:
    clock = Clock()
    a = LeaderElector(KubeClient.for_host(api.url), "kube-system", "dyn", "host-a_1", clock=clock)
    b = LeaderElector(KubeClient.for_host(api.url), "kube-system", "dyn", "host-b_2", clock=clock)
    assert a.try_acquire_or_renew() and a.is_leader is False  # is_leader is the loop's view
    lease = api.lease("kube-system", "dyn")
    spec = lease["spec"]
    assert spec["holderIdentity"] == "host-a_1" and spec["leaseDurationSeconds"] == 15
    assert spec["leaseTransitions"] == 0 and MICRO_TIME.match(spec["renewTime"])
    assert spec["acquireTime"] == spec["renewTime"]
    # b sees a fresh record: backs off
    assert b.try_acquire_or_renew() is False
    clock.t += 2
    assert a.try_acquire_or_renew()  # renew: renewTime moves, acquireTime and transitions do not
    spec2 = api.lease("kube-system", "dyn")["spec"]
    assert spec2["acquireTime"] == spec["acquireTime"] and spec2["renewTime"] != spec["renewTime"]
    assert spec2["leaseTransitions"] == 0
    puts = [b_ for m, p, _, b_ in api.requests if m == "PUT"]
    assert puts[-1]["metadata"]["resourceVersion"]  # guarded update
    # b keeps seeing changes (a renews) -> still backs off even after 15 s in total
    for _ in range(8):
        clock.t += 2
        assert a.try_acquire_or_renew()
        assert b.try_acquire_or_renew() is False
    # a stops renewing: 15 s after b *observed* the last change, b takes over
    clock.t += 14
    assert b.try_acquire_or_renew() is False
    clock.t += 2
    assert b.try_acquire_or_renew() is True
    spec3 = api.lease("kube-system", "dyn")["spec"]
    assert spec3["holderIdentity"] == "host-b_2" and spec3["leaseTransitions"] == 1
    assert spec3["acquireTime"] == micro_time(clock.t)
    # a comes back: its record is stale, b's is fresh -> a cannot renew
    assert a.try_acquire_or_renew() is False


def test_lease_conflict_is_lost_race(api: FakeApiServer) -> None:
    clock = Clock()
    a = LeaderElector(KubeClient.for_host(api.url), "ns", "l", "a", clock=clock)
    assert a.try_acquire_or_renew()
    api.fail_next("PUT", r"/leases/l$", 409)
    clock.t += 2
    assert a.try_acquire_or_renew() is False
    api.fail_next("POST", r"/leases$", 409)
    c = LeaderElector(KubeClient.for_host(api.url), "ns", "other", "c", clock=clock)
    assert c.try_acquire_or_renew() is False  # someone created it first


def test_leader_loop_and_release(api: FakeApiServer) -> None:
    events: list[str] = []
    e = LeaderElector(KubeClient.for_host(api.url), "ns", "loop", "me", lease_duration_s=1.5,
                      renew_deadline_s=1.0, retry_period_s=0.1,
                      on_started_leading=lambda: events.append("start"),
                      on_stopped_leading=lambda: events.append("stop"))
    e.start()
    try:
        eventually(lambda: e.is_leader, timeout=3)
        first = api.lease("ns", "loop")["spec"]["renewTime"]
        eventually(lambda: api.lease("ns", "loop")["spec"]["renewTime"] != first, timeout=3)
        # the API refuses renewals: the leader steps down after the renew deadline
        for _ in range(40):
            api.fail_next("PUT", r"/leases/loop$", 500)
        eventually(lambda: not e.is_leader, timeout=4)
        api.failures.clear()
        eventually(lambda: e.is_leader, timeout=4)  # and comes back when it can renew again
    finally:
        e.stop(release=True)
    assert api.lease("ns", "loop")["spec"]["holderIdentity"] == ""
    assert events[:2] == ["start", "stop"] and events[-1] == "stop"


def test_namespace_labels(api: FakeApiServer, store: KubeStore) -> None:
    api.add_namespace("quiet", {"dynamig.io/webhook": "ignore"})
    assert store.namespace_labels("quiet") == {"dynamig.io/webhook": "ignore"}
    assert store.namespace_labels("missing") == {}


def test_kubernetes_pin_matches_the_client_api_used() -> None:
    """kube/client.py calls ApiClient.param_serialize, which the client has from 37.0 (generated with
    openapi-generator 7); 36.x and older have only call_api with path parameters."""
    import re
    import tomllib
    from pathlib import Path

    import kubernetes

    deps = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"][
        "dependencies"]
    (pin,) = [d for d in deps if re.match(r"kubernetes\b(?!-)", d)]
    low = re.search(r">=\s*(\d+)", pin)
    assert low is not None and int(low.group(1)) >= 37, pin
    assert hasattr(kubernetes.client.ApiClient, "param_serialize")
    assert int(kubernetes.__version__.split(".")[0]) >= 37
