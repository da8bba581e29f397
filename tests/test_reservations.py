"""Reservations are owned per GPU layout, re-validated at bind, and expire (issue 15, findings 2, 6).

The reproducer of finding 2: one A100-SXM4-80GB, seven 9000 MiB pods p0..p6 take the seven
1g.10gb instances of a layout that only p0's plan introduced. Filtering p0 again (as kube-scheduler
does after its bind hit "node is locked") must not lose p1..p6's claims: seven more pods get
nothing on that GPU.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from test_extender_support import memory_store, pod_manifest

import solver
from extender import ExtenderConfig
from extender.core import Extender
from extender.wire import BindingArgs, parse_extender_args
from models import nodelock
from models.cluster import state_from_objects
from models.codecs import (
    NODE_GPUS,
    NODE_LOCK,
    PHASE_FAILED,
    POD_ALLOCATION,
    POD_BIND_PHASE,
    NodeLock,
    decode_allocation,
    decode_node,
    encode_node,
)
from models.store import InMemoryStore

ONE_80GB = """
nodes:
  - name: solo
    mode: mig
    gpus: {model: A100-SXM4-80GB, count: 1}
"""


class Clock:
    """An injectable clock (seconds) so expiry tests do not sleep; every reading moves it 10 ms on,
    so reservations made one after another have distinct plan times, as they do in a cluster."""

    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        self.t += 0.01
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


def make(text: str = ONE_80GB, clock: Clock | None = None, **kw: Any) -> tuple[InMemoryStore, Extender, Clock]:
    clock = clock or Clock()
    store = memory_store(text)
    ext = Extender(store, ExtenderConfig(planner=solver.plan, planner_config=solver.PlannerConfig(),
                                         identity="ext-a", clock=clock, **kw))
    return store, ext, clock


def filt(store: InMemoryStore, ext: Extender, name: str, mem: str = "9000") -> str | None:
    try:
        pod = store.get_pod("ml", name)
    except Exception:
        pod = store.create_pod(pod_manifest(name, mem=mem))
    out = ext.filter(parse_extender_args({"Pod": pod, "NodeNames": ["solo"]}))
    names = out.result["NodeNames"]
    return names[0] if names else None


def bind(store: InMemoryStore, ext: Extender, name: str, node: str = "solo") -> str:
    pod = store.get_pod("ml", name)
    return ext.bind(BindingArgs(name, "ml", pod["metadata"]["uid"], node))


def claims(store: InMemoryStore) -> dict[str, Any]:
    """Slot -> pod over every live reservation (asserting no slot is reserved twice)."""
    seen: dict[Any, str] = {}
    for p in store.list_pods():
        raw = (p["metadata"].get("annotations") or {}).get(POD_ALLOCATION)
        if not raw or (p["metadata"].get("annotations") or {}).get(POD_BIND_PHASE) == PHASE_FAILED:
            continue
        for u in decode_allocation(raw).units:
            k = (u.node, u.gpu, u.slot)
            assert k not in seen, f"{k} reserved by {seen[k]} and {p['metadata']['name']}"
            seen[k] = p["metadata"]["name"]
    return seen


def clean(store: InMemoryStore) -> None:
    _, problems = state_from_objects(store.list_nodes(), store.list_pods())
    assert problems == [], problems


def test_refilter_of_the_layout_owner_keeps_the_others_claims() -> None:
    store, ext, _ = make()
    for i in range(7):
        assert filt(store, ext, f"p{i}") == "solo"
    assert len(claims(store)) == 7
    clean(store)
    # p0's bind lost the node lock race; kube-scheduler filters it again
    assert filt(store, ext, "p0") == "solo"
    clean(store)
    assert len(claims(store)) == 7
    placed = [filt(store, ext, f"q{i}") for i in range(7)]
    assert placed == [None] * 7, placed
    assert len(claims(store)) == 7
    clean(store)


def test_deleting_or_failing_the_layout_owner_keeps_the_layout() -> None:
    store, ext, _ = make()
    for i in range(7):
        assert filt(store, ext, f"p{i}") == "solo"
    store.delete_pod("ml", "p0")
    store.patch_pod_annotations("ml", "p1", {POD_BIND_PHASE: PHASE_FAILED})
    clean(store)
    # two instances came free: exactly two new pods fit, on the same layout
    placed = [filt(store, ext, f"q{i}") for i in range(4)]
    assert placed == ["solo", "solo", None, None], placed
    clean(store)
    assert len(claims(store)) == 7
    state = ext.snapshot().state
    (gpu,) = state.node("solo").gpus
    assert sorted(i.slot.profile for i in gpu.instances) == ["1g.10gb"] * 7


def test_bind_revalidates_the_reservation_against_live_state() -> None:
    store, ext, _ = make()
    assert filt(store, ext, "a", mem="70000") == "solo"
    # the device plugin re-registers the node: the GPU fell off the bus, a's instance is gone
    raw = store.get_node("solo")["metadata"]["annotations"][NODE_GPUS]
    store.patch_node_annotations("solo", {NODE_GPUS: encode_node(replace(decode_node(raw), gpus=()))})
    err = bind(store, ext, "a")
    assert "no longer holds" in err and "filter" in err, err
    assert not store.get_pod("ml", "a")["spec"].get("nodeName")
    lock = (store.get_node("solo")["metadata"].get("annotations") or {}).get(NODE_LOCK)
    assert not lock


def test_reservations_of_unbound_pods_expire_and_refilter_renews() -> None:
    store, ext, clock = make(reservation_ttl_s=180.0)
    assert filt(store, ext, "big", mem="80000") == "solo"
    assert filt(store, ext, "other", mem="80000") is None  # the GPU is reserved
    clock.advance(100)
    assert filt(store, ext, "big", mem="80000") == "solo"  # renewed
    clock.advance(100)
    assert filt(store, ext, "other", mem="80000") is None  # 100 s since renewal: still reserved
    clock.advance(81)
    assert filt(store, ext, "other", mem="80000") == "solo"  # big's reservation expired
    # the store still holds big's stale annotation; the extender's view drops it
    snap = ext.snapshot()
    assert "ml/big" not in snap.allocated and "ml/other" in snap.allocated
    err = bind(store, ext, "big")
    assert "expired" in err, err


def test_bound_pods_never_expire() -> None:
    store, ext, clock = make(reservation_ttl_s=60.0)
    assert filt(store, ext, "big", mem="80000") == "solo"
    assert bind(store, ext, "big") == ""
    clock.advance(10_000)
    assert filt(store, ext, "other", mem="80000") is None


def test_node_lock_of_a_dead_holder_is_freed_early() -> None:
    store, ext, clock = make(holder_alive=lambda owner: owner == "ext-a")
    assert filt(store, ext, "a", mem="9000") == "solo"
    assert filt(store, ext, "b", mem="9000") == "solo"
    # another extender (identity ext-dead) crashed between taking the lock for "a" and binding it
    store.patch_node_annotations("solo", {NODE_LOCK: NodeLock(clock(), "ml/a", "ext-dead").encode()})
    assert bind(store, ext, "b") == ""  # ext-dead is not the Lease holder: its lock is broken


def test_node_lock_of_a_live_holder_is_respected() -> None:
    store, ext, clock = make(holder_alive=lambda owner: owner == "ext-live")
    assert filt(store, ext, "a", mem="9000") == "solo"
    assert filt(store, ext, "b", mem="9000") == "solo"
    store.patch_node_annotations("solo", {NODE_LOCK: NodeLock(clock(), "ml/a", "ext-live").encode()})
    err = bind(store, ext, "b")
    assert "locked" in err, err
    # a lock whose pod is already bound waits for the device plugin, whoever took it
    store.patch_node_annotations("solo", {NODE_LOCK: None})
    assert bind(store, ext, "a") == ""
    store.patch_node_annotations("solo", {NODE_LOCK: NodeLock(clock(), "ml/a", "ext-dead").encode()})
    assert "locked" in bind(store, ext, "b")
    clock.advance(nodelock.DEFAULT_EXPIRY_S + 1)
    assert filt(store, ext, "b", mem="9000") == "solo"  # its reservation expired meanwhile: renew it
    assert bind(store, ext, "b") == ""
