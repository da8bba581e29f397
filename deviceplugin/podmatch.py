"""Finding the pod a kubelet ``Allocate`` call is for, from the extender's annotations.

``Allocate`` carries only device IDs (``reference/deviceplugin-api.md`` §5). The extender's bind
takes the node lock for the pod and stamps ``dynamig.io/bind-phase=allocating``; the pod's
``dynamig.io/allocation`` lists its units per container. The node lock names the pod: it is served
only when the lock's pod, the pod's own annotations and the allocation agree, and never when another
pod could be the one kubelet is admitting (HAMi #3096: an expired lock handed to another pod made
HAMi serve the wrong pod's annotation).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from models.cluster import TERMINAL_PHASES
from models.codecs import (
    PHASE_ALLOCATING,
    PHASE_FAILED,
    PHASE_SUCCESS,
    POD_ALLOCATED,
    POD_ALLOCATION,
    POD_BIND_PHASE,
    POD_NODE,
    AllocatedUnit,
    PodAllocation,
    decode_allocated,
    decode_allocation,
)
from models.errors import CodecError, NotFound
from models.nodelock import read_lock
from models.plan import UnitAssignment
from models.store import ClusterStore

Obj = dict[str, Any]


class AllocationError(Exception):
    """Allocate cannot be served. ``pod`` (namespace/name) is set when the pod is known, so it can be
    marked failed."""

    def __init__(self, reason: str, pod: str | None = None) -> None:
        self.reason = reason
        self.pod = pod
        super().__init__(reason)


@dataclass(frozen=True)
class PodTarget:
    pod: Obj
    key: str  # namespace/name
    allocation: PodAllocation
    container_index: int  # the container being allocated now
    units: tuple[UnitAssignment, ...]  # its units, in unit order
    allocated: tuple[AllocatedUnit, ...]  # units of earlier containers, already served

    @property
    def namespace(self) -> str:
        return self.key.split("/", 1)[0]

    @property
    def name(self) -> str:
        return self.key.split("/", 1)[1]

    @property
    def uid(self) -> str:
        return str((self.pod.get("metadata") or {}).get("uid") or "")

    @property
    def last_container(self) -> bool:
        later = {u.container_index for u in self.allocation.units if u.container_index > self.container_index}
        return not later


def pod_key(pod: Obj) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace') or 'default'}/{meta.get('name')}"


def pod_annotations(pod: Obj) -> dict[str, str]:
    return dict((pod.get("metadata") or {}).get("annotations") or {})


def is_live(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") not in TERMINAL_PHASES and not (
        (pod.get("metadata") or {}).get("deletionTimestamp"))


def allocated_units(pod: Obj) -> tuple[AllocatedUnit, ...]:
    raw = pod_annotations(pod).get(POD_ALLOCATED)
    if not raw:
        return ()
    try:
        return decode_allocated(raw)
    except CodecError:
        return ()


def _awaits_allocation(pod: Obj, node: str) -> bool:
    ann = pod_annotations(pod)
    if ann.get(POD_BIND_PHASE) != PHASE_ALLOCATING or not ann.get(POD_ALLOCATION) or not is_live(pod):
        return False
    return node in (ann.get(POD_NODE), (pod.get("spec") or {}).get("nodeName"))


def _target(pod: Obj, node: str) -> PodTarget:
    key = pod_key(pod)
    ann = pod_annotations(pod)
    try:
        alloc = decode_allocation(ann[POD_ALLOCATION])
    except CodecError as e:
        raise AllocationError(f"pod {key}: {e}", key) from None
    if alloc.pod != key:
        raise AllocationError(
            f"pod {key} carries an allocation made for pod {alloc.pod}; refusing to serve another pod's devices", key)
    if alloc.node != node:
        raise AllocationError(f"pod {key} was planned on node {alloc.node!r}, not on {node!r}", key)
    done = allocated_units(pod)
    served = {u.container_index for u in done}
    pending = sorted({u.container_index for u in alloc.units} - served)
    if not pending:
        raise AllocationError(f"pod {key}: every container is already allocated", key)
    c = pending[0]
    units = tuple(sorted((u for u in alloc.units if u.container_index == c), key=lambda u: u.unit))
    return PodTarget(pod, key, alloc, c, units, done)


def _next_count(pod: Obj, node: str) -> int | None:
    try:
        return len(_target(pod, node).units)
    except AllocationError:
        return None


def find_pod(store: ClusterStore, node: str, count: int, pods: Iterable[Obj] | None = None) -> PodTarget:
    """The pod (and container) this ``Allocate`` of ``count`` devices is for. Raises :class:`AllocationError`."""
    lock, _ = read_lock(store, node)
    all_pods = list(store.list_pods() if pods is None else pods)
    waiting = [p for p in all_pods if _awaits_allocation(p, node)]
    if lock is not None:
        ns, name = lock.pod.split("/", 1)
        try:
            pod: Obj | None = store.get_pod(ns, name)
        except NotFound:
            pod = None
        # A lock whose pod is gone or no longer allocating is stale: fall through to the unique match.
        if pod is not None and _awaits_allocation(pod, node):
            target = _target(pod, node)
            others = sorted(pod_key(p) for p in waiting if pod_key(p) != lock.pod and _next_count(p, node) == count)
            if others:
                raise AllocationError(
                    f"cannot tell which pod kubelet is admitting: the node lock names {lock.pod}, but "
                    f"{', '.join(others)} also await{'s' if len(others) == 1 else ''} {count} device(s) on {node}; "
                    "refusing to guess", lock.pod)
            if len(target.units) != count:
                raise AllocationError(
                    f"device number not matched: kubelet asks for {count} device(s), pod {lock.pod} container "
                    f"#{target.container_index} was planned {len(target.units)}", lock.pod)
            return target
    matches = [p for p in waiting if _next_count(p, node) == count]
    if len(matches) == 1:
        return _target(matches[0], node)
    if not matches:
        what = f"; pods allocating here: {', '.join(sorted(pod_key(p) for p in waiting))}" if waiting else ""
        raise AllocationError(f"no pod awaits {count} device(s) on node {node} (no node lock{what})")
    raise AllocationError(
        f"cannot tell which pod kubelet is admitting: {', '.join(sorted(pod_key(p) for p in matches))} all await "
        f"{count} device(s) on {node} and no node lock names one; refusing to guess")


def gpu_holders(pods: Iterable[Obj], gpu_uuid: str, instance_uuids: Iterable[str], exclude: str | None = None,
                ) -> dict[str, list[str]]:
    """Live pods holding something allocated on this GPU: pod key -> devices (MIG UUIDs or the GPU UUID).

    Counted: served units (``dynamig.io/allocated``); for pods marked ``success`` without that
    annotation, their planned units on this GPU.
    """
    inst = set(instance_uuids)
    out: dict[str, list[str]] = {}
    for p in pods:
        key = pod_key(p)
        if key == exclude or not is_live(p):
            continue
        ann = pod_annotations(p)
        if ann.get(POD_BIND_PHASE) == PHASE_FAILED:
            continue
        devs = [u.device for u in allocated_units(p) if u.device in inst or u.device == gpu_uuid]
        if not devs and ann.get(POD_BIND_PHASE) == PHASE_SUCCESS and not ann.get(POD_ALLOCATED):
            try:
                alloc = decode_allocation(ann.get(POD_ALLOCATION, ""))
                devs = [f"{u.slot or gpu_uuid}" for u in alloc.units if u.gpu == gpu_uuid]
            except CodecError:
                devs = []
        if devs:
            out[key] = devs
    return out
