"""Serving one container's units: re-partition when planned, pick the MIG device, build the response.

MIG units answer ``NVIDIA_VISIBLE_DEVICES=<MIG UUIDs>`` and nothing else; hami-core units get the
HAMi-core environment and mounts (``reference/deviceplugin-api.md`` §11). Pure of gRPC: the server
turns a :class:`ContainerResponse` into protobuf.
"""

from __future__ import annotations

import logging
import os
import uuid as uuidlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from models.codecs import AllocatedUnit
from models.layouts import Slot, profile_counts
from models.plan import LayoutChange, UnitAssignment
from models.store import ClusterStore
from models.types import Applier, NodeMode, UnitKind

from .apply import Relayout, RelayoutError
from .backend import GpuBackend, GpuInfo, MigDevice
from .podmatch import AllocationError, Holding, PodTarget, gpu_holders, instance_holders

log = logging.getLogger("dynamig.deviceplugin")


@dataclass(frozen=True)
class Mount:
    container_path: str
    host_path: str
    read_only: bool = False


@dataclass
class ContainerResponse:
    envs: dict[str, str] = field(default_factory=dict)
    mounts: list[Mount] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)
    served: list[AllocatedUnit] = field(default_factory=list)
    reconfigured: list[int] = field(default_factory=list)  # GPU indices re-partitioned for this container


@dataclass(frozen=True)
class HamiCoreSettings:
    hook_path: str = "/usr/local"
    create_host_dirs: bool = True
    memory_scaling: float = 1.0
    core_limit_disabled: bool = False


def _container_spec(pod: dict[str, Any], index: int) -> dict[str, Any]:
    spec = pod.get("spec") or {}
    all_containers = list(spec.get("initContainers") or []) + list(spec.get("containers") or [])
    return all_containers[index] if 0 <= index < len(all_containers) else {}


def _env_true(container: dict[str, Any], name: str) -> bool:
    return any(e.get("name") == name and str(e.get("value", "")).lower() == "true"
               for e in container.get("env") or [])


def _describe_layout(g: GpuInfo) -> str:
    if not g.mig_enabled:
        return "MIG disabled"
    return ", ".join(f"{d.profile}@{d.start}" for d in g.instances) or "no instance"


class Allocator:
    def __init__(self, node: str, mode: NodeMode, backend: GpuBackend, store: ClusterStore,
                 relayout: Relayout, hami: HamiCoreSettings, on_layout_change: Callable[[], None]) -> None:
        self.node = node
        self.mode = mode
        self.backend = backend
        self.store = store
        self.relayout = relayout  # the node's applier: mig-parted (whole GPU) or nvml (per instance)
        self.hami = hami
        self.on_layout_change = on_layout_change

    # ---- checks
    def _check_idle(self, g: GpuInfo, held: Sequence[Holding], what: str) -> None:
        if g.processes:
            pids = ", ".join(str(p.pid) for p in g.processes[:5])
            raise AllocationError(f"GPU {g.index} ({g.uuid}) runs {len(g.processes)} process(es) (pid {pids}); "
                                  f"{what}")
        holders = gpu_holders(held, g.uuid)
        if holders:
            desc = "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(holders.items()))
            raise AllocationError(f"GPU {g.index} ({g.uuid}) holds allocated instances ({desc}); {what}")

    @staticmethod
    def _held_uuids(g: GpuInfo, held: Sequence[Holding]) -> set[str]:
        """MIG UUIDs on ``g`` that pods hold (served by UUID, or planned at a slot)."""
        out: set[str] = set()
        for h in held:
            if h.gpu != g.uuid:
                continue
            if h.device is not None:
                out.add(h.device)
            elif h.slot is not None:
                inst = g.instance_at(*h.slot)
                if inst is not None:
                    out.add(inst.uuid)
        return out

    def _ensure_layout(self, g: GpuInfo, change: LayoutChange, gpus: dict[str, GpuInfo],
                       held: Sequence[Holding], resp: ContainerResponse) -> GpuInfo:
        """GPU ``g`` with the planned layout, through the node's applier (:class:`Relayout`): a
        whole re-cut only while idle; on an ``nvml`` node also a partial change of a busy GPU."""
        whole_gpu = self.relayout.applier is Applier.MIG_PARTED
        if g.mig_enabled and whole_gpu and g.profile_counts() == profile_counts(change.layout):
            return g  # mig-parted places by counts: the same counts are the same layout to it
        if not g.mig_enabled:
            self._check_idle(g, held, "its MIG layout can change only while no instance is held and nothing runs")
            for o in gpus.values():
                if o.uuid != g.uuid and o.mig_enabled and o.instances and whole_gpu:
                    self._check_idle(o, held, f"enabling MIG mode on GPU {g.index} makes mig-parted recreate the "
                                              "instances of every MIG-enabled GPU of the node")
        before = g
        try:
            new = self.relayout.ensure(g, change.layout, self._held_uuids(g, held))
        except RelayoutError as e:
            holders = gpu_holders(held, g.uuid)
            desc = "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(holders.items()))
            raise AllocationError(e.reason + (f"; GPU {g.index} ({g.uuid}) holds allocated instances ({desc})"
                                              if holders else "")) from e
        finally:
            self.on_layout_change()
        if new is not before:
            resp.reconfigured.append(g.index)
        return new

    @staticmethod
    def _instance(g: GpuInfo, slot: Slot, change: LayoutChange | None) -> MigDevice | None:
        inst = g.instance_at(slot.profile, slot.start)
        if inst is not None or change is None:
            return inst
        # mig-parted places by counts only: map the planned slot to the same-rank instance of its profile.
        planned = sorted(s.start for s in change.layout if s.profile == slot.profile)
        actual = sorted((d for d in g.instances if d.profile == slot.profile), key=lambda d: d.start)
        if slot.start in planned and planned.index(slot.start) < len(actual):
            found = actual[planned.index(slot.start)]
            log.warning("GPU %d (%s) placed %s at start %d, planned %d", g.index, g.uuid, slot.profile,
                        found.start, slot.start)
            return found
        return None

    # ---- serving
    def serve(self, target: PodTarget, held: Sequence[Holding]) -> ContainerResponse:
        """Serve ``target``'s container; ``held`` is everything live pods hold on this node
        (:func:`deviceplugin.podmatch.holdings`): never handed out again, never re-partitioned."""
        resp = ContainerResponse()
        gpus = {g.uuid: g for g in self.backend.gpus()}
        changes = {c.gpu: c for c in target.allocation.layouts}
        served: list[tuple[UnitAssignment, str]] = []
        taken_here = {u.device for u in target.allocated}
        for u in target.units:
            g = gpus.get(u.gpu)
            if g is None:
                raise AllocationError(f"pod {target.key} was planned on GPU {u.gpu}, which is not on node {self.node}",
                                      target.key)
            if u.kind is UnitKind.MIG:
                if u.slot is None:
                    raise AllocationError(f"pod {target.key}: MIG unit without an instance", target.key)
                change = changes.get(u.gpu)
                if change is not None:
                    g = self._ensure_layout(g, change, gpus, held, resp)
                    gpus[g.uuid] = g
                inst = self._instance(g, u.slot, change)
                if inst is None:
                    raise AllocationError(f"planned MIG instance {u.slot} is not on GPU {g.index} ({g.uuid}), "
                                          f"which has {_describe_layout(g)}", target.key)
                holders = instance_holders(held, g.uuid, inst.uuid, (inst.profile, inst.start), exclude=target.key)
                if holders or inst.uuid in taken_here:
                    who = ", ".join(sorted(holders)) or f"{target.key} (an earlier container)"
                    raise AllocationError(f"MIG instance {u.slot} ({inst.uuid}) on GPU {g.index} is already "
                                          f"allocated to {who}", target.key)
                taken_here.add(inst.uuid)
                served.append((u, inst.uuid))
            else:
                if g.mig_enabled:
                    raise AllocationError(f"GPU {g.index} ({g.uuid}) is MIG-enabled; HAMi-core cannot share it",
                                          target.key)
                served.append((u, g.uuid))
        resp.served = [AllocatedUnit(u.container_index, u.unit, dev) for u, dev in served]
        resp.envs["NVIDIA_VISIBLE_DEVICES"] = ",".join(dev for _, dev in served)
        shares = [(i, u) for i, (u, _) in enumerate(served) if u.kind is UnitKind.SHARE]
        if shares:
            self._hami_core(target, shares, resp)
        return resp

    def _hami_core(self, target: PodTarget, shares: list[tuple[int, UnitAssignment]], resp: ContainerResponse) -> None:
        hook = self.hami.hook_path.rstrip("/") or "/"
        vgpu = os.path.join(hook, "vgpu")
        for i, u in shares:
            resp.envs[f"CUDA_DEVICE_MEMORY_LIMIT_{i}"] = f"{u.memory_mib}m"
        resp.envs["CUDA_DEVICE_SM_LIMIT"] = str(shares[0][1].cores)
        resp.envs["CUDA_DEVICE_MEMORY_SHARED_CACHE"] = os.path.join(vgpu, f"{uuidlib.uuid4()}.cache")
        if self.hami.memory_scaling > 1:
            resp.envs["CUDA_OVERSUBSCRIBE"] = "true"
        if self.hami.core_limit_disabled:
            resp.envs["GPU_CORE_UTILIZATION_POLICY"] = "disable"
        container = _container_spec(target.pod, target.container_index)
        cname = str(container.get("name") or shares[0][1].container or target.container_index)
        host_dir = os.path.join(vgpu, "containers", f"{target.uid or target.name}_{cname}")
        if self.hami.create_host_dirs:
            try:
                os.makedirs(host_dir, exist_ok=True)
                os.chmod(host_dir, 0o777)
            except OSError as e:
                log.warning("node %s: cannot create %s: %s", self.node, host_dir, e)
        resp.mounts.append(Mount(os.path.join(vgpu, "libvgpu.so"), os.path.join(vgpu, "libvgpu.so"), True))
        resp.mounts.append(Mount(vgpu, host_dir, False))
        resp.mounts.append(Mount("/tmp/vgpulock", "/tmp/vgpulock", False))
        if not _env_true(container, "CUDA_DISABLE_CONTROL"):
            resp.mounts.append(Mount("/etc/ld.so.preload", os.path.join(vgpu, "ld.so.preload"), True))
