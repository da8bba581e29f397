"""Annotation codecs (pure, versioned JSON under ``dynamig.io/``).

Node registration (device plugin -> extender) and pod allocation (extender -> device plugin).
Every decoder checks the version and the shape, and raises :class:`CodecError` naming the key.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import CodecError
from .layouts import Layout, Slot, make_layout
from .plan import LayoutChange, Plan, UnitAssignment
from .types import Applier, Gpu, MigInstance, Node, NodeMode, UnitKind

PREFIX = "dynamig.io/"
NODE_GPUS = "dynamig.io/node-gpus"
NODE_LOCK = "dynamig.io/node-lock"
POD_ALLOCATION = "dynamig.io/allocation"
POD_ALLOCATION_SIG = "dynamig.io/allocation-signature"  # models.signing: the extender's HMAC
POD_NODE = "dynamig.io/node"
POD_PLAN_TIME = "dynamig.io/plan-time"
POD_BIND_PHASE = "dynamig.io/bind-phase"
POD_BIND_TIME = "dynamig.io/bind-time"
POD_ALLOCATED = "dynamig.io/allocated"
POD_ALLOC_ERROR = "dynamig.io/allocation-error"
VERSION = 1

#: Annotations only dynamig's own components may write; the webhook strips them from user pods
#: (it treats every key under PREFIX the same way; this list names the ones the code uses).
ALLOCATION_KEYS = (POD_ALLOCATION, POD_ALLOCATION_SIG, POD_NODE, POD_PLAN_TIME, POD_BIND_PHASE, POD_BIND_TIME,
                   POD_ALLOCATED, POD_ALLOC_ERROR)
#: The pod annotations the device plugin writes (on pods of its own node only); the extender writes
#: every other dynamig.io/ key.
NODE_AGENT_POD_KEYS = (POD_ALLOCATED, POD_BIND_PHASE, POD_ALLOC_ERROR)
#: The node annotations the device plugin writes on its own node (registration; releasing the lock).
NODE_AGENT_NODE_KEYS = (NODE_GPUS, NODE_LOCK)

PHASE_ALLOCATING = "allocating"
PHASE_SUCCESS = "success"
PHASE_FAILED = "failed"


def _load(key: str, raw: str) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise CodecError(f"annotation {key}: not JSON ({e})") from e
    if not isinstance(doc, dict):
        raise CodecError(f"annotation {key}: expected a JSON object")
    if doc.get("v") != VERSION:
        raise CodecError(f"annotation {key}: unsupported version {doc.get('v')!r} (this build reads v{VERSION})")
    return doc


def _get(doc: Mapping[str, Any], field: str, typ: type | tuple[type, ...], key: str) -> Any:
    v = doc.get(field)
    if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
        raise CodecError(f"annotation {key}: field {field!r} missing or not {getattr(typ, '__name__', typ)}")
    return v


def _dumps(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True)


# --------------------------------------------------------------------------- node registration


#: Namespace of the holder that marks an orphan instance in use (a process no pod accounts for), so
#: that no plan takes, moves or re-cuts it: ``(orphan)/<MIG UUID>/0/0`` (shaped like a unit holder).
ORPHAN_NAMESPACE = "(orphan)"


def orphan_holder(mig_uuid: str) -> str:
    return f"{ORPHAN_NAMESPACE}/{mig_uuid}/0/0"


@dataclass(frozen=True)
class Orphan:
    """An instance NVML reports that no pod accounts for and that the plugin must not hand out or
    destroy blindly (found at restart adoption, ``deviceplugin.adoption``).

    ``reason``: ``process`` (processes run on it, no pod holds it: published as held),
    ``incomplete`` (a GPU instance without a compute instance, left by an interrupted apply),
    ``unknown-profile`` (a profile the catalog does not know: not published as an instance).
    """

    gpu: str  # GPU UUID
    profile: str
    start: int
    uuid: str | None  # MIG UUID; None for a GPU instance without a compute instance
    reason: str
    detail: str = ""


@dataclass(frozen=True)
class NodeRegistration:
    mode: NodeMode
    gpus: tuple[Gpu, ...]  # instances carry no holders (holders come from pods), orphans excepted
    nvml_names: tuple[str, ...] = ()
    applier: Applier = Applier.MIG_PARTED  # how this node changes MIG layouts (models.relayout)
    orphans: tuple[Orphan, ...] = ()


# ---- node registration: encode / decode (helper 15b signs the encoded text; keep these two pure)


def encode_node(reg: NodeRegistration) -> str:
    gpus = []
    for i, g in enumerate(reg.gpus):
        gpus.append(
            {
                "uuid": g.uuid,
                "index": g.index,
                "model": g.model,
                "nvml": reg.nvml_names[i] if i < len(reg.nvml_names) else "",
                "memory": g.memory_mib,
                "split": g.split,
                "health": g.health,
                "instances": [
                    {"profile": x.slot.profile, "start": x.slot.start, "uuid": x.uuid} for x in g.instances
                ],
            }
        )
    doc: dict[str, Any] = {"v": VERSION, "mode": reg.mode.value, "gpus": gpus}
    # Written only when they say something, so a default node's registration stays what it was.
    if reg.applier is not Applier.MIG_PARTED:
        doc["applier"] = reg.applier.value
    if reg.orphans:
        doc["orphans"] = [{"gpu": o.gpu, "profile": o.profile, "start": o.start, "uuid": o.uuid,
                           "reason": o.reason, **({"detail": o.detail} if o.detail else {})} for o in reg.orphans]
    return _dumps(doc)


def _orphans(doc: Mapping[str, Any], key: str) -> tuple[Orphan, ...]:
    raw = doc.get("orphans") or []
    if not isinstance(raw, list):
        raise CodecError(f"annotation {key}: field 'orphans' must be a list")
    out = []
    for o in raw:
        if not isinstance(o, dict):
            raise CodecError(f"annotation {key}: each orphan must be an object")
        uuid = o.get("uuid")
        out.append(Orphan(_get(o, "gpu", str, key), _get(o, "profile", str, key), _get(o, "start", int, key),
                          uuid if isinstance(uuid, str) else None, _get(o, "reason", str, key),
                          str(o.get("detail") or "")))
    return tuple(out)


#: Decoded annotations by their raw text, at most this many each (decoded values are frozen, so
#: one object can serve every caller; the extender decodes the same 1,000 registrations and the
#: same reservations on every state rebuild). Errors are not cached: they are raised again.
DECODE_CACHE_LIMIT = 8192
_T = TypeVar("_T")
_NODE_CACHE: dict[str, NodeRegistration] = {}
_ALLOCATION_CACHE: dict[str, PodAllocation] = {}


def _cached(cache: dict[str, _T], raw: str, decode: Callable[[str], _T]) -> _T:
    """``decode(raw)``, remembered by the raw text (decoded values are frozen; errors are not kept)."""
    got = cache.get(raw)
    if got is None:
        if len(cache) >= DECODE_CACHE_LIMIT:
            cache.clear()
        got = cache[raw] = decode(raw)
    return got


def decode_node(raw: str) -> NodeRegistration:
    """The registration; an instance named by a ``process`` orphan comes back held by
    :func:`orphan_holder`, every other one free."""
    return _cached(_NODE_CACHE, raw, _decode_node)


def _decode_node(raw: str) -> NodeRegistration:
    key = NODE_GPUS
    doc = _load(key, raw)
    try:
        mode = NodeMode(str(doc.get("mode")))
    except ValueError:
        raise CodecError(f"annotation {key}: unknown mode {doc.get('mode')!r}") from None
    try:
        applier = Applier(str(doc.get("applier", Applier.MIG_PARTED.value)))
    except ValueError:
        raise CodecError(f"annotation {key}: unknown applier {doc.get('applier')!r} "
                         f"(known: {', '.join(a.value for a in Applier)})") from None
    orphans = _orphans(doc, key)
    in_use = {o.uuid for o in orphans if o.reason == "process" and o.uuid}
    gpus = []
    names = []
    for g in _get(doc, "gpus", list, key):
        if not isinstance(g, dict):
            raise CodecError(f"annotation {key}: each GPU must be an object")
        insts = []
        for x in g.get("instances") or []:
            slot = Slot(_get(x, "profile", str, key), _get(x, "start", int, key))
            uuid = x.get("uuid")
            uuid = uuid if isinstance(uuid, str) else None
            insts.append(MigInstance(slot, orphan_holder(uuid) if uuid in in_use and uuid else None, uuid))
        gpus.append(
            Gpu(
                uuid=_get(g, "uuid", str, key),
                index=_get(g, "index", int, key),
                model=_get(g, "model", str, key),
                mode=mode,
                memory_mib=_get(g, "memory", int, key),
                split=int(g.get("split", 10)),
                health=bool(g.get("health", True)),
                instances=tuple(insts),
            )
        )
        names.append(str(g.get("nvml", "")))
    return NodeRegistration(mode, tuple(gpus), tuple(names), applier, orphans)


# --------------------------------------------------------------------------- pod allocation


@dataclass(frozen=True)
class PodAllocation:
    """What the extender reserved for one pod: its units and the layouts they need."""

    pod: str
    node: str
    units: tuple[UnitAssignment, ...]
    layouts: tuple[LayoutChange, ...] = ()


def allocation_from_plan(plan: Plan) -> PodAllocation:
    p = plan.placements[0]
    gpus = {u.gpu for u in p.units}
    return PodAllocation(
        p.pod, p.node or "", p.units, tuple(c for c in plan.layout_changes if c.gpu in gpus)
    )


def encode_allocation(a: PodAllocation) -> str:
    units = [
        {
            "c": u.container_index,
            "container": u.container,
            "u": u.unit,
            "gpu": u.gpu,
            "index": u.gpu_index,
            "kind": u.kind.value,
            "profile": u.slot.profile if u.slot else None,
            "start": u.slot.start if u.slot else None,
            "memory": u.memory_mib,
            "cores": u.cores,
            "reconfigure": u.reconfigure,
            "template": u.template_index,
        }
        for u in a.units
    ]
    layouts = [
        {"gpu": c.gpu, "slots": [[s.profile, s.start] for s in c.layout], "template": c.template_index,
         **({"incremental": True} if c.incremental else {})}
        for c in a.layouts
    ]
    return _dumps({"v": VERSION, "pod": a.pod, "node": a.node, "units": units, "layouts": layouts})


def _layout(raw: Any, key: str) -> Layout:
    if not isinstance(raw, list):
        raise CodecError(f"annotation {key}: layout slots must be a list")
    slots = []
    for s in raw:
        if not (isinstance(s, list) and len(s) == 2 and isinstance(s[0], str) and isinstance(s[1], int)):
            raise CodecError(f"annotation {key}: a slot must be [profile, start], got {s!r}")
        slots.append(Slot(s[0], s[1]))
    return make_layout(slots)


def decode_allocation(raw: str) -> PodAllocation:
    return _cached(_ALLOCATION_CACHE, raw, _decode_allocation)


def _decode_allocation(raw: str) -> PodAllocation:
    key = POD_ALLOCATION
    doc = _load(key, raw)
    pod = _get(doc, "pod", str, key)
    node = _get(doc, "node", str, key)
    units = []
    for u in _get(doc, "units", list, key):
        if not isinstance(u, dict):
            raise CodecError(f"annotation {key}: each unit must be an object")
        try:
            kind = UnitKind(str(u.get("kind")))
        except ValueError:
            raise CodecError(f"annotation {key}: unknown unit kind {u.get('kind')!r}") from None
        slot = None
        if kind is UnitKind.MIG:
            slot = Slot(_get(u, "profile", str, key), _get(u, "start", int, key))
        tpl = u.get("template")
        units.append(
            UnitAssignment(
                pod=pod,
                container=str(u.get("container", "")),
                container_index=_get(u, "c", int, key),
                unit=_get(u, "u", int, key),
                node=node,
                gpu=_get(u, "gpu", str, key),
                gpu_index=_get(u, "index", int, key),
                kind=kind,
                memory_mib=_get(u, "memory", int, key),
                cores=_get(u, "cores", int, key),
                slot=slot,
                reconfigure=bool(u.get("reconfigure", False)),
                template_index=tpl if isinstance(tpl, int) else None,
            )
        )
    layouts = []
    for c in doc.get("layouts") or []:
        if not isinstance(c, dict):
            raise CodecError(f"annotation {key}: each layout must be an object")
        tpl = c.get("template")
        layouts.append(
            LayoutChange(node, _get(c, "gpu", str, key), _layout(c.get("slots"), key),
                         tpl if isinstance(tpl, int) else None, c.get("incremental") is True)
        )
    return PodAllocation(pod, node, tuple(units), tuple(layouts))


@dataclass(frozen=True)
class AllocatedUnit:
    """What the device plugin realised for one unit (MIG UUID or shared GPU UUID)."""

    container_index: int
    unit: int
    device: str


def encode_allocated(units: tuple[AllocatedUnit, ...]) -> str:
    return _dumps({"v": VERSION, "units": [{"c": u.container_index, "u": u.unit, "device": u.device}
                                           for u in units]})


def decode_allocated(raw: str) -> tuple[AllocatedUnit, ...]:
    key = POD_ALLOCATED
    doc = _load(key, raw)
    return tuple(
        AllocatedUnit(_get(u, "c", int, key), _get(u, "u", int, key), _get(u, "device", str, key))
        for u in _get(doc, "units", list, key)
    )


# --------------------------------------------------------------------------- node lock


@dataclass(frozen=True)
class NodeLock:
    """Node lock value: ``<unix seconds>,<namespace>,<pod>,<owner>`` (owner = extender instance)."""

    taken_at: float
    pod: str  # namespace/name
    owner: str

    def encode(self) -> str:
        ns, name = self.pod.split("/", 1)
        return f"{self.taken_at:.3f},{ns},{name},{self.owner}"


def decode_lock(raw: str) -> NodeLock:
    parts = raw.split(",")
    if len(parts) != 4:
        raise CodecError(f"annotation {NODE_LOCK}: expected '<time>,<namespace>,<pod>,<owner>', got {raw!r}")
    try:
        t = float(parts[0])
    except ValueError:
        raise CodecError(f"annotation {NODE_LOCK}: bad time {parts[0]!r}") from None
    return NodeLock(t, f"{parts[1]}/{parts[2]}", parts[3])


def registration_of(node: Node) -> NodeRegistration:
    """The registration a node's device plugin would publish (holders dropped)."""
    gpus = tuple(
        Gpu(g.uuid, g.index, g.model, g.mode, g.memory_mib, g.split, g.health,
            tuple(MigInstance(i.slot, None, i.uuid) for i in g.instances))
        for g in node.gpus
    )
    return NodeRegistration(node.mode, gpus, (), node.applier)
