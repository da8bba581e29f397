"""The ``nvml`` applier: bring one GPU to a MIG layout instance by instance, never touching a held one.

Unlike ``nvidia-mig-parted apply`` (which clears the GPU first), this destroys only the free
instances that are not in the target layout, then creates the missing ones at their exact
placements (``nvmlDeviceCreateGpuInstanceWithPlacement`` + ``nvmlGpuInstanceCreateComputeInstance``),
as HAMi v2.10, NVIDIA's DRA driver and OpenShift's DAS do. It is

- *safe*: an instance that a pod holds (the caller's ``protected`` MIG UUIDs) or that runs a process
  is never destroyed; the apply is refused before any call if the target would lose one;
- *NVML-aware*: an occupied placement answers ``INSUFFICIENT_RESOURCES`` (not ``ALREADY_EXISTS``), so
  that error re-reads the GPU and adopts an instance already at the wanted placement (a previous,
  interrupted apply made it); destroying an instance that a process started on meanwhile answers
  ``IN_USE`` and stops the apply;
- *idempotent*: it compares the target with what NVML lists (GPU instances and their compute
  instances), so re-running an apply that half-succeeded completes it: a GPU instance left without
  its compute instance gets one when its slot is wanted, and is destroyed when it is not;
- *verified*: the result is read back through the backend and must equal the target.

Any failure leaves the GPU as NVML has it (nothing is cached); the caller re-reads and republishes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from models.catalog import GpuModel, match_nvml_name
from models.layouts import Layout, Slot, layout_problems, make_layout

from .backend import NVML_ERROR_IN_USE, NVML_ERROR_INSUFFICIENT_RESOURCES, GiRecord, GpuBackend, GpuInfo, MigOps
from .backend import NvmlCallError as NvmlCallError

log = logging.getLogger("dynamig.deviceplugin")


class NvmlApplyError(Exception):
    """The layout could not be (fully) applied; ``reason`` says what was done and what failed."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class ApplyReport:
    gpu: GpuInfo  # the GPU as read back after the apply
    destroyed: tuple[Slot, ...] = ()
    created: tuple[Slot, ...] = ()
    completed: tuple[Slot, ...] = ()  # half-made GPU instances that got their compute instance
    adopted: tuple[Slot, ...] = ()  # found already at the placement after INSUFFICIENT_RESOURCES

    @property
    def changed(self) -> bool:
        return bool(self.destroyed or self.created or self.completed or self.adopted)


def _fmt(slots: Iterable[Slot]) -> str:
    return ", ".join(str(s) for s in sorted(slots)) or "no instance"


def _slot(r: GiRecord) -> Slot:
    return Slot(r.profile, r.start)


def busy_uuids(g: GpuInfo, protected: Iterable[str]) -> set[str]:
    """MIG UUIDs that must not be destroyed: held by a pod, or running a process."""
    return set(protected) | {p.mig_uuid for p in g.processes if p.mig_uuid}


@dataclass
class _Progress:
    """What one apply did so far (for the error message: NVML does not roll back)."""

    index: int
    destroyed: list[Slot] = field(default_factory=list)
    created: list[Slot] = field(default_factory=list)
    completed: list[Slot] = field(default_factory=list)
    adopted: list[Slot] = field(default_factory=list)

    def done(self) -> str:
        parts = [f"{what} {_fmt(s)}" for what, s in (("destroyed", self.destroyed), ("created", self.created),
                                                     ("completed", self.completed)) if s]
        return "; ".join(parts) or "nothing changed"

    def fail(self, what: str, e: NvmlCallError) -> NvmlApplyError:
        hint = ""
        if e.code == NVML_ERROR_IN_USE:
            hint = " (a process uses it)"
        elif e.code == NVML_ERROR_INSUFFICIENT_RESOURCES:
            hint = " (the placement or the GPU's slices are taken)"
        return NvmlApplyError(f"GPU {self.index}: {what} failed: NVML {e}{hint}; {self.done()} before it")


class NvmlApplier:
    """Per-instance layout changes on one node (one apply at a time)."""

    def __init__(self, node: str, backend: GpuBackend, ops: MigOps | None = None) -> None:
        if ops is None:
            if not isinstance(backend, MigOps):
                raise TypeError(f"backend {backend.kind} has no per-instance MIG calls")
            ops = backend
        self.node = node
        self.backend = backend
        self.ops: MigOps = ops
        self._lock = threading.Lock()
        self.applies = 0

    def _gpu(self, index: int) -> GpuInfo:
        for g in self.backend.gpus():
            if g.index == index:
                return g
        raise NvmlApplyError(f"GPU {index} is not on node {self.node}")

    def apply(self, index: int, layout: Iterable[Slot], protected: Iterable[str] = ()) -> ApplyReport:
        """Bring GPU ``index`` to ``layout``; ``protected``: MIG UUIDs pods hold. Raises :class:`NvmlApplyError`."""
        target = make_layout(layout)
        with self._lock:
            self.applies += 1
            g = self._gpu(index)
            if not g.mig_capable or not g.mig_enabled:
                raise NvmlApplyError(f"GPU {index} ({g.uuid}) has MIG mode disabled; the nvml applier changes "
                                     "instances only (enabling MIG needs an idle GPU: nvidia-mig-parted)")
            m = match_nvml_name(g.name)
            if m is None:
                raise NvmlApplyError(f"GPU {index} ({g.name}) is not in the catalog")
            problems = layout_problems(m, target)
            if problems:
                raise NvmlApplyError(f"layout {_fmt(target)} is invalid on {m.name}: {'; '.join(problems)}")
            return self._apply(g, m, target, busy_uuids(g, protected))

    def _apply(self, g: GpuInfo, m: GpuModel, target: Layout, busy: set[str]) -> ApplyReport:
        index = g.index
        records = self.ops.gpu_instances(index)
        uuid_of = {d.gi_id: d.uuid for d in g.instances}
        wanted = set(target)
        drop = [r for r in records if _slot(r) not in wanted]
        busy_gis = {d.gi_id for d in g.instances if d.uuid in busy}  # a GI is busy if any of its CIs is
        lost = [f"{_slot(r)} ({uuid_of[r.gi_id]})" for r in drop if r.gi_id in busy_gis]
        if lost:
            raise NvmlApplyError(f"GPU {index}: refusing a layout that destroys held or running instance(s) "
                                 f"{', '.join(sorted(lost))}; nothing changed")
        unknown = [p.pid for p in g.processes if not p.mig_uuid]
        if drop and unknown:
            raise NvmlApplyError(f"GPU {index} runs process(es) {unknown} NVML does not attribute to an instance; "
                                 "refusing to destroy any instance; nothing changed")
        pr = _Progress(index)
        destroyed, created, completed, adopted = pr.destroyed, pr.created, pr.completed, pr.adopted
        fail, done = pr.fail, pr.done

        for r in sorted(drop, key=lambda r: r.gi_id):
            try:
                for ci in r.ci_ids:
                    self.ops.destroy_compute_instance(index, r.gi_id, ci)
                self.ops.destroy_gpu_instance(index, r.gi_id)
            except NvmlCallError as e:
                raise fail(f"destroying {_slot(r)}", e) from e
            destroyed.append(_slot(r))
        have = {_slot(r): r for r in records if _slot(r) in wanted}
        for slot, r in sorted(have.items()):
            if not r.ci_ids:
                try:
                    self.ops.create_compute_instance(index, r.gi_id)
                except NvmlCallError as e:
                    raise fail(f"creating the compute instance of {slot}", e) from e
                completed.append(slot)
        missing = sorted(wanted - set(have), key=lambda s: (-m.profile(s.profile).memory_slices, s.start, s.profile))
        for slot in missing:
            self._create(index, m, slot, pr)
        after = self._gpu(index)
        got = make_layout(Slot(d.profile, d.start) for d in after.instances)
        if got != target:
            raise NvmlApplyError(f"GPU {index}: after the apply NVML reports {_fmt(got)} instead of {_fmt(target)} "
                                 f"({done()})")
        gone = sorted(u for u in busy if u in set(uuid_of.values()) and after.instance_by_uuid(u) is None)
        if gone:  # pragma: no cover - the destroy phase never touches them
            raise NvmlApplyError(f"GPU {index}: held instance(s) {', '.join(gone)} vanished during the apply")
        if destroyed or created or completed or adopted:
            log.info("node %s: GPU %d now %s (%s)", self.node, index, _fmt(target), done())
        return ApplyReport(after, tuple(destroyed), tuple(created), tuple(completed), tuple(adopted))

    def _create(self, index: int, m: GpuModel, slot: Slot, pr: _Progress) -> None:
        fail, created, adopted, completed = pr.fail, pr.created, pr.adopted, pr.completed
        size = m.profile(slot.profile).memory_slices
        try:
            offered = self.ops.possible_placements(index, slot.profile)
        except NvmlCallError as e:
            raise fail(f"reading the placements of {slot.profile}", e) from e
        if (slot.start, size) not in offered:
            raise NvmlApplyError(f"GPU {index}: NVML offers no placement {slot.start}:{size} for {slot.profile} "
                                 f"(offers {' '.join(f'{s}:{z}' for s, z in offered) or 'none'}); the catalog and "
                                 "the driver differ (see dynamig hwcheck)")
        try:
            gi_id = self.ops.create_gpu_instance(index, slot.profile, slot.start)
        except NvmlCallError as e:
            if e.code != NVML_ERROR_INSUFFICIENT_RESOURCES:
                raise fail(f"creating {slot}", e) from e
            # NVML's answer for an occupied placement: is the instance we want already there?
            there = [r for r in self.ops.gpu_instances(index) if _slot(r) == slot]
            if not there:
                now = _fmt(_slot(r) for r in self.ops.gpu_instances(index))
                raise NvmlApplyError(f"GPU {index}: placement {slot} is occupied (NVML: Insufficient Resources); "
                                     f"the GPU has {now}") from e
            gi_id = there[0].gi_id
            adopted.append(slot)
            if there[0].ci_ids:
                return
        try:
            self.ops.create_compute_instance(index, gi_id)
        except NvmlCallError as e:
            reason = fail(f"creating the compute instance of {slot}", e).reason
            try:  # do not leave a half-made instance behind if it can go
                self.ops.destroy_gpu_instance(index, gi_id)
                reason += "; its GPU instance was destroyed again"
            except NvmlCallError:
                reason += ("; its GPU instance is left without a compute instance (the next apply completes "
                           "or removes it)")
            raise NvmlApplyError(reason) from e
        if slot in adopted:
            completed.append(slot)
        else:
            created.append(slot)
