"""Finding the pod a kubelet ``Allocate`` call is for, from the extender's annotations.

``Allocate`` carries only device IDs (``reference/deviceplugin-api.md`` §5). The extender's bind
takes the node lock for the pod and stamps ``dynamig.io/bind-phase=allocating``; the pod's
``dynamig.io/allocation`` lists its units per container. The node lock names the pod: it is served
only when the lock's pod, the pod's own annotations and the allocation agree, and never when another
pod could be the one kubelet is admitting (HAMi #3096: an expired lock handed to another pod made
HAMi serve the wrong pod's annotation).

Annotations are pod-writable, so with an allocation key only pods whose allocation carries the
extender's valid signature take part (models.signing): a forged claim is never served, never makes
a genuine pod ambiguous, and is reported on its own pod. What a pod already holds comes from the
plugin's own record of what it served (:mod:`deviceplugin.ledger`), not from its annotations.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from models.cluster import TERMINAL_PHASES
from models.codecs import (
    PHASE_ALLOCATING,
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
from models.signing import Keyring, signature_problem
from models.store import ClusterStore

from .ledger import Served

Obj = dict[str, Any]


class AllocationError(Exception):
    """Allocate cannot be served. ``pod`` (namespace/name) is set when the pod is known, so it can be
    marked failed. ``untrusted`` lists (pod, reason) for pods on this node that claim an allocation
    they cannot prove (models.signing): they get nothing and are told why."""

    def __init__(self, reason: str, pod: str | None = None,
                 untrusted: tuple[tuple[str, str], ...] = ()) -> None:
        self.reason = reason
        self.pod = pod
        self.untrusted = untrusted
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


def pod_uid(pod: Obj) -> str:
    return str((pod.get("metadata") or {}).get("uid") or "")


def _done(pod: Obj, served: Iterable[Served]) -> tuple[AllocatedUnit, ...]:
    """Units of this pod already served: the plugin's own record, else (a record lost with the node's
    disk) the pod's ``dynamig.io/allocated`` annotation."""
    uid = pod_uid(pod)
    mine = tuple(AllocatedUnit(s.container_index, s.unit, s.device) for s in served if uid and s.uid == uid)
    return mine or allocated_units(pod)


def _target(pod: Obj, node: str, keys: Keyring | None = None, served: Iterable[Served] = ()) -> PodTarget:
    key = pod_key(pod)
    ann = pod_annotations(pod)
    forged = signature_problem(pod, keys)
    if forged is not None:
        raise AllocationError(f"pod {key}: {forged}; no device served", None, ((key, forged),))
    try:
        alloc = decode_allocation(ann[POD_ALLOCATION])
    except CodecError as e:
        raise AllocationError(f"pod {key}: {e}", key) from None
    if alloc.pod != key:
        raise AllocationError(
            f"pod {key} carries an allocation made for pod {alloc.pod}; refusing to serve another pod's devices", key)
    if alloc.node != node:
        raise AllocationError(f"pod {key} was planned on node {alloc.node!r}, not on {node!r}", key)
    done = _done(pod, served)
    finished = {u.container_index for u in done}
    pending = sorted({u.container_index for u in alloc.units} - finished)
    if not pending:
        raise AllocationError(f"pod {key}: every container is already allocated", key)
    c = pending[0]
    units = tuple(sorted((u for u in alloc.units if u.container_index == c), key=lambda u: u.unit))
    return PodTarget(pod, key, alloc, c, units, done)


def _next_count(pod: Obj, node: str, keys: Keyring | None, served: Iterable[Served]) -> int | None:
    try:
        return len(_target(pod, node, keys, served).units)
    except AllocationError:
        return None


def find_pod(store: ClusterStore, node: str, count: int, pods: Iterable[Obj] | None = None,
             keys: Keyring | None = None, served: Iterable[Served] = ()) -> PodTarget:
    """The pod (and container) this ``Allocate`` of ``count`` devices is for. Raises :class:`AllocationError`.

    With ``keys``, only pods whose allocation verifies are candidates; unverified pods bound to this
    node that await ``count`` devices are listed in the error's ``untrusted`` when nothing matches."""
    served = tuple(served)
    lock, _ = read_lock(store, node)
    all_pods = list(store.list_pods() if pods is None else pods)
    claims = [p for p in all_pods if _awaits_allocation(p, node)]
    waiting = [p for p in claims if signature_problem(p, keys) is None]
    untrusted = tuple(sorted(
        (pod_key(p), signature_problem(p, keys) or "") for p in claims
        if signature_problem(p, keys) is not None and (p.get("spec") or {}).get("nodeName") == node))
    if lock is not None:
        ns, name = lock.pod.split("/", 1)
        try:
            pod: Obj | None = store.get_pod(ns, name)
        except NotFound:
            pod = None
        # A lock whose pod is gone, no longer allocating or unproven is stale: fall through to the
        # unique match (the lock itself is a node annotation; only the extender may take it).
        if pod is not None and _awaits_allocation(pod, node) and signature_problem(pod, keys) is None:
            target = _target(pod, node, keys, served)
            others = sorted(pod_key(p) for p in waiting
                            if pod_key(p) != lock.pod and _next_count(p, node, keys, served) == count)
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
    matches = [p for p in waiting if _next_count(p, node, keys, served) == count]
    if len(matches) == 1:
        return _target(matches[0], node, keys, served)
    if not matches:
        what = f"; pods allocating here: {', '.join(sorted(pod_key(p) for p in waiting))}" if waiting else ""
        forged = ""
        if untrusted:
            forged = "; not served, allocation not proven: " + "; ".join(f"{k} ({why})" for k, why in untrusted)
        raise AllocationError(f"no pod awaits {count} device(s) on node {node} (no node lock{what}){forged}",
                              None, untrusted)
    raise AllocationError(
        f"cannot tell which pod kubelet is admitting: {', '.join(sorted(pod_key(p) for p in matches))} all await "
        f"{count} device(s) on {node} and no node lock names one; refusing to guess")


@dataclass(frozen=True)
class Holding:
    """Something allocated on a GPU of this node: ``device`` is the served MIG/GPU UUID, or None for a
    planned MIG unit known only by its ``slot`` (profile, start)."""

    pod: str
    gpu: str
    device: str | None
    slot: tuple[str, int] | None = None


def holdings(pods: Iterable[Obj], node: str, served: Iterable[Served], keys: Keyring | None = None,
             ) -> list[Holding]:
    """Everything held on this node's GPUs by live pods.

    - every unit this plugin served (its record), whatever the pod's annotations say now;
    - for pods bound here with a proven allocation that were served (``success``, or an ``allocated``
      annotation) but are missing from the record: their planned units.
    A pod's own ``dynamig.io/allocated`` list is never taken as proof: anyone who may edit a pod could
    write any device UUID there.
    """
    out: list[Holding] = []
    by_uid: dict[str, Obj] = {pod_uid(p): p for p in pods if pod_uid(p)}
    recorded: set[str] = set()
    for s in served:
        out.append(Holding(s.pod, s.gpu, s.device))
        recorded.add(s.uid)
    for uid, p in by_uid.items():
        if uid in recorded or not is_live(p):
            continue
        ann = pod_annotations(p)
        if ann.get(POD_BIND_PHASE) != PHASE_SUCCESS and not ann.get(POD_ALLOCATED):
            continue
        if signature_problem(p, keys) is not None:
            continue
        try:
            alloc = decode_allocation(ann.get(POD_ALLOCATION, ""))
        except CodecError:
            continue
        if alloc.node != node or alloc.pod != pod_key(p):
            continue
        for u in alloc.units:
            out.append(Holding(alloc.pod, u.gpu, None, (u.slot.profile, u.slot.start) if u.slot else None))
    return out


def _describe(h: Holding) -> str:
    return h.device or (f"{h.slot[0]}@{h.slot[1]}" if h.slot else h.gpu)


def gpu_holders(held: Iterable[Holding], gpu_uuid: str, exclude: str | None = None) -> dict[str, list[str]]:
    """Pods holding anything on this GPU: pod key -> devices (or planned slots), ``exclude`` left out."""
    out: dict[str, list[str]] = {}
    for h in held:
        if h.pod != exclude and h.gpu == gpu_uuid:
            out.setdefault(h.pod, []).append(_describe(h))
    return out


def instance_holders(held: Iterable[Holding], gpu_uuid: str, device: str, slot: tuple[str, int],
                     exclude: str | None = None) -> list[str]:
    """Pods holding this MIG instance (served by UUID, or planned at its slot), ``exclude`` left out."""
    return sorted({h.pod for h in held if h.pod != exclude and h.gpu == gpu_uuid and (
        h.device == device or (h.device is None and h.slot == slot))})
