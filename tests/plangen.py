"""Test-only: random clusters, pods and plans built from legal steps (for validator properties)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import strategies as st

from models.catalog import model
from models.config import builtin_device_config
from models.plan import LayoutChange, Plan, PodPlacement, UnitAssignment, apply_plan
from models.requests import PodRequest, gpu_allowed, parse_pod, profile_serves, share_fit_problem
from models.types import ClusterState, Gpu, Node, NodeMode, UnitKind, gpu_uuid

MIG_MODELS = ["A30", "A100-SXM4-40GB", "A100-SXM4-80GB", "H100-80GB"]
TEMPLATES = builtin_device_config()


@st.composite
def clusters(draw: Any) -> ClusterState:
    nodes = []
    for i in range(draw(st.integers(1, 3))):
        mode = draw(st.sampled_from([NodeMode.MIG, NodeMode.HAMI_CORE]))
        name = f"n{i}"
        gpus = []
        for j in range(draw(st.integers(1, 3))):
            m = model(draw(st.sampled_from(MIG_MODELS)))
            # deviceSplitCount caps MIG units too; 10 (HAMi's default) never binds on a 7-slot GPU
            split = draw(st.integers(1, 4)) if mode is NodeMode.HAMI_CORE else 10
            g = Gpu(gpu_uuid(name, j), j, m.name, mode, m.memory_mib, split=split)
            if mode is NodeMode.MIG and draw(st.booleans()):
                tpls = TEMPLATES.template_layouts(m)
                g = g.with_layout(draw(st.sampled_from(tpls)).layout)
            gpus.append(g)
        nodes.append(Node(name, mode, tuple(gpus)))
    return ClusterState(tuple(nodes))


@st.composite
def pods(draw: Any, name: str) -> PodRequest:
    limits: dict[str, str] = {"nvidia.com/gpu": str(draw(st.integers(1, 2)))}
    kind = draw(st.sampled_from(["mem", "pct", "whole"]))
    if kind == "mem":
        limits["nvidia.com/gpumem"] = str(draw(st.integers(1000, 45000)))
    elif kind == "pct":
        limits["nvidia.com/gpumem-percentage"] = str(draw(st.integers(5, 100)))
    if kind != "whole" and draw(st.booleans()):
        limits["nvidia.com/gpucores"] = str(draw(st.integers(1, 60)))
    ann = {}
    if draw(st.booleans()):
        ann["nvidia.com/vgpu-mode"] = draw(st.sampled_from(["mig", "hami-core"]))
    manifest = {"metadata": {"name": name, "namespace": "t", "annotations": ann},
                "spec": {"containers": [{"name": "c", "resources": {"limits": limits}}]}}
    return parse_pod(manifest)


def legal_plan(state: ClusterState, pod: PodRequest, draw: Any) -> Plan:
    """Place ``pod`` by legal random steps, or return a not-placed plan if the steps fail."""
    order = list(state.nodes)
    for node in draw(st.permutations(order)):
        plan = _try_node(state, node, pod, draw)
        if plan is not None:
            return plan
    return Plan((PodPlacement(pod.key, False),), status="infeasible")


def _try_node(state: ClusterState, node: Node, pod: PodRequest, draw: Any) -> Plan | None:
    units: list[UnitAssignment] = []
    changes: dict[str, LayoutChange] = {}
    taken: set[tuple[str, Any]] = set()
    planned_shares: dict[str, list[tuple[int, int]]] = {}
    for c, u in pod.unit_ids():
        placed = False
        for g in draw(st.permutations(list(node.gpus))):
            if gpu_allowed(pod, g):
                continue
            m = g.gpu_model
            if g.mode is NodeMode.MIG:
                lay = changes[g.uuid].layout if g.uuid in changes else g.layout
                free = [i.slot for i in g.instances if i.free] if g.uuid not in changes else list(lay)
                free = [s for s in free if (g.uuid, s) not in taken and profile_serves(m, m.profile(s.profile), c)]
                new_change = None
                if not free and not g.busy and g.uuid not in changes and not any(k[0] == g.uuid for k in taken):
                    for t in TEMPLATES.template_layouts(m):
                        ok = [s for s in t.layout if profile_serves(m, m.profile(s.profile), c)]
                        if ok:
                            new_change = LayoutChange(node.name, g.uuid, t.layout, t.index)
                            free = ok
                            break
                if not free:
                    continue
                if new_change is not None:
                    changes[g.uuid] = new_change
                slot = free[0]
                taken.add((g.uuid, slot))
                tpl = changes[g.uuid].template_index if g.uuid in changes else None
                p = m.profile(slot.profile)
                units.append(UnitAssignment(pod.key, c.name, c.index, u, node.name, g.uuid, g.index, UnitKind.MIG,
                                            p.memory_mib, m.core_percent(p), slot, g.uuid in changes, tpl))
            else:
                mem = c.memory_for(g.memory_mib)
                extra = planned_shares.setdefault(g.uuid, [])
                if any(x.gpu == g.uuid and x.container_index == c.index for x in units):
                    continue
                if share_fit_problem(g, mem, c.cores, tuple(extra)):
                    continue
                extra.append((mem, c.cores))
                units.append(UnitAssignment(pod.key, c.name, c.index, u, node.name, g.uuid, g.index,
                                            UnitKind.SHARE, mem, c.cores))
            placed = True
            break
        if not placed:
            return None
    return Plan((PodPlacement(pod.key, True, node.name, tuple(units)),), tuple(changes.values()))


def mutate(plan: Plan, **kw: Any) -> Plan:
    return replace(plan, **kw)


__all__ = ["apply_plan", "clusters", "legal_plan", "mutate", "pods"]
