"""The monitor page: nodes -> GPUs -> layout and MIG instances -> pods, live (``GET /monitor``
polls ``GET /monitor/state`` every 2 s). No external assets."""

from __future__ import annotations

import time
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from models.codecs import POD_ALLOCATION, POD_BIND_PHASE, POD_NODE
from models.requests import pod_of_holder
from models.types import NodeMode

from .metrics import fragmentation_ratio, gpu_usage

if TYPE_CHECKING:
    from .core import Extender


@cache
def page() -> str:
    return resources.files(__package__).joinpath("monitor.html").read_text(encoding="utf-8")


def monitor_state(ext: Extender) -> dict[str, Any]:
    snap = ext.snapshot()
    state = snap.state
    nodes = []
    for n in state.nodes:
        gpus = []
        for g in n.gpus:
            gm = g.gpu_model
            u = gpu_usage(g)
            insts = []
            for i in g.instances:
                p = gm.profile(i.slot.profile)
                insts.append({
                    "profile": i.slot.profile, "start": i.slot.start, "slices": p.memory_slices,
                    "memory_mib": p.memory_mib, "holder": i.holder,
                    "pod": pod_of_holder(i.holder) if i.holder else None, "uuid": i.uuid,
                })
            gpus.append({
                "index": g.index, "uuid": g.uuid, "model": g.model, "mode": g.mode.value, "health": g.health,
                "memory_mib": g.memory_mib, "memory_slices": gm.memory_slices if g.mode is NodeMode.MIG else 0,
                "used_memory_mib": u.used_mib, "used_cores": u.used_cores, "units": u.units, "split": g.split,
                "busy": g.busy, "instances": insts,
                "shares": [{"pod": pod_of_holder(s.holder), "holder": s.holder, "memory_mib": s.memory_mib,
                            "cores": s.cores} for s in g.shares],
            })
        nodes.append({"name": n.name, "mode": n.mode.value, "gpus": gpus})
    pods: list[dict[str, Any]] = []
    for obj in snap.pods:
        meta = obj.get("metadata") or {}
        ann = meta.get("annotations") or {}
        pods.append({
            "pod": f"{meta.get('namespace') or 'default'}/{meta.get('name')}",
            "node": ann.get(POD_NODE) or (obj.get("spec") or {}).get("nodeName"),
            "phase": (obj.get("status") or {}).get("phase"),
            "bind_phase": ann.get(POD_BIND_PHASE),
            "reserved": bool(ann.get(POD_ALLOCATION)),
        })
    pods.sort(key=lambda d: str(d["pod"]))
    return {
        "time": time.time(),
        "revision": snap.revision,
        "nodes": nodes,
        "pods": pods,
        "unplaceable": [{"pod": k, "since": t, "reason": why} for k, (t, why) in sorted(ext.unplaceable().items())],
        "fragmentation_ratio": fragmentation_ratio(state),
        "problems": [{"object": x.obj, "message": x.message} for x in snap.problems],
    }
