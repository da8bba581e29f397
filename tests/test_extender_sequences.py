"""Randomised operation sequences over the extender core and the in-memory store (issue 15, finding 2).

Operations: create, filter (kube-scheduler's first try), re-filter (after a lost bind), bind,
allocate (what the device plugin does after a bind: realise the pod's layouts on the node's
registration, serve its instances, release the node lock), a mig-parted fault (the allocation
fails), finish, delete, reservation expiry (the clock jumps past the TTL) and an extender restart
(a new process rebuilds everything from the store). After every step:

- no MIG slot is reserved twice among live reservations (live: not finished, not deleted, not
  failed, not expired);
- every live claim rebuilds without conflict (``state_from_objects`` reports no problem);
- ``models.validate`` accepts the whole state as one plan from the registered cluster;
- an allocation that is not an injected fault always succeeds: its instances exist after its
  layouts are realised, no instance is served to two live pods, no held instance is destroyed.

Planner: the first-fit ``fake_plan`` (fast, and it re-partitions idle GPUs, which is what the
layout ownership bugs need), plus a shorter run with ``solver.plan``.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest
from test_extender_support import TEMPLATES, fake_plan, memory_store, pod_manifest

import solver
from extender import ExtenderConfig
from extender.core import Extender, reservation_expiry
from extender.wire import BindingArgs, parse_extender_args
from models.cluster import active_allocation, state_from_objects
from models.codecs import (
    NODE_GPUS,
    NODE_LOCK,
    PHASE_FAILED,
    PHASE_SUCCESS,
    POD_ALLOCATION,
    POD_BIND_PHASE,
    POD_NODE,
    decode_allocation,
    decode_node,
    encode_node,
)
from models.errors import NotFound
from models.plan import LayoutChange, Plan, PodPlacement
from models.requests import parse_pod
from models.store import InMemoryStore
from models.types import MigInstance
from models.validate import validate

CLUSTER = """
nodes:
  - name: mig-a
    mode: mig
    gpus: {model: A100-SXM4-80GB, count: 1}
  - name: mig-b
    mode: mig
    gpus: {model: A100-SXM4-40GB, count: 2}
  - name: share-0
    mode: hami-core
    gpus: {model: A100-SXM4-80GB, count: 1}
    split: 4
"""
NODES = ["mig-a", "mig-b", "share-0"]
MEMS = ["4000", "9000", "10000", "19000", "39000", "70000"]
TTL = 180.0


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        self.t += 0.01
        return self.t


class World:
    """The cluster, the extender and a stand-in device plugin, checked after every step."""

    def __init__(self, seed: int, planner: Any, planner_config: Any) -> None:
        self.rng = random.Random(seed)
        self.store: InMemoryStore = memory_store(CLUSTER)
        self.clock = Clock()
        self.planner = (planner, planner_config)
        self.generation = 0
        self.ext = self._extender()
        self.served: dict[tuple[str, str, Any], str] = {}  # instance -> pod it was served to
        self.n = 0
        self.steps = 0
        self.counts: dict[str, int] = {}
        self._pods: tuple[int, list[dict[str, Any]]] | None = None
        self._requests: dict[tuple[str, str], Any] = {}
        self._decoded: dict[str, Any] = {}
        self._registered: tuple[tuple[str, ...], Any] | None = None

    def _extender(self) -> Extender:
        self.generation += 1
        me = f"ext-{self.generation}"
        fn, cfg = self.planner
        return Extender(self.store, ExtenderConfig(planner=fn, planner_config=cfg, identity=me, clock=self.clock,
                                                   reservation_ttl_s=TTL, holder_alive=lambda o: o == me))

    # ------------------------------------------------------------------ helpers
    def pods(self) -> list[dict[str, Any]]:
        """The store's pods, read-only and without the copy that list_pods makes (the checks run
        after every step; the test never modifies what it reads)."""
        rev = self.store.revision()
        if self._pods is None or self._pods[0] != rev:
            with self.store._lock:
                self._pods = (rev, list(self.store._pods.values()))
        return self._pods[1]

    def request(self, p: dict[str, Any]) -> Any:
        k = (p["metadata"]["name"], p["metadata"]["uid"])
        if k not in self._requests:
            self._requests[k] = parse_pod(p)
        return self._requests[k]

    def registered(self, nodes: list[dict[str, Any]]) -> Any:
        k = tuple(n["metadata"]["annotations"][NODE_GPUS] for n in nodes)
        if self._registered is None or self._registered[0] != k:
            self._registered = (k, state_from_objects(nodes, [])[0])
        return self._registered[1]

    def live(self, p: dict[str, Any]) -> bool:
        ann = p["metadata"].get("annotations") or {}
        if p["status"].get("phase") in ("Succeeded", "Failed") or ann.get(POD_BIND_PHASE) == PHASE_FAILED:
            return False
        until = reservation_expiry(p, TTL)
        return until is None or until > self.clock.t

    def pick(self, cond: Any) -> dict[str, Any] | None:
        cands = [p for p in self.pods() if cond(p)]
        return self.rng.choice(cands) if cands else None

    @staticmethod
    def unbound(p: dict[str, Any]) -> bool:
        return not p["spec"].get("nodeName") and p["status"].get("phase") == "Pending"

    # ------------------------------------------------------------------ operations
    def op_create(self) -> None:
        self.n += 1
        mem = self.rng.choice(MEMS)
        gpu = "2" if self.rng.random() < 0.1 else "1"
        ann = {"nvidia.com/vgpu-mode": "hami-core"} if self.rng.random() < 0.15 else {}
        self.store.create_pod(pod_manifest(f"p{self.n}", mem=mem, gpu=gpu, annotations=ann))

    def _filter(self, p: dict[str, Any]) -> None:
        nodes = self.rng.sample(NODES, self.rng.randint(1, len(NODES)))
        self.ext.filter(parse_extender_args({"Pod": p, "NodeNames": nodes}))

    def op_filter(self) -> None:
        p = self.pick(lambda p: self.unbound(p) and not (p["metadata"].get("annotations") or {}).get(POD_ALLOCATION))
        if p is not None:
            self._filter(p)

    def op_refilter(self) -> None:
        p = self.pick(lambda p: self.unbound(p) and bool((p["metadata"].get("annotations") or {}).get(POD_ALLOCATION)))
        if p is not None:
            self._filter(p)

    def op_bind(self) -> None:
        p = self.pick(lambda p: self.unbound(p) and bool((p["metadata"].get("annotations") or {}).get(POD_NODE)))
        if p is not None:
            node = p["metadata"]["annotations"][POD_NODE]
            self.ext.bind(BindingArgs(p["metadata"]["name"], "ml", p["metadata"]["uid"], node))

    def _allocate(self, fault: bool) -> None:
        p = self.pick(lambda p: bool(p["spec"].get("nodeName")) and p["status"].get("phase") == "Pending"
                      and (p["metadata"].get("annotations") or {}).get(POD_BIND_PHASE) == "allocating")
        if p is None:
            return
        key = f"ml/{p['metadata']['name']}"
        node = p["spec"]["nodeName"]
        alloc = active_allocation(p)
        assert alloc is not None and alloc.node == node, (key, alloc)
        if fault:
            self._finish_alloc(p, node, PHASE_FAILED)
            return
        obj = self.store.get_node(node)
        reg = decode_node(obj["metadata"]["annotations"][NODE_GPUS])
        gpus = {g.uuid: g for g in reg.gpus}
        for ch in alloc.layouts:
            g = gpus[ch.gpu]
            if g.layout == ch.layout:
                continue
            held = [s for (n, gu, s), who in self.served.items() if n == node and gu == ch.gpu]
            assert not held, f"{key}: re-partitioning {node}/{g.index} would destroy held instances {held}"
            gpus[ch.gpu] = replace(g, instances=tuple(MigInstance(s, None, f"MIG-{ch.gpu}-{s.profile}-{s.start}")
                                                      for s in ch.layout))
        for u in alloc.units:
            if u.slot is None:
                continue
            inst = gpus[u.gpu].instance(u.slot)
            assert inst is not None, f"{key}: planned instance {u.slot} is not on {node}/{u.gpu_index}"
            k = (node, u.gpu, u.slot)
            assert k not in self.served, f"{key}: {u.slot} on {node}/{u.gpu_index} already served to {self.served[k]}"
            self.served[k] = key
        new = replace(reg, gpus=tuple(gpus[g.uuid] for g in reg.gpus))
        self.store.patch_node_annotations(node, {NODE_GPUS: encode_node(new)})
        self._finish_alloc(p, node, PHASE_SUCCESS)
        self.store.set_pod_phase("ml", p["metadata"]["name"], "Running")

    def _finish_alloc(self, p: dict[str, Any], node: str, phase: str) -> None:
        self.store.patch_pod_annotations("ml", p["metadata"]["name"], {POD_BIND_PHASE: phase})
        lock = (self.store.get_node(node)["metadata"].get("annotations") or {}).get(NODE_LOCK)
        if lock and f"ml/{p['metadata']['name']}" in lock:
            self.store.patch_node_annotations(node, {NODE_LOCK: None})

    def op_allocate(self) -> None:
        self._allocate(fault=False)

    def op_fault(self) -> None:
        self._allocate(fault=True)

    def _release(self, key: str) -> None:
        for k in [k for k, v in self.served.items() if v == key]:
            del self.served[k]

    def op_finish(self) -> None:
        p = self.pick(lambda p: p["status"].get("phase") == "Running")
        if p is not None:
            self.store.set_pod_phase("ml", p["metadata"]["name"], "Succeeded")
            self._release(f"ml/{p['metadata']['name']}")

    def op_delete(self) -> None:
        p = self.pick(lambda p: True)
        if p is not None:
            try:
                self.store.delete_pod("ml", p["metadata"]["name"])
            except NotFound:  # pragma: no cover
                return
            self._release(f"ml/{p['metadata']['name']}")

    def op_expire(self) -> None:
        self.clock.t += TTL + 1

    def op_restart(self) -> None:
        self.ext = self._extender()

    OPS = (("create", 18), ("filter", 22), ("refilter", 10), ("bind", 16), ("allocate", 14), ("fault", 2),
           ("finish", 8), ("delete", 5), ("expire", 1), ("restart", 2))

    # ------------------------------------------------------------------ invariants
    def check(self, last: str) -> None:
        live = [p for p in self.pods() if self.live(p)]
        seen: dict[tuple[str, str, Any], str] = {}
        requests = {}
        placements = []
        for p in live:
            raw = (p["metadata"].get("annotations") or {}).get(POD_ALLOCATION)
            if not raw:
                continue
            a = self._decoded.get(raw) or self._decoded.setdefault(raw, decode_allocation(raw))
            for u in a.units:
                if u.slot is None:
                    continue
                k = (u.node, u.gpu, u.slot)
                assert k not in seen, f"after {last}: {u.slot} on {u.node}/{u.gpu_index}: {seen[k]} and {a.pod}"
                seen[k] = a.pod
            requests[a.pod] = self.request(p)
            placements.append(PodPlacement(a.pod, True, a.node, a.units))
        nodes = self.store.list_nodes()
        state, problems = state_from_objects(nodes, live)
        assert problems == [], f"after {last}: {problems}"
        # the whole state as one plan from the registered cluster: every live unit, every pending layout
        registered = self.registered(nodes)
        changes = []
        for n in state.nodes:
            for g in n.gpus:
                before = registered.gpu(n.name, g.uuid)
                if g.layout != before.layout:
                    changes.append(LayoutChange(n.name, g.uuid, g.layout))
        changed = {c.gpu for c in changes}
        placements = [replace(pl, units=tuple(replace(u, reconfigure=u.gpu in changed) for u in pl.units))
                      for pl in placements]
        whole = Plan(tuple(placements), tuple(changes))
        bad = validate(registered, whole, requests, TEMPLATES)
        assert bad == [], f"after {last}: {[str(b) for b in bad[:5]]}"

    def run(self, steps: int) -> None:
        names = [n for n, _ in self.OPS]
        weights = [w for _, w in self.OPS]
        checked: tuple[int, float] | None = None
        for _ in range(steps):
            op = self.rng.choices(names, weights)[0]
            getattr(self, f"op_{op}")()
            self.counts[op] = self.counts.get(op, 0) + 1
            self.steps += 1
            # the invariants are a function of the store's objects and the expiry clock: a step that
            # changed neither (nothing to pick, a refused bind) needs no second look
            now = (self.store.revision(), self.clock.t // 1)
            if now != checked:
                self.check(op)
                checked = (self.store.revision(), self.clock.t // 1)


def test_random_sequences_first_fit() -> None:
    total = 0
    counts: dict[str, int] = {}
    for seed in range(25):
        w = World(seed, fake_plan, object())
        w.run(200)
        total += w.steps
        for k, v in w.counts.items():
            counts[k] = counts.get(k, 0) + v
    assert total >= 5000
    # the sequences really exercised every operation
    assert all(counts.get(n, 0) > 20 for n, _ in World.OPS), counts


@pytest.mark.parametrize("seed", [101, 102])
def test_random_sequences_real_planner(seed: int) -> None:
    w = World(seed, solver.plan, solver.PlannerConfig())
    w.run(150)
