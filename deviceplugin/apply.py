"""Layout application: one GPU to a new MIG layout, by the node's applier, then verified.

:class:`Relayout` is the one entry point: it classifies the change with ``models.relayout`` (none,
whole, partial, illegal) from what NVML reports and the pods' holdings, and runs the node's applier:
``mig-parted`` (:class:`LayoutApplier`, whole GPU, only while idle) or ``nvml``
(:class:`~deviceplugin.nvml_applier.NvmlApplier`, per instance, held instances untouched).

mig-parted: a config names every GPU of the node (the target with its new profile counts, every other GPU with
its current state) so that mig-parted skips the others and a full ``assert`` passes. One apply at a
time per node; the result is checked through the backend (mig-parted can exit 0 having created
nothing, HAMi #2131) and with ``assert``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Mapping

from models.catalog import match_nvml_name
from models.layouts import Layout, Slot, make_layout, profile_counts
from models.relayout import ChangeKind, Illegal, change_kind
from models.types import Applier, NodeMode

from .backend import GpuBackend, GpuInfo, MigOps
from .migparted import GpuTarget, MigPartedError, MigPartedRunner, SpecError, parse_config, render_config
from .nvml_applier import NvmlApplier, NvmlApplyError, busy_uuids

log = logging.getLogger("dynamig.deviceplugin")


def describe_counts(counts: Mapping[str, int]) -> str:
    items = [f"{n}x {p}" for p, n in sorted(counts.items()) if n > 0]
    return "{" + ", ".join(items) + "}" if items else "no instance"


class LayoutApplier:
    def __init__(self, node: str, backend: GpuBackend, runner: MigPartedRunner, config_dir: str | None,
                 run_assert: bool = True) -> None:
        self.node = node
        self.run_assert = run_assert
        self.backend = backend
        self.runner = runner
        self.config_dir = config_dir  # None: a private temporary directory, made on first use
        self._owned_dir: str | None = None
        self._lock = threading.Lock()
        self._seq = 0
        self.last_config: str | None = None  # the text of the last config written (tests, debugging)
        self.last_config_path: str | None = None
        self.applies = 0

    def _dir(self) -> str:
        if self.config_dir is not None:
            os.makedirs(self.config_dir, exist_ok=True)
            return self.config_dir
        if self._owned_dir is None:
            self._owned_dir = tempfile.mkdtemp(prefix=f"dynamig-mig-parted-{self.node}-")
        return self._owned_dir

    def close(self) -> None:
        """Remove the private config directory, if one was made."""
        if self._owned_dir is not None:
            shutil.rmtree(self._owned_dir, ignore_errors=True)
            self._owned_dir = None

    def config_for(self, index: int, counts: Mapping[str, int], gpus: tuple[GpuInfo, ...], name: str) -> str:
        targets = []
        for g in gpus:
            if g.index == index:
                targets.append(GpuTarget(g.index, True, dict(counts)))
            elif g.mig_capable and g.mig_enabled:
                targets.append(GpuTarget(g.index, True, g.profile_counts()))
            else:
                targets.append(GpuTarget(g.index, False))
        return render_config(name, targets)

    def apply(self, index: int, counts: Mapping[str, int]) -> GpuInfo:
        """Re-partition GPU ``index`` to ``counts``; the new GPU state. Raises :class:`MigPartedError`.

        The caller has checked that the GPU is idle."""
        want = {p: n for p, n in counts.items() if n > 0}
        with self._lock:
            gpus = self.backend.gpus()
            self._seq += 1
            name = f"dynamig-{self.node}-{self._seq}"
            text = self.config_for(index, want, gpus, name)
            try:
                parse_config(text)  # our own writer must produce what mig-parted accepts
            except SpecError as e:  # pragma: no cover - a bug in render_config
                raise MigPartedError(f"internal error: generated mig-parted config is invalid: {e}") from e
            path = os.path.join(self._dir(), f"mig-parted-{self.node}.yaml")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            self.last_config, self.last_config_path = text, path
            self.applies += 1
            log.info("node %s: applying %s to GPU %d with %s", self.node, describe_counts(want), index,
                     " ".join(self.runner.command))
            res = self.runner.apply(path, name)
            log.info("node %s: mig-parted apply done in %.2fs", self.node, res.seconds)
            after = {g.index: g for g in self.backend.gpus()}
            g = after.get(index)
            if g is None:
                raise MigPartedError(f"GPU {index} disappeared after nvidia-mig-parted apply")
            if not g.mig_enabled or g.profile_counts() != want:
                have = describe_counts(g.profile_counts()) if g.mig_enabled else "MIG disabled"
                raise MigPartedError(f"nvidia-mig-parted apply exited 0 but GPU {index} has {have} "
                                     f"instead of {describe_counts(want)}")
            if self.run_assert:
                self.runner.assert_applied(path, name)
            return g


class ApplierNotAvailable(Exception):
    """The chosen applier cannot serve this node (a usage error of the command line)."""


def resolve_applier(default: str, override: Applier | None, mode: NodeMode, node: str) -> Applier:
    """The node's applier: the nodeconfig entry's ``migapplier`` over the command line's default.

    Only mig nodes change layouts (``AgentConfig.node_applier`` publishes the default elsewhere)."""
    del mode, node
    return override or Applier(default)


class RelayoutError(Exception):
    """A layout change was refused or failed; ``reason`` is one sentence for the pod's annotation."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def current_layout(g: GpuInfo) -> Layout:
    return make_layout(Slot(d.profile, d.start) for d in g.instances)


def held_slots(g: GpuInfo, held_uuids: frozenset[str] | set[str]) -> tuple[Slot, ...]:
    """Slots of instances pods hold or processes run on (a process NVML cannot place holds them all)."""
    busy = busy_uuids(g, held_uuids)
    if any(not p.mig_uuid for p in g.processes):
        return current_layout(g)
    return make_layout(Slot(d.profile, d.start) for d in g.instances if d.uuid in busy)


def classify(g: GpuInfo, layout: Layout, held_uuids: frozenset[str] | set[str]) -> ChangeKind | Illegal:
    """``models.relayout.change_kind`` for a GPU as NVML reports it."""
    m = match_nvml_name(g.name)
    if m is None:
        return Illegal(f"GPU {g.index} ({g.name}) is not in the catalog", "layout-invalid")
    if not g.mig_enabled:
        return "whole" if not g.processes else Illegal(f"GPU {g.index} runs processes; MIG mode cannot change")
    return change_kind(m, current_layout(g), layout, held_slots(g, held_uuids))


class Relayout:
    """Changes a GPU's layout the way the node's applier can, or says why not.

    Call site (the allocator, instead of its own idle check + ``LayoutApplier.apply``)::

        new = relayout.ensure(g, change.layout, held)   # held: MIG UUIDs pods hold on the GPU
    """

    def __init__(self, node: str, applier: Applier, migparted: LayoutApplier | None,
                 nvml: NvmlApplier | None = None) -> None:
        if applier is Applier.NVML and nvml is None:
            raise ValueError("the nvml applier needs an NvmlApplier")
        if applier is Applier.MIG_PARTED and migparted is None:
            raise ValueError("the mig-parted applier needs a LayoutApplier")
        self.node = node
        self.applier = applier
        self.migparted = migparted
        self.nvml = nvml
        self.counts: dict[str, int] = {"whole": 0, "partial": 0}  # applied changes by kind (metrics)

    def ensure(self, g: GpuInfo, layout: Layout, held_uuids: frozenset[str] | set[str] = frozenset()) -> GpuInfo:
        """GPU ``g`` with ``layout`` (unchanged if it has it). Raises :class:`RelayoutError`."""
        kind = classify(g, layout, held_uuids)
        where = f"GPU {g.index} ({g.uuid})"
        if isinstance(kind, Illegal):
            runs = ""
            if g.processes:
                pids = ", ".join(str(p.pid) for p in g.processes[:5])
                runs = f" (the GPU runs {len(g.processes)} process(es) (pid {pids}))"
            raise RelayoutError(f"{where}: {kind.reason}{runs}")
        if kind == "none":
            return g
        if self.applier is Applier.MIG_PARTED:
            if kind == "partial" or g.processes:
                held = ", ".join(str(s) for s in held_slots(g, held_uuids)) or f"{len(g.processes)} process(es)"
                raise RelayoutError(f"{where}: its MIG layout can change only while no instance is held and nothing "
                                    f"runs (node {self.node} re-cuts whole GPUs with nvidia-mig-parted; held: {held})")
            assert self.migparted is not None
            try:
                new = self.migparted.apply(g.index, profile_counts(layout))
            except MigPartedError as e:
                raise RelayoutError(f"re-partitioning {where} to {describe_counts(profile_counts(layout))} failed: "
                                    f"{e.reason}") from e
        else:
            assert self.nvml is not None
            try:
                new = self.nvml.apply(g.index, layout, held_uuids).gpu
            except NvmlApplyError as e:
                raise RelayoutError(e.reason) from e
        self.counts[kind] += 1
        return new


def make_relayout(node: str, applier: Applier, backend: GpuBackend, migparted: LayoutApplier) -> Relayout:
    """The node agent's :class:`Relayout` for its applier (``nvml`` needs a backend with MigOps)."""
    if applier is Applier.NVML and not isinstance(backend, MigOps):
        raise ApplierNotAvailable(f"node {node}: applier nvml needs per-instance MIG calls, which backend "
                                  f"{backend.kind} does not have")
    nvml = NvmlApplier(node, backend) if applier is Applier.NVML else None
    return Relayout(node, applier, migparted, nvml)
