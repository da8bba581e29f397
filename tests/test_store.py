from __future__ import annotations

import threading

import pytest

from models.codecs import NODE_LOCK
from models.errors import Conflict, NotFound
from models.nodelock import LockHeld, acquire, release
from models.store import ClusterStore, InMemoryStore


def make_store() -> InMemoryStore:
    s = InMemoryStore()
    s.add_node({"metadata": {"name": "n1"}})
    s.create_pod({"metadata": {"name": "a", "namespace": "ns"}, "spec": {"containers": [{"name": "c"}]}})
    s.create_pod({"metadata": {"name": "b", "namespace": "ns"}, "spec": {"containers": [{"name": "c"}]}})
    return s


def test_in_memory_store_is_a_cluster_store_with_api_semantics() -> None:
    s = make_store()
    assert isinstance(s, ClusterStore)
    pod = s.get_pod("ns", "a")
    rv = pod["metadata"]["resourceVersion"]
    s.patch_pod_annotations("ns", "a", {"x": "1"}, resource_version=rv)
    with pytest.raises(Conflict, match="modified"):
        s.patch_pod_annotations("ns", "a", {"x": "2"}, resource_version=rv)
    s.patch_pod_annotations("ns", "a", {"x": None})
    assert "x" not in s.get_pod("ns", "a")["metadata"]["annotations"]
    s.bind("ns", "a", pod["metadata"]["uid"], "n1")
    with pytest.raises(Conflict, match="already assigned"):
        s.bind("ns", "a", "", "n1")
    with pytest.raises(Conflict, match="UID"):
        s.bind("ns", "b", "wrong", "n1")
    with pytest.raises(NotFound):
        s.get_pod("ns", "zzz")
    # copies, not shared references
    got = s.get_pod("ns", "a")
    got["metadata"]["name"] = "mutated"
    assert s.get_pod("ns", "a")["metadata"]["name"] == "a"


def test_node_lock_semantics() -> None:
    s = make_store()
    lock = acquire(s, "n1", "ns/a", "ext-1", now=100.0)
    assert lock.pod == "ns/a"
    assert acquire(s, "n1", "ns/a", "ext-1", now=101.0).pod == "ns/a"  # re-entrant
    with pytest.raises(LockHeld, match="locked by pod ns/a"):
        acquire(s, "n1", "ns/b", "ext-2", now=102.0)
    assert not release(s, "n1", "ns/b")  # only the holder releases
    # expiry: a stale lock is taken over, and the stale holder can no longer release it (#3096)
    acquire(s, "n1", "ns/b", "ext-2", now=101.0 + 301)
    assert not release(s, "n1", "ns/a")
    assert release(s, "n1", "ns/b")
    assert NODE_LOCK not in s.get_node("n1")["metadata"].get("annotations", {})


def test_lock_taken_over_when_its_pod_is_gone() -> None:
    s = make_store()
    acquire(s, "n1", "ns/a", "ext-1", now=100.0)
    s.delete_pod("ns", "a")
    lock = acquire(s, "n1", "ns/b", "ext-1", now=101.0, pod_exists=lambda p: p != "ns/a")
    assert lock.pod == "ns/b"


def test_concurrent_lock_takers_exactly_one_wins() -> None:
    s = make_store()
    for i in range(8):
        s.create_pod({"metadata": {"name": f"p{i}", "namespace": "ns"}, "spec": {"containers": [{"name": "c"}]}})
    winners: list[str] = []
    barrier = threading.Barrier(8)

    def take(i: int) -> None:
        barrier.wait()
        try:
            acquire(s, "n1", f"ns/p{i}", "ext", now=10.0, retries=20)
            winners.append(f"ns/p{i}")
        except LockHeld:
            pass

    threads = [threading.Thread(target=take, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
