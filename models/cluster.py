"""Building a ClusterState: from an inventory (a fresh cluster) or from API objects (node
registrations plus pod allocation annotations: how the extender rebuilds state after a restart).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from .catalog import model
from .codecs import (
    NODE_GPUS,
    PHASE_FAILED,
    POD_ALLOCATION,
    POD_BIND_PHASE,
    PodAllocation,
    decode_allocation,
    decode_node,
)
from .config import BUILTIN_DEVICE_CONFIG, Inventory
from .errors import CodecError, RequestError
from .hami_compat import NODE_REGISTER, decode_node_register, hami_allocation, hold_hami
from .layouts import Slot
from .quantity import QuantityError, cpu_milli, memory_mib
from .requests import PodRequest, host_request
from .signing import Keyring, trusted_allocation
from .templates import DeviceConfig
from .types import ClusterState, Gpu, HostUsage, MigInstance, Node, NodeMode, ShareUsage, UnitKind, gpu_uuid

TERMINAL_PHASES = ("Succeeded", "Failed")


def state_from_inventory(inv: Inventory) -> ClusterState:
    """Every GPU idle; MIG GPUs start MIG-enabled with an empty layout."""
    nodes = []
    for n in inv.nodes:
        gpus = []
        index = 0
        for model_name, count in n.gpus:
            m = model(model_name)
            for _ in range(count):
                gpus.append(Gpu(gpu_uuid(n.name, index), index, m.name, n.mode, m.memory_mib, n.split))
                index += 1
        nodes.append(Node(n.name, n.mode, tuple(gpus), n.cpu_milli, n.memory_mib, n.labels, applier=n.applier))
    return ClusterState(tuple(nodes), inv.layouts_any)


@dataclass(frozen=True)
class StateProblem:
    """An annotation that could not be honoured while rebuilding state (reported, not fatal)."""

    obj: str
    message: str


def _pod_key(pod: Mapping[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace') or 'default'}/{meta.get('name')}"


def active_allocation(pod: Mapping[str, Any]) -> PodAllocation | None:
    """The allocation a live pod holds (None for finished pods, failed binds, or none at all)."""
    meta = pod.get("metadata") or {}
    ann = meta.get("annotations") or {}
    raw = ann.get(POD_ALLOCATION)
    if not raw:
        return None
    if (pod.get("status") or {}).get("phase") in TERMINAL_PHASES or meta.get("deletionTimestamp"):
        return None
    if ann.get(POD_BIND_PHASE) == PHASE_FAILED:
        return None
    return decode_allocation(raw)


def state_from_objects(
    nodes: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]], layouts_any: bool = False,
    keys: Keyring | None = None,
    templates: DeviceConfig = BUILTIN_DEVICE_CONFIG,
) -> tuple[ClusterState, list[StateProblem]]:
    """Rebuild the cluster from node registrations and pod allocations.

    Pods are replayed in plan-time order; a pod whose reserved layout is not yet realised on its
    GPU re-partitions it in the snapshot (the reservation wins while the GPU is idle). Conflicts
    (an instance held twice, a GPU missing) are reported and the later claim is ignored. With
    ``keys``, an allocation whose signature does not verify (models.signing) holds nothing and is
    reported. Then what HAMi handed out (``hami.io/`` annotations, read only; ``templates`` resolve
    its legacy geometry slots) is held too, so a cluster migrating from HAMi never gives a GPU out twice.
    """
    problems: list[StateProblem] = []
    by_name: dict[str, Node] = {}
    for obj in nodes:
        node = registered_node(obj, problems)
        if node is not None:
            by_name[node.name] = node
    allocs: list[tuple[str, PodAllocation]] = []
    host: dict[str, list[HostUsage]] = {}
    hami: list[Mapping[str, Any]] = []
    for pod in pods:
        try:
            a = active_allocation(pod)
        except CodecError as e:
            problems.append(StateProblem(f"pod {_pod_key(pod)}", str(e)))
            continue
        a, forged = trusted_allocation(pod, a, keys)
        if forged:
            problems.append(StateProblem(f"pod {_pod_key(pod)}", forged))
        elif a is None:
            hami.append(pod)
        on = a.node if a is not None else _running_on(pod)
        if on is not None:
            usage = host_request_of(pod)
            if usage is not None:
                host.setdefault(on, []).append(HostUsage(usage.key, usage.cpu_milli, usage.host_memory_mib))
        if a is not None:
            t = ((pod.get("metadata") or {}).get("annotations") or {}).get("dynamig.io/plan-time", "0")
            allocs.append((t, a))
    allocs.sort(key=lambda x: (float(x[0]) if _isfloat(x[0]) else 0.0, x[1].pod))
    for _, a in allocs:
        node = by_name.get(a.node)
        if node is None:
            problems.append(StateProblem(f"pod {a.pod}", f"allocated on unknown node {a.node}"))
            continue
        updated = _hold_allocation(node, a, problems)
        by_name[a.node] = updated
    for pod in sorted(hami, key=_pod_key):
        _hold_hami_pod(by_name, pod, templates, problems)
    for name, held in host.items():
        if name in by_name:
            by_name[name] = replace(by_name[name], host=tuple(sorted(held, key=lambda h: h.pod)))
    return ClusterState(tuple(by_name[k] for k in sorted(by_name)), layouts_any), problems


#: Registered nodes by what they are built from, at most this many (see :func:`registered_node`).
REGISTERED_CACHE_LIMIT = 8192
_REGISTERED: dict[tuple[Any, ...], tuple[Node | None, tuple[StateProblem, ...]]] = {}


def registered_node(obj: Mapping[str, Any], problems: list[StateProblem]) -> Node | None:
    """The node as its device plugin registered it (no pod's allocation held), or None when it
    registered no GPUs or its registration cannot be read (reported in ``problems``).

    The same inputs give the same (frozen) object: rebuilding a state keeps the identity of every
    node nothing was allocated on, so the planner's per-node caches (keyed by identity) stay warm.
    """
    meta = obj.get("metadata") or {}
    ann = meta.get("annotations") or {}
    raw = ann.get(NODE_GPUS)
    if not raw:
        return None
    name = str(meta.get("name"))
    alloc = (obj.get("status") or {}).get("allocatable") or {}
    labels = tuple(sorted((str(k), str(v)) for k, v in (meta.get("labels") or {}).items()))
    hami_raw = ann.get(NODE_REGISTER)
    key = (name, raw if isinstance(raw, str) else repr(raw), repr(hami_raw), labels, repr(alloc.get("cpu")),
           repr(alloc.get("memory")))
    got = _REGISTERED.get(key)
    if got is None:
        found: list[StateProblem] = []
        got = (_build_registered(name, raw, hami_raw, labels, alloc, found), tuple(found))
        if len(_REGISTERED) >= REGISTERED_CACHE_LIMIT:
            _REGISTERED.clear()
        _REGISTERED[key] = got
    problems.extend(got[1])
    return got[0]


def _build_registered(name: str, raw: str, hami_raw: Any, labels: tuple[tuple[str, str], ...],
                      alloc: Mapping[str, Any], problems: list[StateProblem]) -> Node | None:
    try:
        reg = decode_node(raw)
    except CodecError as e:
        problems.append(StateProblem(f"node {name}", str(e)))
        return None
    cpu = _allocatable(alloc.get("cpu"), cpu_milli)
    mem = _allocatable(alloc.get("memory"), memory_mib)
    names = _device_names(reg.gpus, reg.nvml_names, hami_raw, name, problems)
    gpus = tuple(replace(g, nvml_name=n) if n else g for g, n in zip(reg.gpus, names, strict=True))
    return Node(name, reg.mode, gpus, cpu, mem, labels, applier=reg.applier)


def reuse_nodes(new: ClusterState, old: ClusterState | None) -> ClusterState:
    """``new`` with every node equal to ``old``'s node of the same name replaced by that (frozen,
    equal) object: a rebuilt state then shares its unchanged nodes with the previous one, and the
    planner's per-node caches, keyed by node identity, stay warm for them."""
    if old is None or old is new:
        return new
    same = {n.name: o for n in new.nodes if old.has_node(n.name)
            for o in (old.node(n.name),) if o is not n and o == n}
    return new.with_replaced(same)


def _hold_hami_pod(by_name: dict[str, Node], pod: Mapping[str, Any], templates: DeviceConfig,
                   problems: list[StateProblem]) -> None:
    try:
        h = hami_allocation(pod)
    except CodecError as e:
        problems.append(StateProblem(f"pod {_pod_key(pod)}", str(e)))
        return
    if h is None:
        return
    node = by_name.get(h.node)
    if node is None:
        problems.append(StateProblem(f"pod {h.pod}", f"HAMi allocation on node {h.node}, which runs no dynamig "
                                                     "device plugin (not counted)"))
        return
    by_name[h.node], msgs = hold_hami(node, h, templates)
    problems.extend(StateProblem(f"pod {h.pod}", m) for m in msgs)


def _device_names(gpus: tuple[Gpu, ...], published: tuple[str, ...], hami_raw: Any, node: str,
                  problems: list[StateProblem]) -> list[str]:
    """Each GPU's NVML device name: as dynamig's plugin published it, else as HAMi's did."""
    names = [published[i] if i < len(published) else "" for i in range(len(gpus))]
    if hami_raw and not all(names):
        try:
            by_uuid = {d.id: d.type for d in decode_node_register(str(hami_raw))}
        except CodecError as e:
            problems.append(StateProblem(f"node {node}", str(e)))
            return names
        names = [n or by_uuid.get(g.uuid, "") for n, g in zip(names, gpus, strict=True)]
    return names


def _isfloat(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _allocatable(q: Any, conv: Any) -> int | None:
    if q is None:
        return None
    try:
        return int(conv(q))
    except QuantityError:
        return None


def _running_on(pod: Mapping[str, Any]) -> str | None:
    """The node a live pod without a dynamig allocation is bound to (its host requests count there)."""
    if (pod.get("status") or {}).get("phase") in TERMINAL_PHASES or (pod.get("metadata") or {}).get(
            "deletionTimestamp"):
        return None
    name = (pod.get("spec") or {}).get("nodeName")
    return str(name) if name else None


def host_request_of(pod: Mapping[str, Any]) -> PodRequest | None:
    """A request carrying only the pod's host CPU and memory (None when it asks for neither or the
    manifest cannot be read: kube-scheduler accounts such pods; here they only shape scores)."""
    meta = pod.get("metadata") or {}
    key = _pod_key(pod)
    ns, _, name = key.partition("/")
    try:
        cpu, mem = host_request(pod.get("spec") or {}, f"pod {key}")
    except RequestError:
        return None
    if not cpu and not mem:
        return None
    return PodRequest(ns, name, str(meta.get("uid") or ""), cpu_milli=cpu, host_memory_mib=mem)


def _hold_allocation(node: Node, a: PodAllocation, problems: list[StateProblem]) -> Node:
    gpus = {g.uuid: g for g in node.gpus}
    for ch in a.layouts:
        g = gpus.get(ch.gpu)
        if g is None:
            problems.append(StateProblem(f"pod {a.pod}", f"layout for unknown GPU {ch.gpu} on {node.name}"))
            continue
        if g.layout != ch.layout:
            if ch.incremental:
                kept = set(ch.layout)
                if any(not i.free and i.slot not in kept for i in g.instances):
                    problems.append(StateProblem(f"pod {a.pod}", f"GPU {node.name}/{g.index}: incremental layout "
                                                                 "would remove a held instance"))
                    continue
                old = {i.slot: i for i in g.instances}
                gpus[ch.gpu] = replace(g, instances=tuple(old.get(s) or MigInstance(s) for s in ch.layout))
                continue
            if g.busy:
                problems.append(StateProblem(f"pod {a.pod}", f"GPU {node.name}/{g.index} is busy; "
                                                             "its reserved layout cannot apply"))
                continue
            gpus[ch.gpu] = g.with_layout(ch.layout)
    for u in a.units:
        g = gpus.get(u.gpu)
        if g is None:
            problems.append(StateProblem(f"pod {a.pod}", f"unit on unknown GPU {u.gpu} on {node.name}"))
            continue
        if u.kind is UnitKind.MIG and u.slot is not None:
            inst = g.instance(u.slot)
            if inst is None or not inst.free:
                why = "missing" if inst is None else f"held by {inst.holder}"
                problems.append(StateProblem(f"pod {a.pod}", f"{u.slot} on {node.name}/{g.index} is {why}"))
                continue
            gpus[u.gpu] = replace(
                g, instances=tuple(MigInstance(i.slot, u.holder, i.uuid) if i.slot == u.slot else i
                                   for i in g.instances)
            )
        elif u.kind is UnitKind.SHARE:
            gpus[u.gpu] = replace(g, shares=(*g.shares, ShareUsage(u.holder, u.memory_mib, u.cores)))
    return replace(node, gpus=tuple(gpus[g.uuid] for g in node.gpus))


def mig_slot_owner(state: ClusterState, node: str, gpu: str, slot: Slot) -> str | None:
    inst = state.gpu(node, gpu).instance(slot)
    return inst.holder if inst else None


def mode_counts(state: ClusterState) -> dict[NodeMode, int]:
    out: dict[NodeMode, int] = {}
    for n in state.nodes:
        out[n.mode] = out.get(n.mode, 0) + len(n.gpus)
    return out
