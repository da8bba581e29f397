"""Shared helpers for the extender and kube tests: clusters, pods, request bodies exactly as
kube-scheduler v1 sends them, and a tiny first-fit planner with ``solver.plan``'s signature
(used where a test needs a predictable planner; the contract tests use the real one)."""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import Any

from models.cluster import state_from_inventory
from models.config import builtin_device_config, load_inventory_text
from models.plan import LayoutChange, Plan, PodPlacement, StageResult, UnitAssignment
from models.requests import PodRequest, gpu_allowed, profile_serves, share_fit_problem
from models.store import InMemoryStore, node_objects
from models.types import ClusterState, NodeMode, UnitKind

TEMPLATES = builtin_device_config()


def fake_plan(state: ClusterState, pod: PodRequest, config: Any = None, pending: Sequence[PodRequest] = (),
              nodes: Sequence[str] | None = None) -> Plan:
    """First fit over ``nodes`` in order: free instances first, then the first template of an idle GPU."""
    t0 = time.perf_counter()
    reasons: list[tuple[str, str]] = []
    for name in nodes if nodes is not None else [n.name for n in state.nodes]:
        node = state.node(name)
        units: list[UnitAssignment] = []
        changes: dict[str, LayoutChange] = {}
        taken: set[tuple[str, Any]] = set()
        extra: dict[str, list[tuple[int, int]]] = {}
        ok = True
        for c, u in pod.unit_ids():
            done = False
            for g in node.gpus:
                if gpu_allowed(pod, g):
                    continue
                m = g.gpu_model
                if g.mode is NodeMode.MIG:
                    if g.uuid in changes:
                        free = list(changes[g.uuid].layout)
                    else:
                        free = [i.slot for i in g.instances if i.free]
                    free = [s for s in free if (g.uuid, s) not in taken and profile_serves(m, m.profile(s.profile), c)]
                    if not free and not g.busy and g.uuid not in changes and not any(k[0] == g.uuid for k in taken):
                        for t in TEMPLATES.template_layouts(m):
                            fits = [s for s in t.layout if profile_serves(m, m.profile(s.profile), c)]
                            if fits:
                                changes[g.uuid] = LayoutChange(node.name, g.uuid, t.layout, t.index)
                                free = fits
                                break
                    if not free:
                        continue
                    slot = free[0]
                    taken.add((g.uuid, slot))
                    p = m.profile(slot.profile)
                    tpl = changes[g.uuid].template_index if g.uuid in changes else None
                    units.append(UnitAssignment(pod.key, c.name, c.index, u, node.name, g.uuid, g.index, UnitKind.MIG,
                                                p.memory_mib, m.core_percent(p), slot, g.uuid in changes, tpl))
                else:
                    if any(x.gpu == g.uuid and x.container_index == c.index for x in units):
                        continue
                    mem = c.memory_for(g.memory_mib)
                    ex = extra.setdefault(g.uuid, [])
                    if share_fit_problem(g, mem, c.cores, tuple(ex)):
                        continue
                    ex.append((mem, c.cores))
                    units.append(UnitAssignment(pod.key, c.name, c.index, u, node.name, g.uuid, g.index,
                                                UnitKind.SHARE, mem, c.cores))
                done = True
                break
            if not done:
                ok = False
                break
        if ok:
            ms = (time.perf_counter() - t0) * 1000
            stages = (StageResult("placed", 1, 1, "optimal", ms / 2),
                      StageResult("reconfigurations", len(changes), len(changes), "optimal", ms / 2))
            return Plan((PodPlacement(pod.key, True, node.name, tuple(units)),), tuple(changes.values()), stages,
                        "optimal", ms, tuple(reasons), "first-fit")
        reasons.append((name, f"no free GPU capacity for {pod.units} unit(s) on {name}"))
    return Plan((PodPlacement(pod.key, False),), (), (), "infeasible", (time.perf_counter() - t0) * 1000,
                tuple(reasons), "first-fit")


INVENTORY = """
nodes:
  - name: mig-0
    mode: mig
    gpus: {model: A100-SXM4-40GB, count: 1}
  - name: mig-1
    mode: mig
    gpus: {model: A100-SXM4-40GB, count: 2}
  - name: share-0
    mode: hami-core
    gpus: {model: A100-SXM4-80GB, count: 1}
    split: 4
"""


def cluster(text: str = INVENTORY) -> ClusterState:
    return state_from_inventory(load_inventory_text(text))


def memory_store(text: str = INVENTORY) -> InMemoryStore:
    store = InMemoryStore()
    for obj in node_objects(cluster(text)):
        store.add_node(obj)
    return store


def pod_manifest(name: str, ns: str = "ml", gpu: str | None = "1", mem: str | None = None, cores: str | None = None,
                 pct: str | None = None, annotations: dict[str, str] | None = None,
                 scheduler: str | None = None) -> dict[str, Any]:
    limits: dict[str, str] = {}
    if gpu is not None:
        limits["nvidia.com/gpu"] = gpu
    if mem is not None:
        limits["nvidia.com/gpumem"] = mem
    if cores is not None:
        limits["nvidia.com/gpucores"] = cores
    if pct is not None:
        limits["nvidia.com/gpumem-percentage"] = pct
    spec: dict[str, Any] = {"containers": [{"name": "main", "image": "cuda:12", "resources": {"limits": limits}}]}
    if scheduler:
        spec["schedulerName"] = scheduler
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "annotations": dict(annotations or {})}, "spec": spec}


def as_scheduler_sends(pod: dict[str, Any]) -> dict[str, Any]:
    """The Pod as kube-scheduler's informer cache serialises it: no apiVersion/kind, nil maps as null."""
    p = copy.deepcopy(pod)
    p.pop("apiVersion", None)
    p.pop("kind", None)
    meta = p.setdefault("metadata", {})
    if not meta.get("annotations"):
        meta["annotations"] = None
    meta.setdefault("labels", None)
    meta.setdefault("ownerReferences", None)
    spec = p.setdefault("spec", {})
    spec.setdefault("initContainers", None)
    spec.setdefault("nodeSelector", None)
    spec.setdefault("tolerations", None)
    for c in spec.get("containers") or []:
        res = c.setdefault("resources", {})
        res.setdefault("requests", dict(res.get("limits") or {}) or None)
        c.setdefault("env", None)
        c.setdefault("ports", None)
    p.setdefault("status", {"phase": "Pending", "conditions": None})
    return p


def filter_body(pod: dict[str, Any], nodes: Sequence[str] | None) -> dict[str, Any]:
    return {"Pod": as_scheduler_sends(pod), "Nodes": None, "NodeNames": None if nodes is None else list(nodes)}


def bind_body(pod: dict[str, Any], node: str) -> dict[str, Any]:
    meta = pod["metadata"]
    return {"PodName": meta["name"], "PodNamespace": meta.get("namespace", "default"), "PodUID": meta.get("uid", ""),
            "Node": node}
