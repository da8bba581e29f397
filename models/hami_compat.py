"""HAMi's own annotations, read (never written) so that a cluster migrating from HAMi loses
nothing: what HAMi already handed out counts as held capacity and is never handed out again.

Formats, as HAMi v2.9/v2.10 write them (``pkg/device/devices.go``, ``pkg/device/nvidia``):

* node ``hami.io/node-nvidia-register``: a JSON list of ``{id, index, count, devmem, devcore,
  type, numa, mode, health}`` (``omitempty``), or the legacy text form
  ``id,count,devmem,devcore,type,numa,health[,index,mode]:`` per device;
* pod ``hami.io/vgpu-devices-allocated``: per container (init containers first) ``;``-terminated
  lists of ``UUID,NVIDIA,<MiB>,<cores>:`` devices; a legacy MIG device is ``GPU-…[<geometry>-<slot>]``;
* pod ``hami.io/vgpu-mig-allocations`` (v2.10): a JSON list of ``{containerIndex, deviceIndex,
  gpuUUID, profile, placement: {start, size}, migUUID?, …}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from .errors import CodecError
from .layouts import Slot
from .templates import DeviceConfig
from .types import Gpu, MigInstance, Node, NodeMode, ShareUsage

NODE_REGISTER = "hami.io/node-nvidia-register"
NODE_HANDSHAKE = "hami.io/node-handshake"
NODE_LOCK = "hami.io/mutex.lock"
POD_NODE = "hami.io/vgpu-node"
POD_TIME = "hami.io/vgpu-time"
POD_DEVICES_ALLOCATED = "hami.io/vgpu-devices-allocated"
POD_DEVICES_TO_ALLOCATE = "hami.io/vgpu-devices-to-allocate"
POD_MIG_ALLOCATIONS = "hami.io/vgpu-mig-allocations"
POD_BIND_PHASE = "hami.io/bind-phase"
POD_BIND_TIME = "hami.io/bind-time"
WEBHOOK_LABEL = "hami.io/webhook"

#: The pod annotations through which HAMi hands devices out (what the webhook may strip).
ALLOCATION_KEYS = (POD_NODE, POD_TIME, POD_DEVICES_ALLOCATED, POD_DEVICES_TO_ALLOCATE, POD_MIG_ALLOCATIONS,
                   POD_BIND_PHASE, POD_BIND_TIME)

_MIG_SUFFIX = re.compile(r"^(?P<uuid>[^\[\]]+)\[(?P<t>\d+)-(?P<p>\d+)\]$")


@dataclass(frozen=True)
class HamiDevice:
    """One GPU of HAMi's node registration."""

    id: str
    index: int
    count: int
    devmem: int
    devcore: int
    type: str  # the NVML device name
    numa: int
    mode: str
    health: bool


def _int(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise CodecError(f"annotation {NODE_REGISTER}: {what} must be an integer, got {v!r}")
    return v


def decode_node_register(raw: str) -> tuple[HamiDevice, ...]:
    """HAMi's node registration, JSON (current) or the ``:``-separated text form (older plugins)."""
    s = raw.strip()
    if s.startswith("["):
        try:
            items = json.loads(s)
        except ValueError as e:
            raise CodecError(f"annotation {NODE_REGISTER}: not JSON ({e})") from e
        out = []
        for d in items:
            if not isinstance(d, dict) or not isinstance(d.get("id"), str):
                raise CodecError(f"annotation {NODE_REGISTER}: each device must be an object with an id")
            out.append(HamiDevice(d["id"], _int(d.get("index", 0), "index"), _int(d.get("count", 0), "count"),
                                  _int(d.get("devmem", 0), "devmem"), _int(d.get("devcore", 0), "devcore"),
                                  str(d.get("type", "")), _int(d.get("numa", 0), "numa"),
                                  str(d.get("mode") or "hami-core"), d.get("health") is True))
        return tuple(out)
    if ":" not in s:
        raise CodecError(f"annotation {NODE_REGISTER}: neither JSON nor HAMi's text form")
    out = []
    for part in s.split(":"):
        if "," not in part:
            continue
        f = part.split(",")
        if len(f) not in (7, 9):
            raise CodecError(f"annotation {NODE_REGISTER}: a device has {len(f)} fields, expected 7 or 9")
        try:
            out.append(HamiDevice(f[0], int(f[7]) if len(f) == 9 else 0, int(f[1]), int(f[2]), int(f[3]), f[4],
                                  int(f[5]), f[8] if len(f) == 9 else "hami-core", f[6].lower() == "true"))
        except ValueError as e:
            raise CodecError(f"annotation {NODE_REGISTER}: {e}") from e
    return tuple(out)


@dataclass(frozen=True)
class HamiUnit:
    """One device HAMi gave one container: a hami-core share, or a MIG instance."""

    container: int  # init containers first, then app containers (HAMi's order)
    unit: int  # position among the container's devices
    gpu: str  # the physical GPU's UUID
    memory_mib: int
    cores: int
    geometry: int | None = None  # legacy MIG: geometry index ``t`` of ``GPU-…[t-p]``
    slot: int | None = None  # legacy MIG: flattened slot ``p``
    profile: str | None = None  # v2.10 MIG: the exact profile and placement start
    start: int | None = None


def decode_pod_devices(raw: str) -> tuple[HamiUnit, ...]:
    """``hami.io/vgpu-devices-allocated``: ``UUID,NVIDIA,<MiB>,<cores>:`` per device, ``;`` per container."""
    out: list[HamiUnit] = []
    for c, part in enumerate(raw.split(";")):
        u = 0
        for dev in part.split(":"):
            if "," not in dev:
                continue
            f = dev.split(",")
            if len(f) < 4:
                raise CodecError(f"annotation {POD_DEVICES_ALLOCATED}: device {dev!r} has {len(f)} fields, expected 4")
            try:
                mem, cores = int(f[2]), int(f[3])
            except ValueError:
                raise CodecError(f"annotation {POD_DEVICES_ALLOCATED}: device {dev!r}: memory and cores must be "
                                 "integers") from None
            if f[1] != "NVIDIA":
                continue  # another vendor's device
            m = _MIG_SUFFIX.match(f[0])
            if m:
                out.append(HamiUnit(c, u, m["uuid"], mem, cores, int(m["t"]), int(m["p"])))
            else:
                out.append(HamiUnit(c, u, f[0], mem, cores))
            u += 1
    return tuple(out)


def decode_mig_allocations(raw: str) -> dict[tuple[int, int], tuple[str, str, int]]:
    """v2.10 ``hami.io/vgpu-mig-allocations``: (container, device) -> (GPU UUID, profile, start)."""
    try:
        items = json.loads(raw) if raw.strip() else []
    except ValueError as e:
        raise CodecError(f"annotation {POD_MIG_ALLOCATIONS}: not JSON ({e})") from e
    if not isinstance(items, list):
        raise CodecError(f"annotation {POD_MIG_ALLOCATIONS}: expected a JSON list")
    out: dict[tuple[int, int], tuple[str, str, int]] = {}
    for i, a in enumerate(items):
        pl = a.get("placement") if isinstance(a, dict) else None
        if not (isinstance(a, dict) and isinstance(a.get("containerIndex"), int)
                and isinstance(a.get("deviceIndex"), int) and a.get("gpuUUID") and a.get("profile")
                and isinstance(pl, dict) and isinstance(pl.get("start"), int) and pl.get("size")):
            raise CodecError(f"annotation {POD_MIG_ALLOCATIONS}: MIG allocation {i} is incomplete")
        out[(a["containerIndex"], a["deviceIndex"])] = (str(a["gpuUUID"]), str(a["profile"]), pl["start"])
    return out


@dataclass(frozen=True)
class HamiPodAllocation:
    pod: str  # namespace/name
    node: str
    units: tuple[HamiUnit, ...]


_TERMINAL = ("Succeeded", "Failed")


def hami_allocation(pod: Mapping[str, Any]) -> HamiPodAllocation | None:
    """What HAMi handed a live pod (None: nothing, a finished pod, or a failed bind). Raises
    :class:`CodecError` for an annotation that cannot be read or names another node."""
    meta = pod.get("metadata") or {}
    ann = meta.get("annotations") or {}
    raw = ann.get(POD_DEVICES_ALLOCATED)
    if not raw:
        return None
    if (pod.get("status") or {}).get("phase") in _TERMINAL or meta.get("deletionTimestamp"):
        return None
    if ann.get(POD_BIND_PHASE) == "failed":
        return None
    key = f"{meta.get('namespace') or 'default'}/{meta.get('name')}"
    bound = (pod.get("spec") or {}).get("nodeName")
    node = ann.get(POD_NODE)
    if bound and node and bound != node:
        raise CodecError(f"annotation {POD_NODE}={node!r} but the pod is bound to {bound!r}")
    where = bound or node
    if not where:
        raise CodecError(f"annotation {POD_DEVICES_ALLOCATED} without a node ({POD_NODE} or spec.nodeName)")
    units = list(decode_pod_devices(str(raw)))
    migs = decode_mig_allocations(str(ann.get(POD_MIG_ALLOCATIONS) or ""))
    for i, u in enumerate(units):
        hit = migs.get((u.container, u.unit))
        if hit is not None:
            gpu, profile, start = hit
            units[i] = replace(u, gpu=gpu, profile=profile, start=start)
    return HamiPodAllocation(key, str(where), tuple(units))


def _holder(pod: str, u: HamiUnit, extra: int = 0) -> str:
    return f"{pod}/{u.container}/hami-{u.unit}" + (f"-{extra}" if extra else "")


def hold_hami(node: Node, a: HamiPodAllocation, templates: DeviceConfig) -> tuple[Node, list[str]]:
    """The node with HAMi's allocation held, and what could not be matched exactly. Where HAMi's
    annotation does not say which instance (legacy ``[t-p]`` names a geometry slot, not a
    placement), every free instance that it may be is held: capacity is withheld, never doubled."""
    gpus = {g.uuid: g for g in node.gpus}
    problems: list[str] = []
    for u in a.units:
        g = gpus.get(u.gpu)
        if g is None:
            problems.append(f"HAMi device {u.gpu} is not a GPU of node {node.name}")
            continue
        if g.mode is NodeMode.HAMI_CORE:
            if u.geometry is not None or u.profile is not None:
                problems.append(f"HAMi MIG device on {node.name}/{g.index}, which is in mode hami-core")
            gpus[g.uuid] = replace(g, shares=(*g.shares, ShareUsage(_holder(a.pod, u), u.memory_mib, u.cores)))
            continue
        gpus[g.uuid] = _hold_mig(g, a.pod, u, templates, node.name, problems)
    return replace(node, gpus=tuple(gpus[g.uuid] for g in node.gpus)), problems


def _hold_mig(g: Gpu, pod: str, u: HamiUnit, templates: DeviceConfig, node: str, problems: list[str]) -> Gpu:
    where = f"{node}/{g.index}"
    if u.profile is not None and u.start is not None:  # v2.10: the exact instance
        want = Slot(u.profile, u.start)
        inst = g.instance(want)
        if inst is not None and inst.free:
            return _take(g, lambda i: i.slot == want, pod, u)
        problems.append(f"HAMi instance {u.profile}@{u.start} on {where} is not a free instance there; "
                        "holding the whole GPU")
        return _take(g, lambda i: True, pod, u)
    profile = None
    if u.geometry is not None and u.slot is not None:
        group = templates.group_for_name(g.device_name, g.gpu_model)
        if group is not None and u.geometry < len(group.geometries):
            flat = [e.name for e in group.geometries[u.geometry].entries for _ in range(e.count)]
            profile = flat[u.slot] if u.slot < len(flat) else None
    if profile is not None and any(i.slot.profile == profile and (i.free or "/hami-" in (i.holder or ""))
                                   for i in g.instances):
        return _take(g, lambda i: i.slot.profile == profile, pod, u)
    why = ("a hami-core share" if u.geometry is None else
           f"geometry {u.geometry} slot {u.slot}, which the device-config does not resolve to a free instance")
    problems.append(f"HAMi allocation on MIG GPU {where} is {why}; holding the whole GPU")
    return _take(g, lambda i: True, pod, u)


def _take(g: Gpu, which: Callable[[MigInstance], bool], pod: str, u: HamiUnit) -> Gpu:
    out = []
    k = 0
    for i in g.instances:
        if i.free and which(i):
            out.append(MigInstance(i.slot, _holder(pod, u, k), i.uuid))
            k += 1
        else:
            out.append(i)
    if not g.instances:  # no layout known: nothing may be re-cut under HAMi's pod
        return replace(g, shares=(*g.shares, ShareUsage(_holder(pod, u), u.memory_mib, 100)))
    return replace(g, instances=tuple(out))
