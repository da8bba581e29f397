"""Restart adoption: match the MIG instances NVML reports to the pods' allocations, report orphans.

A plugin that restarts (or starts on a node whose GPUs were cut by hand, by HAMi, or by an apply
that was interrupted) must not assume anything about the instances it finds, and must never destroy
them blindly. Every instance is classified:

- ``held``: a live pod on this node was served it (``dynamig.io/allocated`` names its MIG UUID), or
  was bound with it planned (``success`` without ``allocated`` yet);
- ``reserved``: a pod still being allocated here was planned onto it;
- ``free``: no pod, no process: an ordinary free instance of the layout, offered as such;
- orphans (:class:`~models.codecs.Orphan`): ``process`` (processes run on it and no pod holds it:
  published as held, so no plan takes, moves or re-cuts it), ``incomplete`` (a GPU instance without a
  compute instance: not a MIG device; the nvml applier completes it when its slot is wanted and
  removes it when not), ``unknown-profile`` (a profile the catalog lacks: not published).

Allocations naming a device that is not on the node are reported as ``lost``. Pure over its inputs
(a backend snapshot and the pod objects); the agent publishes the result in its registration.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from models.catalog import match_nvml_name
from models.cluster import active_allocation
from models.codecs import (
    PHASE_ALLOCATING,
    PHASE_SUCCESS,
    POD_ALLOCATED,
    POD_BIND_PHASE,
    NodeRegistration,
    Orphan,
    decode_allocated,
)
from models.errors import CodecError
from models.layouts import Slot
from models.types import UnitKind

from .backend import GiRecord, GpuBackend, GpuInfo, MigOps, NvmlCallError

log = logging.getLogger("dynamig.deviceplugin")


@dataclass(frozen=True)
class AdoptedInstance:
    gpu: str  # GPU UUID
    index: int
    slot: Slot
    uuid: str | None
    state: str  # held | reserved | free | orphan
    pods: tuple[str, ...] = ()


@dataclass(frozen=True)
class Adoption:
    instances: tuple[AdoptedInstance, ...]
    orphans: tuple[Orphan, ...]
    lost: tuple[str, ...] = ()  # "<pod>: <device>" for allocated devices not on the node

    def count(self, state: str) -> int:
        return sum(1 for i in self.instances if i.state == state)

    def summary(self) -> str:
        parts = [f"{self.count(s)} {s}" for s in ("held", "reserved", "free")]
        parts.append(f"{len(self.orphans)} orphan(s)")
        if self.lost:
            parts.append(f"{len(self.lost)} lost allocation(s)")
        return ", ".join(parts)


def _pod_key(pod: Mapping[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace') or 'default'}/{meta.get('name')}"


_BySlot = dict[tuple[str, Slot], list[str]]


def _claims(node: str, pods: Iterable[Mapping[str, Any]]) -> tuple[dict[str, list[str]], _BySlot, _BySlot]:
    """(device UUID -> pods served it, (GPU, slot) -> pods bound with it planned, (GPU, slot) -> pods
    being allocated onto it) for the live pods allocated on ``node``."""
    served: dict[str, list[str]] = {}
    planned: dict[tuple[str, Slot], list[str]] = {}
    pending: dict[tuple[str, Slot], list[str]] = {}
    for pod in pods:
        try:
            a = active_allocation(pod)
        except CodecError as e:
            log.warning("node %s: pod %s: %s (ignored for adoption)", node, _pod_key(pod), e)
            continue
        if a is None or a.node != node:
            continue
        key = _pod_key(pod)
        ann = (pod.get("metadata") or {}).get("annotations") or {}
        raw = ann.get(POD_ALLOCATED)
        devices: list[str] = []
        if raw:
            try:
                devices = [u.device for u in decode_allocated(raw)]
            except CodecError as e:
                log.warning("node %s: pod %s: %s (ignored for adoption)", node, key, e)
        for d in devices:
            served.setdefault(d, []).append(key)
        phase = ann.get(POD_BIND_PHASE)
        for u in a.units:
            if u.kind is not UnitKind.MIG or u.slot is None:
                continue
            if phase == PHASE_SUCCESS and not raw:
                planned.setdefault((u.gpu, u.slot), []).append(key)
            elif phase == PHASE_ALLOCATING:
                pending.setdefault((u.gpu, u.slot), []).append(key)
    return served, planned, pending


def _records(ops: MigOps | None, g: GpuInfo) -> tuple[GiRecord, ...]:
    if ops is None or not g.mig_enabled:
        return ()
    try:
        return ops.gpu_instances(g.index)
    except NvmlCallError as e:
        log.warning("GPU %d: cannot list GPU instances: %s", g.index, e)
        return ()


def adopt(node: str, gpus: Iterable[GpuInfo], pods: Iterable[Mapping[str, Any]],
          ops: MigOps | None = None) -> Adoption:
    """Classify every instance of ``gpus`` against the pods' allocations (see the module text)."""
    served, planned, pending = _claims(node, pods)
    out: list[AdoptedInstance] = []
    orphans: list[Orphan] = []
    seen_devices: set[str] = set()
    for g in gpus:
        seen_devices.add(g.uuid)
        m = match_nvml_name(g.name)
        for d in g.instances:
            seen_devices.add(d.uuid)
            slot = Slot(d.profile, d.start)
            holders = tuple(sorted(set(served.get(d.uuid, []) + planned.get((g.uuid, slot), []))))
            procs = [p.pid for p in g.processes if p.mig_uuid == d.uuid]
            if m is None or not m.has_profile(d.profile):
                orphans.append(Orphan(g.uuid, d.profile, d.start, d.uuid, "unknown-profile",
                                      f"{g.name}: profile not in the catalog"))
                state = "orphan"
            elif holders:
                state = "held"
            elif pending.get((g.uuid, slot)):
                state, holders = "reserved", tuple(sorted(pending[(g.uuid, slot)]))
            elif procs:
                orphans.append(Orphan(g.uuid, d.profile, d.start, d.uuid, "process",
                                      "pid " + ", ".join(str(p) for p in procs)))
                state = "orphan"
            else:
                state = "free"
            out.append(AdoptedInstance(g.uuid, g.index, slot, d.uuid, state, holders))
        for r in _records(ops, g):
            if not r.ci_ids:
                orphans.append(Orphan(g.uuid, r.profile, r.start, None, "incomplete",
                                      f"GPU instance {r.gi_id} has no compute instance"))
                out.append(AdoptedInstance(g.uuid, g.index, Slot(r.profile, r.start), None, "orphan"))
    lost = tuple(sorted(f"{p}: {dev}" for dev, ps in served.items() if dev not in seen_devices for p in ps))
    result = Adoption(tuple(out), tuple(orphans), lost)
    for o in result.orphans:
        log.warning("node %s: orphan MIG instance %s@%d on GPU %s (%s: %s); reported, not destroyed", node,
                    o.profile, o.start, o.gpu, o.reason, o.detail)
    for x in result.lost:
        log.warning("node %s: allocation names a device that is not on the node: %s", node, x)
    return result


def adopt_backend(node: str, backend: GpuBackend, pods: Iterable[Mapping[str, Any]]) -> Adoption:
    """:func:`adopt` over a backend snapshot (with its GPU-instance listing when it has one)."""
    ops = backend if isinstance(backend, MigOps) else None
    return adopt(node, backend.gpus(), pods, ops)


def with_adoption(reg: NodeRegistration, adoption: Adoption) -> NodeRegistration:
    """The registration carrying the orphans of the GPUs it publishes (decoded as held when in use)."""
    published = {g.uuid for g in reg.gpus}
    return replace(reg, orphans=tuple(o for o in adoption.orphans if o.gpu in published))
