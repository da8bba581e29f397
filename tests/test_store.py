from __future__ import annotations

import copy
import json
import pickle
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.codecs import NODE_LOCK
from models.errors import Conflict, NotFound
from models.nodelock import LockHeld, acquire, release
from models.store import ClusterStore, InMemoryStore, Obj, ReadOnlyError


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
    # what a reader gets is read-only: changing it fails and leaves the store as it was
    got = s.get_pod("ns", "a")
    with pytest.raises(ReadOnlyError, match="read-only"):
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


# ---- published, read-only objects (shared by readers, never by the store's own state)

def test_every_read_is_read_only_and_a_plain_copy_is_editable() -> None:
    s = make_store()
    seen: list[Obj] = []
    s.subscribe(lambda kind, obj: seen.append(obj))
    s.patch_pod_annotations("ns", "a", {"x": "1"})
    objs = [s.get_pod("ns", "a"), s.list_pods()[0], s.get_node("n1"), s.list_nodes()[0], seen[-1]]
    changes = [lambda o: o.__setitem__("kind", "Pod"), lambda o: o["metadata"].update(name="z"),
               lambda o: o["metadata"].pop("name"), lambda o: o.setdefault("spec", {}).clear(),
               lambda o: o["metadata"].__delitem__("name")]
    for o in objs:
        for change in changes:
            with pytest.raises(ReadOnlyError):
                change(o)
    for o in (objs[0], objs[1], objs[-1]):  # pods: their lists too
        with pytest.raises(ReadOnlyError):
            o["spec"]["containers"].append({})
        with pytest.raises(ReadOnlyError):
            o["spec"]["containers"][0] = {}
    assert s.get_pod("ns", "a")["metadata"]["name"] == "a" and s.get_node("n1")["metadata"]["name"] == "n1"
    # a write's answer is the caller's own copy (an API response is a new object): editable, and
    # editing it reaches neither the store nor any reader
    for answer in (s.set_pod_phase("ns", "a", "Running"), s.patch_pod_annotations("ns", "a", {"y": "2"}),
                   s.patch_node_annotations("n1", {"z": "3"}), s.create_pod({"metadata": {"name": "d"}})):
        answer["metadata"]["name"] = "edited"
        answer.pop("status", None)
    assert {p["metadata"]["name"] for p in s.list_pods()} == {"a", "b", "d"}
    assert s.get_pod("ns", "a")["status"]["phase"] == "Running" and s.get_node("n1")["metadata"]["name"] == "n1"
    plain = copy.deepcopy(s.get_pod("ns", "a"))
    assert type(plain) is dict and type(plain["spec"]["containers"]) is list
    plain["spec"]["containers"].append({"name": "d"})
    plain["metadata"]["name"] = "c"
    s.create_pod(plain)  # an edited copy goes back in as a new object
    assert len(s.get_pod("ns", "c")["spec"]["containers"]) == 2
    assert len(s.get_pod("ns", "a")["spec"]["containers"]) == 1
    assert json.loads(json.dumps(s.get_pod("ns", "a"))) == s.get_pod("ns", "a")
    assert pickle.loads(pickle.dumps(s.get_pod("ns", "a"))) == s.get_pod("ns", "a")


def test_reads_share_one_object_until_it_changes_and_a_held_object_never_changes() -> None:
    s = make_store()
    before = s.get_pod("ns", "a")
    assert s.get_pod("ns", "a") is before and before in s.list_pods()  # no copy per read
    s.patch_pod_annotations("ns", "a", {"x": "1"})
    s.bind("ns", "a", "", "n1")
    after = s.get_pod("ns", "a")
    assert after is not before and after["metadata"]["annotations"] == {"x": "1"}
    assert after["spec"]["nodeName"] == "n1" and after in s.list_pods()
    assert "annotations" not in before["metadata"] and "nodeName" not in before["spec"]  # a snapshot
    assert s.get_pod("ns", "b") is s.list_pods()[1]  # the other pod's object was not republished


def test_a_caller_cannot_reach_the_store_state_through_what_it_wrote() -> None:
    s = InMemoryStore()
    mine: Obj = {"metadata": {"name": "n", "labels": {"a": "1"}}}
    s.add_node(mine)
    mine["metadata"]["labels"]["a"] = "2"
    ann: dict[str, str | None] = {"k": "v"}
    s.patch_node_annotations("n", ann)
    ann["k"] = "w"
    assert s.get_node("n")["metadata"]["labels"] == {"a": "1"}
    assert s.get_node("n")["metadata"]["annotations"] == {"k": "v"}


class NaiveStore:
    """The reference: every object deep-copied on the way in and out (the old InMemoryStore)."""

    def __init__(self) -> None:
        self.nodes: dict[str, Obj] = {}
        self.pods: dict[tuple[str, str], Obj] = {}
        self.rv = 0

    def bump(self, obj: Obj) -> Obj:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        return copy.deepcopy(obj)


def apply_naive(m: NaiveStore, op: tuple[Any, ...]) -> Any:
    """``op`` on the reference; what it returns (a copy) or the exception type it raises."""
    kind = op[0]
    if kind == "add_node":
        node = {"metadata": {"name": op[1], "labels": dict(op[2])}}
        m.nodes[op[1]] = node
        return m.bump(node)
    if kind == "patch_node":
        if op[1] not in m.nodes:
            return NotFound
        node = m.nodes[op[1]]
        ann = node["metadata"].setdefault("annotations", {})
        for k, v in op[2].items():
            if v is None:
                ann.pop(k, None)
            else:
                ann[k] = v
        return m.bump(node)
    key = ("ns", op[1])
    if kind == "create":
        if key in m.pods:
            return Conflict
        pod = {"metadata": {"name": op[1], "namespace": "ns", "uid": f"uid-{m.rv + 1}-{op[1]}"},
               "spec": {"containers": [{"name": "c"}]}, "status": {"phase": "Pending"}}
        m.pods[key] = pod
        return m.bump(pod)
    pod_or_none = m.pods.get(key)
    if pod_or_none is None:
        return NotFound
    pod = pod_or_none
    if kind == "patch_pod":
        if op[3] is not None and pod["metadata"]["resourceVersion"] != op[3]:
            return Conflict
        ann = pod["metadata"].setdefault("annotations", {})
        for k, v in op[2].items():
            if v is None:
                ann.pop(k, None)
            else:
                ann[k] = v
        return m.bump(pod)
    if kind == "phase":
        pod["status"]["phase"] = op[2]
        return m.bump(pod)
    if kind == "bind":
        if pod["spec"].get("nodeName"):
            return Conflict
        if op[2] not in m.nodes:
            return NotFound
        pod["spec"]["nodeName"] = op[2]
        pod["status"].setdefault("conditions", []).append({"type": "PodScheduled", "status": "True"})
        m.bump(pod)
        return None
    assert kind == "delete"
    del m.pods[key]
    m.rv += 1
    return None


def apply_store(s: InMemoryStore, op: tuple[Any, ...]) -> Any:
    kind = op[0]
    try:
        if kind == "add_node":
            return s.add_node({"metadata": {"name": op[1], "labels": dict(op[2])}})
        if kind == "patch_node":
            return s.patch_node_annotations(op[1], op[2])
        if kind == "create":
            return s.create_pod({"metadata": {"name": op[1], "namespace": "ns"},
                                 "spec": {"containers": [{"name": "c"}]}})
        if kind == "patch_pod":
            return s.patch_pod_annotations("ns", op[1], op[2], resource_version=op[3])
        if kind == "phase":
            return s.set_pod_phase("ns", op[1], op[2])
        if kind == "bind":
            s.bind("ns", op[1], "", op[2])
            return None
        s.delete_pod("ns", op[1])
        return None
    except (Conflict, NotFound) as e:
        return type(e)


NAMES = st.sampled_from(["a", "b", "c"])
NODES = st.sampled_from(["n1", "n2"])
ANNS = st.dictionaries(st.sampled_from(["k1", "k2"]), st.none() | st.sampled_from(["1", "2"]), max_size=2)
OPS = st.one_of(
    st.tuples(st.just("add_node"), NODES, st.dictionaries(st.sampled_from(["gpu", "zone"]), st.just("x"))),
    st.tuples(st.just("patch_node"), NODES, ANNS),
    st.tuples(st.just("create"), NAMES),
    st.tuples(st.just("patch_pod"), NAMES, ANNS, st.none() | st.sampled_from(["1", "3", "5", "8"])),
    st.tuples(st.just("phase"), NAMES, st.sampled_from(["Running", "Succeeded"])),
    st.tuples(st.just("bind"), NAMES, NODES),
    st.tuples(st.just("delete"), NAMES),
    st.tuples(st.just("read"), st.integers(0, 10)),
)


@settings(max_examples=150, deadline=None)
@given(ops=st.lists(OPS, max_size=30))
def test_store_reads_what_a_deep_copying_store_reads(ops: list[tuple[Any, ...]]) -> None:
    """Every write returns and every read lists what the naive deep-copying store does; nothing a
    reader holds ever changes afterwards, and changing it fails without touching the store."""
    s, m = InMemoryStore(), NaiveStore()
    held: list[tuple[Obj, Obj]] = []  # (object handed out, its content then)
    for op in ops:
        if op[0] == "read":
            listed = [*s.list_pods(), *s.list_nodes()]
            assert sorted(map(repr, listed)) == sorted(map(repr, [*m.pods.values(), *m.nodes.values()]))
            if listed:
                obj = listed[op[1] % len(listed)]
                with pytest.raises(ReadOnlyError):
                    obj["metadata"]["name"] = "mutated"
                held.append((obj, copy.deepcopy(obj)))
            continue
        got, want = apply_store(s, op), apply_naive(m, op)
        assert got == want
        if isinstance(got, dict):
            held.append((got, want))
        assert s.revision() == m.rv
        for key, pod in m.pods.items():
            assert s.get_pod(*key) == pod
        for name, node in m.nodes.items():
            assert s.get_node(name) == node
    for obj, then in held:
        assert obj == then
