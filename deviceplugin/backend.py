"""The GPU backend protocol: what the node agent reads from NVML (or from the simulator).

A backend *reads* (:class:`GpuBackend`). Layouts change in one of two ways, the node's applier
(``models.relayout``): through ``nvidia-mig-parted`` (real or simulated; whole GPU), or, on ``nvml``
nodes, through the per-instance NVML calls of :class:`MigOps` (create a GPU instance at a placement,
create its compute instance, destroy), which both backends implement with NVML's return codes
(:mod:`deviceplugin.nvml` over pynvml, :mod:`deviceplugin.sim` over the simulator state).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

# NVML return codes and their nvmlErrorString() texts (what mig-parted prints).
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_UNKNOWN = 999
NVML_ERROR_IN_USE = 19
NVML_ERROR_INSUFFICIENT_RESOURCES = 23

NVML_ERROR_STRINGS = {
    NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_NOT_FOUND: "Not Found",
    NVML_ERROR_IN_USE: "In use by another client",
    NVML_ERROR_INSUFFICIENT_RESOURCES: "Insufficient Resources",
    NVML_ERROR_UNKNOWN: "Unknown Error",
}


class GpuBackendError(Exception):
    """A backend could not be read (no driver, NVML failure, unreadable simulator state)."""


class NvmlCallError(GpuBackendError):
    """An NVML-style call failed with a return code (the simulator raises these like NVML does)."""

    def __init__(self, code: int, detail: str = "") -> None:
        self.code = code
        self.text = NVML_ERROR_STRINGS.get(code, f"Unknown Error ({code})")
        super().__init__(f"{self.text}{': ' + detail if detail else ''}")


@dataclass(frozen=True)
class MigDevice:
    """One MIG device (a GPU instance with its compute instance) as NVML reports it."""

    uuid: str
    profile: str  # GI profile name, e.g. "3g.20gb"
    start: int  # placement start (memory slice)
    size: int  # placement size (memory slices)
    gi_id: int
    ci_id: int = 0
    memory_mib: int = 0


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    used_memory_mib: int = 0
    mig_uuid: str | None = None  # the MIG device it runs on, when MIG is enabled


@dataclass(frozen=True)
class GiProfile:
    """A GPU-instance profile as NVML reports it for one GPU."""

    name: str
    profile_id: int  # the id nvidia-smi prints (19 for 1g on A100), NVML's info.id
    slice_count: int  # compute slices
    memory_mib: int
    max_count: int
    placements: tuple[tuple[int, int], ...]  # (start, size)


@dataclass(frozen=True)
class GpuInfo:
    index: int
    uuid: str
    name: str  # NVML device name, e.g. "NVIDIA A100-SXM4-40GB"
    memory_mib: int
    pci_device_id: str = "0x000010DE"  # device + vendor id as mig-parted's device-filter writes it
    mig_capable: bool = False
    mig_enabled: bool = False
    mig_pending: bool | None = None  # pending mode differs from current (Ampere: needs a reset)
    health: bool = True
    instances: tuple[MigDevice, ...] = ()
    processes: tuple[GpuProcess, ...] = field(default=())

    def profile_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in self.instances:
            out[d.profile] = out.get(d.profile, 0) + 1
        return out

    def instance_at(self, profile: str, start: int) -> MigDevice | None:
        for d in self.instances:
            if d.profile == profile and d.start == start:
                return d
        return None

    def instance_by_uuid(self, uuid: str) -> MigDevice | None:
        for d in self.instances:
            if d.uuid == uuid:
                return d
        return None


@runtime_checkable
class GpuBackend(Protocol):
    """Read-only view of the node's GPUs (NVML on real nodes, a JSON state file in simulation)."""

    kind: str  # "nvml" | "sim"

    def driver_version(self) -> str: ...

    def gpus(self) -> tuple[GpuInfo, ...]:
        """A fresh snapshot of every GPU, in index order."""
        ...

    def gi_profiles(self, index: int) -> tuple[GiProfile, ...]:
        """The GPU-instance profiles (memory, placements) GPU ``index`` supports; () if not MIG-capable."""
        ...

    def migparted_env(self) -> dict[str, str]:
        """Extra environment for the mig-parted child process (the simulator's state file)."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class GiRecord:
    """One GPU instance as NVML lists it, with its compute instances (a usable MIG device has one;
    none means an interrupted create left it half made)."""

    gi_id: int
    profile: str  # GI profile name, e.g. "3g.40gb"
    start: int
    size: int
    ci_ids: tuple[int, ...] = ()


@runtime_checkable
class MigOps(Protocol):
    """Per-instance MIG changes (the ``nvml`` applier's calls). Failures raise :class:`NvmlCallError`
    with NVML's code: an occupied placement is ``INSUFFICIENT_RESOURCES`` (not ``ALREADY_EXISTS``),
    destroying an instance that runs a process is ``IN_USE``. Nothing is rolled back by these calls."""

    def gpu_instances(self, index: int) -> tuple[GiRecord, ...]:
        """Every GPU instance of GPU ``index`` with its compute instances (``nvmlDeviceGetGpuInstances``)."""
        ...

    def possible_placements(self, index: int, profile: str) -> tuple[tuple[int, int], ...]:
        """``nvmlDeviceGetGpuInstancePossiblePlacements_v2``: (start, size) the profile may take,
        whatever is occupied now."""
        ...

    def create_gpu_instance(self, index: int, profile: str, start: int) -> int:
        """``nvmlDeviceCreateGpuInstanceWithPlacement``; the new GI id."""
        ...

    def create_compute_instance(self, index: int, gi_id: int) -> int:
        """``nvmlGpuInstanceCreateComputeInstance`` with the CI profile spanning the GI; the CI id."""
        ...

    def destroy_compute_instance(self, index: int, gi_id: int, ci_id: int) -> None: ...

    def destroy_gpu_instance(self, index: int, gi_id: int) -> None:
        """``nvmlGpuInstanceDestroy`` (its compute instances must be gone first)."""
        ...
