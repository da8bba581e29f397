"""A fake ``pynvml`` for tests: the calls dynamig makes, over MIG GPUs with NVML's behaviour.

Models, per GPU (A100-SXM4-40GB, A100-SXM4-80GB, H100-80GB: 7 compute and 8 memory slices), GPU
instances at placements and their compute instances, with NVML's rules and errors
(``reference/mig.md`` §1-3, §6), implemented here independently of ``models.layouts``:

- a profile's placements: 1g any of 0-6 (size 1), 1g+me likewise (one per GPU), 1g with two memory
  slices 0/2/4/6, 2g 0/2/4, 3g 0/4 (size 4), 4g 0 (size 4), 7g 0 (size 8);
  ``nvmlDeviceGetGpuInstancePossiblePlacements_v2`` lists them whatever is occupied;
- creating at an occupied placement (overlapping memory slices, compute slices used up, the
  profile's count reached) answers ``INSUFFICIENT_RESOURCES``; a placement not in the list
  ``INVALID_ARGUMENT``;
- a GPU instance has no MIG device until its compute instance exists; destroying a GPU instance that
  still has one, or a compute instance a process runs on, answers ``IN_USE``.

Fault injection: :meth:`FakeNvml.fail` queues an error for the next call of a name (``after=True``:
the call takes effect and still reports the error, as a timed-out call can), and
:attr:`FakeNvml.schedule` fails the n-th mutating call (0-based) whatever it is.
"""

from __future__ import annotations

import ctypes
import hashlib
from dataclasses import dataclass, field
from typing import Any

import pynvml

from models.catalog import model

NVMLError = pynvml.NVMLError
NVML_DEVICE_MIG_ENABLE = 1
NVML_GPU_INSTANCE_PROFILE_COUNT = pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT
NVML_COMPUTE_INSTANCE_PROFILE_COUNT = pynvml.NVML_COMPUTE_INSTANCE_PROFILE_COUNT
NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED = pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED
c_nvmlGpuInstance_t = pynvml.c_nvmlGpuInstance_t
c_nvmlComputeInstance_t = pynvml.c_nvmlComputeInstance_t
c_nvmlGpuInstancePlacement_t = pynvml.c_nvmlGpuInstancePlacement_t

SUCCESS = 0
INVALID_ARGUMENT = pynvml.NVML_ERROR_INVALID_ARGUMENT
NOT_SUPPORTED = pynvml.NVML_ERROR_NOT_SUPPORTED
NOT_FOUND = pynvml.NVML_ERROR_NOT_FOUND
IN_USE = pynvml.NVML_ERROR_IN_USE
INSUFFICIENT_RESOURCES = pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES
UNKNOWN = pynvml.NVML_ERROR_UNKNOWN

MUTATING = ("nvmlDeviceCreateGpuInstanceWithPlacement", "nvmlGpuInstanceCreateComputeInstance",
            "nvmlComputeInstanceDestroy", "nvmlGpuInstanceDestroy")

# NVML GI profile enum -> (class, nvidia-smi id, compute slices, memory slices, starts, max count, media)
_TABLE: dict[int, tuple[str, int, int, int, tuple[int, ...], int, bool]] = {
    0: ("1g", 19, 1, 1, (0, 1, 2, 3, 4, 5, 6), 7, False),
    7: ("1g+me", 20, 1, 1, (0, 1, 2, 3, 4, 5, 6), 1, True),
    9: ("1g-2mem", 15, 1, 2, (0, 2, 4, 6), 4, False),
    1: ("2g", 14, 2, 2, (0, 2, 4), 3, False),
    2: ("3g", 9, 3, 4, (0, 4), 2, False),
    3: ("4g", 5, 4, 4, (0,), 1, False),
    4: ("7g", 0, 7, 8, (0,), 1, False),
}
_CI_ENUM_SLICES = {0: 1, 1: 2, 2: 3, 3: 4, 4: 7}


@dataclass
class _Gi:
    gi_id: int
    enum: int
    start: int
    cis: dict[int, str] = field(default_factory=dict)  # ci id -> MIG UUID


@dataclass
class FakeGpu:
    model: str
    uuid: str
    name: str
    gis: dict[int, _Gi] = field(default_factory=dict)
    processes: dict[int, tuple[int, int]] = field(default_factory=dict)  # pid -> (gi id, ci id)
    next_gi: int = 1
    generation: int = 0

    def profile_name(self, enum: int) -> str:
        klass = _TABLE[enum][0]
        for p in model(self.model).profiles:
            if p.klass == klass:
                return p.name
        raise KeyError(klass)  # pragma: no cover

    def memory_mib(self, enum: int) -> int:
        klass = _TABLE[enum][0]
        return next(p.memory_mib for p in model(self.model).profiles if p.klass == klass)

    def occupancy_problem(self, enum: int, start: int) -> str | None:
        klass, _, compute, mem, _, max_count, media = _TABLE[enum]
        used = 0
        compute_used = 0
        for gi in self.gis.values():
            c = _TABLE[gi.enum]
            used |= ((1 << c[3]) - 1) << gi.start
            compute_used += c[2]
        if used & (((1 << mem) - 1) << start):
            return "memory slices taken"
        if compute_used + compute > 7:
            return "compute slices used up"
        if sum(1 for gi in self.gis.values() if gi.enum == enum) >= max_count:
            return f"{klass} count reached"
        if media and any(_TABLE[gi.enum][6] for gi in self.gis.values()):
            return "media engine taken"
        return None

    def slots(self) -> list[tuple[str, int]]:
        """(profile, start) of every *complete* instance (GI with its compute instance)."""
        return sorted((self.profile_name(g.enum), g.start) for g in self.gis.values() if g.cis)


class FakeNvml:
    """Stands in for the ``pynvml`` module: ``NvmlBackend(FakeNvml([...]))``."""

    NVMLError = NVMLError
    NVML_DEVICE_MIG_ENABLE = NVML_DEVICE_MIG_ENABLE
    NVML_GPU_INSTANCE_PROFILE_COUNT = NVML_GPU_INSTANCE_PROFILE_COUNT
    NVML_COMPUTE_INSTANCE_PROFILE_COUNT = NVML_COMPUTE_INSTANCE_PROFILE_COUNT
    NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED = NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED
    c_nvmlGpuInstance_t = c_nvmlGpuInstance_t
    c_nvmlComputeInstance_t = c_nvmlComputeInstance_t
    c_nvmlGpuInstancePlacement_t = c_nvmlGpuInstancePlacement_t

    def __init__(self, models: list[str], driver: str = "550.127.05") -> None:
        self.driver = driver
        self.gpus = [FakeGpu(m, f"GPU-fake-{i:04d}", f"NVIDIA {model(m).nvml_patterns[0]}")
                     for i, m in enumerate(models)]
        self.calls: list[str] = []
        self.mutations = 0  # mutating calls attempted
        self.schedule: dict[int, tuple[int, bool]] = {}  # n-th mutating call -> (code, after)
        self._faults: dict[str, list[tuple[int, bool]]] = {}
        self._handles: dict[int, tuple[Any, ...]] = {}

    # ---- test helpers
    def fail(self, call: str, code: int, after: bool = False) -> None:
        self._faults.setdefault(call, []).append((code, after))

    def add_process(self, index: int, pid: int, gi_id: int, ci_id: int = 0) -> None:
        self.gpus[index].processes[pid] = (gi_id, ci_id)

    def remove_process(self, index: int, pid: int) -> None:
        self.gpus[index].processes.pop(pid, None)

    def gi_at(self, index: int, profile: str, start: int) -> int:
        g = self.gpus[index]
        return next(gi.gi_id for gi in g.gis.values() if g.profile_name(gi.enum) == profile and gi.start == start)

    def create(self, index: int, profile: str, start: int, with_ci: bool = True) -> int:
        """Set up state directly (no faults, no counting)."""
        g = self.gpus[index]
        enum = next(e for e in _TABLE if g.profile_name(e) == profile)
        assert start in _TABLE[enum][4] and g.occupancy_problem(enum, start) is None, (profile, start)
        gi = self._new_gi(g, enum, start)
        if with_ci:
            self._new_ci(g, gi)
        return gi.gi_id

    # ---- plumbing
    def _err(self, code: int) -> Exception:
        return NVMLError(code)

    def _check(self, name: str) -> tuple[int, bool] | None:
        """The fault for this call, if any (raised before or after it takes effect)."""
        self.calls.append(name)
        fault = None
        queue = self._faults.get(name)
        if queue:
            fault = queue.pop(0)
        if name in MUTATING:
            n = self.mutations
            self.mutations += 1
            fault = fault or self.schedule.get(n)
        if fault is not None and not fault[1]:
            raise self._err(fault[0])
        return fault

    def _handle(self, kind: type, *key: Any) -> Any:
        v = 0x10000 + len(self._handles) * 16
        self._handles[v] = key
        return ctypes.cast(ctypes.c_void_p(v), kind)

    def _key(self, h: Any) -> tuple[Any, ...]:
        return self._handles[ctypes.cast(h, ctypes.c_void_p).value or 0]

    def _gi(self, h: Any) -> tuple[FakeGpu, _Gi]:
        _, index, gi_id = self._key(h)
        g = self.gpus[index]
        if gi_id not in g.gis:
            raise self._err(NOT_FOUND)
        return g, g.gis[gi_id]

    def _mig_uuid(self, g: FakeGpu, gi: _Gi, ci: int) -> str:
        h = hashlib.sha1(f"{g.uuid}/{gi.gi_id}/{ci}/{g.generation}".encode()).hexdigest()
        return f"MIG-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"

    def _new_gi(self, g: FakeGpu, enum: int, start: int) -> _Gi:
        g.generation += 1
        gi = _Gi(g.next_gi, enum, start)
        g.next_gi += 1
        g.gis[gi.gi_id] = gi
        return gi

    def _new_ci(self, g: FakeGpu, gi: _Gi) -> int:
        g.generation += 1
        gi.cis[0] = self._mig_uuid(g, gi, 0)
        return 0

    def _migs(self, g: FakeGpu) -> list[tuple[_Gi, int]]:
        return [(gi, ci) for gi in sorted(g.gis.values(), key=lambda x: x.gi_id) for ci in sorted(gi.cis)]

    # ---- system
    def nvmlInit(self) -> None:
        self.calls.append("nvmlInit")

    def nvmlShutdown(self) -> None:
        self.calls.append("nvmlShutdown")

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.driver

    # ---- devices
    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> Any:
        if not 0 <= i < len(self.gpus):
            raise self._err(INVALID_ARGUMENT)
        return ("gpu", i)

    def nvmlDeviceGetName(self, h: Any) -> str:
        return self.gpus[h[1]].name

    def nvmlDeviceGetUUID(self, h: Any) -> str:
        g = self.gpus[h[1]]
        if h[0] == "mig":
            gi, ci = self._migs(g)[h[2]]
            return gi.cis[ci]
        return g.uuid

    def nvmlDeviceGetMemoryInfo(self, h: Any) -> Any:
        g = self.gpus[h[1]]
        if h[0] == "mig":
            gi, _ = self._migs(g)[h[2]]
            return _Obj(total=g.memory_mib(gi.enum) * 1024 * 1024)
        return _Obj(total=model(g.model).memory_mib * 1024 * 1024)

    def nvmlDeviceGetPciInfo(self, h: Any) -> Any:
        return _Obj(pciDeviceId=0x20B210DE)

    def nvmlDeviceGetMigMode(self, h: Any) -> list[int]:
        return [1, 1]

    def nvmlDeviceGetMaxMigDeviceCount(self, h: Any) -> int:
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h: Any, i: int) -> Any:
        if i >= len(self._migs(self.gpus[h[1]])):
            raise self._err(NOT_FOUND)
        return ("mig", h[1], i)

    def nvmlDeviceGetGpuInstanceId(self, h: Any) -> int:
        return self._migs(self.gpus[h[1]])[h[2]][0].gi_id

    def nvmlDeviceGetComputeInstanceId(self, h: Any) -> int:
        return self._migs(self.gpus[h[1]])[h[2]][1]

    def nvmlDeviceGetComputeRunningProcesses(self, h: Any) -> list[Any]:
        if h[0] != "mig":
            return []
        g = self.gpus[h[1]]
        gi, ci = self._migs(g)[h[2]]
        return [_Obj(pid=pid, usedGpuMemory=256 * 1024 * 1024, gpuInstanceId=gi.gi_id, computeInstanceId=ci)
                for pid, where in sorted(g.processes.items()) if where == (gi.gi_id, ci)]

    # ---- GPU instance profiles and placements
    def nvmlDeviceGetGpuInstanceProfileInfo(self, h: Any, enum: int) -> Any:
        if enum not in _TABLE:
            raise self._err(NOT_SUPPORTED)
        g = self.gpus[h[1]]
        _, pid, compute, _, _, count, _ = _TABLE[enum]
        return _Obj(id=pid, sliceCount=compute, memorySizeMB=g.memory_mib(enum), instanceCount=count,
                    name=f"MIG {g.profile_name(enum)}".encode())

    def _enum(self, profile_id: int) -> int:
        for e, row in _TABLE.items():
            if row[1] == profile_id:
                return e
        raise self._err(INVALID_ARGUMENT)

    def nvmlDeviceGetGpuInstancePossiblePlacements(self, h: Any, profile_id: int, arr: Any, count_ref: Any) -> int:
        row = _TABLE[self._enum(profile_id)]
        if arr is not None:
            for k, s in enumerate(row[4]):
                arr[k].start, arr[k].size = s, row[3]
        count_ref._obj.value = len(row[4])
        return SUCCESS

    def nvmlDeviceGetGpuInstances(self, h: Any, profile_id: int, arr: Any, count_ref: Any) -> int:
        enum = self._enum(profile_id)
        g = self.gpus[h[1]]
        gis = sorted((gi for gi in g.gis.values() if gi.enum == enum), key=lambda x: x.gi_id)
        for k, gi in enumerate(gis):
            arr[k] = self._handle(c_nvmlGpuInstance_t, "gi", h[1], gi.gi_id)
        count_ref._obj.value = len(gis)
        return SUCCESS

    def nvmlDeviceGetGpuInstanceById(self, h: Any, gi_id: int) -> Any:
        g = self.gpus[h[1]]
        if gi_id not in g.gis:
            raise self._err(NOT_FOUND)
        return self._handle(c_nvmlGpuInstance_t, "gi", h[1], gi_id)

    def nvmlGpuInstanceGetInfo(self, h: Any) -> Any:
        _, gi = self._gi(h)
        row = _TABLE[gi.enum]
        return _Obj(id=gi.gi_id, profileId=row[1], placement=_Obj(start=gi.start, size=row[3]))

    def nvmlDeviceCreateGpuInstanceWithPlacement(self, h: Any, profile_id: int, placement: Any) -> Any:
        fault = self._check("nvmlDeviceCreateGpuInstanceWithPlacement")
        pl = getattr(placement, "_obj", placement)
        g = self.gpus[h[1]]
        enum = self._enum(profile_id)
        row = _TABLE[enum]
        if pl.start not in row[4] or pl.size != row[3]:
            raise self._err(INVALID_ARGUMENT)
        if g.occupancy_problem(enum, pl.start) is not None:
            raise self._err(INSUFFICIENT_RESOURCES)
        gi = self._new_gi(g, enum, pl.start)
        if fault is not None:
            raise self._err(fault[0])
        return self._handle(c_nvmlGpuInstance_t, "gi", h[1], gi.gi_id)

    def nvmlGpuInstanceDestroy(self, h: Any) -> int:
        fault = self._check("nvmlGpuInstanceDestroy")
        g, gi = self._gi(h)
        if gi.cis:
            raise self._err(IN_USE)
        del g.gis[gi.gi_id]
        if fault is not None:
            raise self._err(fault[0])
        return SUCCESS

    # ---- compute instances
    def nvmlGpuInstanceGetComputeInstanceProfileInfo(self, h: Any, enum: int, eng: int) -> Any:
        _, gi = self._gi(h)
        if _CI_ENUM_SLICES.get(enum) != _TABLE[gi.enum][2]:
            raise self._err(NOT_SUPPORTED)  # only the CI spanning the GI is modelled
        return _Obj(id=enum, sliceCount=_CI_ENUM_SLICES[enum], instanceCount=1)

    def nvmlGpuInstanceGetComputeInstances(self, h: Any, ci_profile: int, arr: Any, count_ref: Any) -> int:
        _, gi = self._gi(h)
        key = self._key(h)
        for k, ci in enumerate(sorted(gi.cis)):
            arr[k] = self._handle(c_nvmlComputeInstance_t, "ci", key[1], gi.gi_id, ci)
        count_ref._obj.value = len(gi.cis)
        return SUCCESS

    def nvmlComputeInstanceGetInfo(self, h: Any) -> Any:
        ci = self._key(h)[3]
        return _Obj(id=ci, gpuInstance=None, profileId=0)

    def nvmlGpuInstanceCreateComputeInstance(self, h: Any, ci_profile: int) -> Any:
        fault = self._check("nvmlGpuInstanceCreateComputeInstance")
        g, gi = self._gi(h)
        if _CI_ENUM_SLICES.get(ci_profile) != _TABLE[gi.enum][2]:
            raise self._err(INVALID_ARGUMENT)
        if gi.cis:
            raise self._err(INSUFFICIENT_RESOURCES)
        ci = self._new_ci(g, gi)
        if fault is not None:
            raise self._err(fault[0])
        return self._handle(c_nvmlComputeInstance_t, "ci", self._key(h)[1], gi.gi_id, ci)

    def nvmlGpuInstanceGetComputeInstanceById(self, h: Any, ci_id: int) -> Any:
        _, gi = self._gi(h)
        if ci_id not in gi.cis:
            raise self._err(NOT_FOUND)
        return self._handle(c_nvmlComputeInstance_t, "ci", self._key(h)[1], gi.gi_id, ci_id)

    def nvmlComputeInstanceDestroy(self, h: Any) -> int:
        fault = self._check("nvmlComputeInstanceDestroy")
        _, index, gi_id, ci = self._key(h)
        g = self.gpus[index]
        gi = g.gis.get(gi_id)
        if gi is None or ci not in gi.cis:
            raise self._err(NOT_FOUND)
        if (gi_id, ci) in g.processes.values():
            raise self._err(IN_USE)
        del gi.cis[ci]
        if fault is not None:
            raise self._err(fault[0])
        return SUCCESS


class _Obj:
    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)
