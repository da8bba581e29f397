"""The NVML backend (pynvml / nvidia-ml-py): discovery on real nodes, and per-instance MIG calls.

Reads GPUs, names, UUIDs, memory, MIG mode, GPU-instance profiles with their possible placements,
existing MIG devices with their UUIDs and placements, and running processes. The reading path
changes nothing. The :class:`~deviceplugin.backend.MigOps` methods (create a GPU instance at a
placement, its compute instance, destroy) are used only by the ``nvml`` applier
(:mod:`deviceplugin.nvml_applier`); on ``mig-parted`` nodes layouts change through nvidia-mig-parted.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from types import ModuleType
from typing import Any

from models.catalog import match_nvml_name

from .backend import GiProfile, GiRecord, GpuBackendError, GpuInfo, GpuProcess, MigDevice, NvmlCallError

_MIB = 1024 * 1024
#: GI compute slices -> the NVML compute-instance profile enum of the CI spanning the whole GI.
_CI_PROFILE_BY_SLICES = {1: 0, 2: 1, 3: 2, 4: 3, 7: 4, 8: 5, 6: 6}


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def load_nvml() -> ModuleType:
    try:
        import pynvml
    except ImportError as e:  # pragma: no cover - dependency of the package
        raise GpuBackendError("nvidia-ml-py (pynvml) is not installed") from e
    return pynvml


class NvmlBackend:
    """:class:`~deviceplugin.backend.GpuBackend` over NVML. ``nvml`` is the pynvml module (injectable)."""

    kind = "nvml"

    def __init__(self, nvml: ModuleType | Any | None = None) -> None:
        self.nvml = nvml if nvml is not None else load_nvml()
        self._lock = threading.Lock()
        try:
            self.nvml.nvmlInit()
        except Exception as e:
            raise GpuBackendError(f"no NVIDIA driver: NVML could not be initialised ({e})") from e

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.nvml.nvmlShutdown()

    def migparted_env(self) -> dict[str, str]:
        return {}

    def driver_version(self) -> str:
        with self._lock:
            return _s(self.nvml.nvmlSystemGetDriverVersion())

    # ---- discovery
    def gpus(self) -> tuple[GpuInfo, ...]:
        n = self.nvml
        with self._lock:
            try:
                count = n.nvmlDeviceGetCount()
                return tuple(self._gpu(i, n.nvmlDeviceGetHandleByIndex(i)) for i in range(count))
            except GpuBackendError:
                raise
            except Exception as e:
                raise GpuBackendError(f"NVML: {e}") from e

    def _gpu(self, index: int, h: Any) -> GpuInfo:
        n = self.nvml
        name = _s(n.nvmlDeviceGetName(h))
        uuid = _s(n.nvmlDeviceGetUUID(h))
        memory = int(n.nvmlDeviceGetMemoryInfo(h).total) // _MIB
        try:
            pci = f"0x{int(n.nvmlDeviceGetPciInfo(h).pciDeviceId) & 0xFFFFFFFF:08X}"
        except Exception:
            pci = "0x000010DE"
        capable, enabled, pending = False, False, None
        try:
            current, pend = n.nvmlDeviceGetMigMode(h)
            capable = True
            enabled = current == n.NVML_DEVICE_MIG_ENABLE
            pending = pend != current
        except n.NVMLError:
            pass  # NOT_SUPPORTED: not MIG-capable
        instances = self._mig_devices(h, name) if enabled else ()
        procs = self._processes(h, instances)
        return GpuInfo(index, uuid, name, memory, pci, capable, enabled, pending, True, instances, procs)

    def _profiles(self, h: Any) -> list[Any]:
        """NVML profile infos the GPU supports (v2 infos carry the profile name)."""
        n = self.nvml
        out = []
        for p in range(int(n.NVML_GPU_INSTANCE_PROFILE_COUNT)):
            try:
                out.append(n.nvmlDeviceGetGpuInstanceProfileInfo(h, p))
            except n.NVMLError:
                continue
        return out

    @staticmethod
    def _profile_name(info: Any, gpu_name: str) -> str:
        raw = _s(getattr(info, "name", b"") or "").strip()
        if raw.startswith("MIG "):
            raw = raw[4:]
        if raw:
            return raw
        m = match_nvml_name(gpu_name)
        if m is not None:
            for p in m.profiles:
                if p.gi_profile_id == int(info.id):
                    return p.name
        return f"profile-{int(info.id)}"

    def _mig_devices(self, h: Any, gpu_name: str) -> tuple[MigDevice, ...]:
        n = self.nvml
        by_gi: dict[int, tuple[str, int, int, int]] = {}  # gi id -> (profile, start, size, memory)
        for info in self._profiles(h):
            if int(info.instanceCount) == 0:
                continue
            arr = (n.c_nvmlGpuInstance_t * int(info.instanceCount))()
            cnt = ctypes.c_uint(0)
            try:
                n.nvmlDeviceGetGpuInstances(h, info.id, arr, ctypes.byref(cnt))
            except n.NVMLError:
                continue
            for k in range(cnt.value):
                gi = n.nvmlGpuInstanceGetInfo(arr[k])
                by_gi[int(gi.id)] = (self._profile_name(info, gpu_name), int(gi.placement.start),
                                     int(gi.placement.size), int(info.memorySizeMB))
        out = []
        for i in range(int(n.nvmlDeviceGetMaxMigDeviceCount(h))):
            try:
                mh = n.nvmlDeviceGetMigDeviceHandleByIndex(h, i)
            except n.NVMLError:
                continue
            gi_id = int(n.nvmlDeviceGetGpuInstanceId(mh))
            ci_id = int(n.nvmlDeviceGetComputeInstanceId(mh))
            profile, start, size, mem = by_gi.get(gi_id, (f"gi-{gi_id}", -1, 0, 0))
            with contextlib.suppress(n.NVMLError):
                mem = int(n.nvmlDeviceGetMemoryInfo(mh).total) // _MIB
            out.append(MigDevice(_s(n.nvmlDeviceGetUUID(mh)), profile, start, size, gi_id, ci_id, mem))
        out.sort(key=lambda d: (d.start, d.gi_id, d.ci_id))
        return tuple(out)

    def _processes(self, h: Any, instances: tuple[MigDevice, ...]) -> tuple[GpuProcess, ...]:
        n = self.nvml
        seen: dict[int, GpuProcess] = {}
        by_ids = {(d.gi_id, d.ci_id): d.uuid for d in instances}
        try:
            procs = list(n.nvmlDeviceGetComputeRunningProcesses(h))
        except n.NVMLError:
            procs = []
        for p in procs:
            mem = getattr(p, "usedGpuMemory", 0) or 0
            gi = getattr(p, "gpuInstanceId", None)
            ci = getattr(p, "computeInstanceId", None)
            seen[int(p.pid)] = GpuProcess(int(p.pid), int(mem) // _MIB, by_ids.get((gi, ci)))
        # In MIG mode processes are also visible per MIG device handle.
        if instances:
            for i in range(int(n.nvmlDeviceGetMaxMigDeviceCount(h))):
                try:
                    mh = n.nvmlDeviceGetMigDeviceHandleByIndex(h, i)
                    uuid = _s(n.nvmlDeviceGetUUID(mh))
                    for p in n.nvmlDeviceGetComputeRunningProcesses(mh):
                        mem = getattr(p, "usedGpuMemory", 0) or 0
                        seen.setdefault(int(p.pid), GpuProcess(int(p.pid), int(mem) // _MIB, uuid))
                except n.NVMLError:
                    continue
        return tuple(sorted(seen.values(), key=lambda p: p.pid))

    def gi_profiles(self, index: int) -> tuple[GiProfile, ...]:
        n = self.nvml
        with self._lock:
            try:
                h = n.nvmlDeviceGetHandleByIndex(index)
                name = _s(n.nvmlDeviceGetName(h))
                try:
                    n.nvmlDeviceGetMigMode(h)
                except n.NVMLError:
                    return ()
                out = []
                for info in self._profiles(h):
                    out.append(GiProfile(self._profile_name(info, name), int(info.id), int(info.sliceCount),
                                         int(info.memorySizeMB), int(info.instanceCount),
                                         self._placements(h, int(info.id))))
                return tuple(out)
            except Exception as e:
                raise GpuBackendError(f"NVML: {e}") from e

    def _placements(self, h: Any, profile_id: int) -> tuple[tuple[int, int], ...]:
        n = self.nvml
        cnt = ctypes.c_uint(0)
        try:
            n.nvmlDeviceGetGpuInstancePossiblePlacements(h, profile_id, None, ctypes.byref(cnt))
            if cnt.value == 0:
                return ()
            arr = (n.c_nvmlGpuInstancePlacement_t * cnt.value)()
            n.nvmlDeviceGetGpuInstancePossiblePlacements(h, profile_id, arr, ctypes.byref(cnt))
        except n.NVMLError:
            return ()
        return tuple((int(arr[k].start), int(arr[k].size)) for k in range(cnt.value))

    # ---- MigOps: per-instance changes (the nvml applier only)
    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except self.nvml.NVMLError as e:
            raise NvmlCallError(int(getattr(e, "value", 999)), what) from e

    def _profile_table(self, h: Any) -> list[tuple[int, Any]]:
        """(NVML profile enum, profile info) for every GI profile the GPU supports."""
        n = self.nvml
        out = []
        for p in range(int(n.NVML_GPU_INSTANCE_PROFILE_COUNT)):
            try:
                out.append((p, n.nvmlDeviceGetGpuInstanceProfileInfo(h, p)))
            except n.NVMLError:
                continue
        return out

    def _profile_info(self, h: Any, profile: str) -> Any:
        name = _s(self.nvml.nvmlDeviceGetName(h))
        for _, info in self._profile_table(h):
            if self._profile_name(info, name) == profile:
                return info
        raise NvmlCallError(3, f"GPU {name} offers no GPU instance profile {profile}")  # NOT_SUPPORTED

    def _ci_ids(self, gi: Any) -> tuple[int, ...]:
        n = self.nvml
        ids: list[int] = []
        for enum in range(int(getattr(n, "NVML_COMPUTE_INSTANCE_PROFILE_COUNT", 9))):
            try:
                info = n.nvmlGpuInstanceGetComputeInstanceProfileInfo(gi, enum,
                                                                      n.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
            except n.NVMLError:
                continue
            if int(info.instanceCount) == 0:
                continue
            arr = (n.c_nvmlComputeInstance_t * int(info.instanceCount))()
            cnt = ctypes.c_uint(0)
            try:
                n.nvmlGpuInstanceGetComputeInstances(gi, info.id, arr, ctypes.byref(cnt))
            except n.NVMLError:
                continue
            ids.extend(int(n.nvmlComputeInstanceGetInfo(arr[k]).id) for k in range(cnt.value))
        return tuple(sorted(set(ids)))

    def gpu_instances(self, index: int) -> tuple[GiRecord, ...]:
        n = self.nvml
        with self._lock:
            h = self._call("nvmlDeviceGetHandleByIndex", n.nvmlDeviceGetHandleByIndex, index)
            name = _s(n.nvmlDeviceGetName(h))
            out = []
            for _, info in self._profile_table(h):
                if int(info.instanceCount) == 0:
                    continue
                arr = (n.c_nvmlGpuInstance_t * int(info.instanceCount))()
                cnt = ctypes.c_uint(0)
                self._call("nvmlDeviceGetGpuInstances", n.nvmlDeviceGetGpuInstances, h, info.id, arr,
                           ctypes.byref(cnt))
                for k in range(cnt.value):
                    gi = n.nvmlGpuInstanceGetInfo(arr[k])
                    out.append(GiRecord(int(gi.id), self._profile_name(info, name), int(gi.placement.start),
                                        int(gi.placement.size), self._ci_ids(arr[k])))
            return tuple(sorted(out, key=lambda r: r.gi_id))

    def possible_placements(self, index: int, profile: str) -> tuple[tuple[int, int], ...]:
        n = self.nvml
        with self._lock:
            h = self._call("nvmlDeviceGetHandleByIndex", n.nvmlDeviceGetHandleByIndex, index)
            return self._placements(h, int(self._profile_info(h, profile).id))

    def create_gpu_instance(self, index: int, profile: str, start: int) -> int:
        n = self.nvml
        with self._lock:
            h = self._call("nvmlDeviceGetHandleByIndex", n.nvmlDeviceGetHandleByIndex, index)
            info = self._profile_info(h, profile)
            sizes = dict(self._placements(h, int(info.id)))
            if start not in sizes:
                raise NvmlCallError(2, f"{profile} has no placement at memory slice {start} "
                                       f"(NVML offers {sorted(sizes)})")  # INVALID_ARGUMENT
            placement = n.c_nvmlGpuInstancePlacement_t()
            placement.start, placement.size = start, sizes[start]
            gi = self._call(f"nvmlDeviceCreateGpuInstanceWithPlacement({profile}@{start})",
                            n.nvmlDeviceCreateGpuInstanceWithPlacement, h, info.id, ctypes.byref(placement))
            return int(n.nvmlGpuInstanceGetInfo(gi).id)

    def create_compute_instance(self, index: int, gi_id: int) -> int:
        n = self.nvml
        with self._lock:
            h = self._call("nvmlDeviceGetHandleByIndex", n.nvmlDeviceGetHandleByIndex, index)
            gi = self._call(f"nvmlDeviceGetGpuInstanceById({gi_id})", n.nvmlDeviceGetGpuInstanceById, h, gi_id)
            gi_profile = int(n.nvmlGpuInstanceGetInfo(gi).profileId)
            slices = next((int(i.sliceCount) for _, i in self._profile_table(h) if int(i.id) == gi_profile), 0)
            enum = _CI_PROFILE_BY_SLICES.get(slices)
            if enum is None:
                raise NvmlCallError(3, f"no compute-instance profile spans {slices} slice(s)")
            ci_info = self._call("nvmlGpuInstanceGetComputeInstanceProfileInfo",
                                 n.nvmlGpuInstanceGetComputeInstanceProfileInfo, gi, enum,
                                 n.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
            ci = self._call(f"nvmlGpuInstanceCreateComputeInstance(GI {gi_id})",
                            n.nvmlGpuInstanceCreateComputeInstance, gi, ci_info.id)
            return int(n.nvmlComputeInstanceGetInfo(ci).id)

    def destroy_compute_instance(self, index: int, gi_id: int, ci_id: int) -> None:
        n = self.nvml
        with self._lock:
            h = self._call("nvmlDeviceGetHandleByIndex", n.nvmlDeviceGetHandleByIndex, index)
            gi = self._call(f"nvmlDeviceGetGpuInstanceById({gi_id})", n.nvmlDeviceGetGpuInstanceById, h, gi_id)
            ci = self._call(f"nvmlGpuInstanceGetComputeInstanceById({ci_id})",
                            n.nvmlGpuInstanceGetComputeInstanceById, gi, ci_id)
            self._call(f"nvmlComputeInstanceDestroy(GI {gi_id} CI {ci_id})", n.nvmlComputeInstanceDestroy, ci)

    def destroy_gpu_instance(self, index: int, gi_id: int) -> None:
        n = self.nvml
        with self._lock:
            h = self._call("nvmlDeviceGetHandleByIndex", n.nvmlDeviceGetHandleByIndex, index)
            gi = self._call(f"nvmlDeviceGetGpuInstanceById({gi_id})", n.nvmlDeviceGetGpuInstanceById, h, gi_id)
            self._call(f"nvmlGpuInstanceDestroy(GI {gi_id})", n.nvmlGpuInstanceDestroy, gi)
