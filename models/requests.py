"""Pod GPU requests parsed from Pod manifests (HAMi-compatible resources and annotations).

Per container: ``nvidia.com/gpu`` units; per unit ``nvidia.com/gpumem`` (MiB) or
``nvidia.com/gpumem-percentage``; ``nvidia.com/gpucores`` (% of SMs). HAMi's defaults apply
(``reference/hami.md`` §2): memory or cores without a count -> 1 unit; a count with neither
memory nor cores -> an exclusive whole GPU (100 % memory, 100 % cores).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .catalog import GpuModel, MigProfile
from .errors import RequestError
from .quantity import QuantityError, cpu_milli, memory_mib, parse_quantity
from .resources import DEFAULT_RESOURCES, ResourceNames
from .types import Gpu, NodeMode

RES_GPU = DEFAULT_RESOURCES.gpu
RES_MEM = DEFAULT_RESOURCES.gpumem
RES_MEM_PCT = DEFAULT_RESOURCES.gpumem_percentage
RES_CORES = DEFAULT_RESOURCES.gpucores
GPU_RESOURCES = (RES_GPU, RES_MEM, RES_MEM_PCT, RES_CORES)

ANN_MODE = "nvidia.com/vgpu-mode"
ANN_USE_TYPE = "nvidia.com/use-gputype"
ANN_NOUSE_TYPE = "nvidia.com/nouse-gputype"
ANN_USE_UUID = "nvidia.com/use-gpuuuid"
ANN_NOUSE_UUID = "nvidia.com/nouse-gpuuuid"
ANN_NODE_POLICY = "hami.io/node-scheduler-policy"
ANN_GPU_POLICY = "hami.io/gpu-scheduler-policy"
ANN_NUMA_BIND = "nvidia.com/numa-bind"

BINPACK = "binpack"
SPREAD = "spread"


@dataclass(frozen=True)
class ContainerRequest:
    """One container's GPU request: ``count`` identical units."""

    name: str
    index: int  # position among init containers then app containers (HAMi's order)
    count: int
    memory_mib: int | None = None
    memory_percent: int | None = None
    cores: int = 0

    def memory_for(self, total_mib: int) -> int:
        if self.memory_mib is not None:
            return self.memory_mib
        pct = 100 if self.memory_percent is None else self.memory_percent
        return total_mib * pct // 100


@dataclass(frozen=True)
class PodRequest:
    namespace: str
    name: str
    uid: str = ""
    containers: tuple[ContainerRequest, ...] = ()
    modes: frozenset[NodeMode] = frozenset()  # empty = any mode
    use_types: tuple[str, ...] = ()
    nouse_types: tuple[str, ...] = ()
    use_uuids: tuple[str, ...] = ()
    nouse_uuids: tuple[str, ...] = ()
    node_policy: str = BINPACK
    gpu_policy: str = SPREAD
    priority: int = 0
    cpu_milli: int = 0  # host CPU the pod requests (kube's effective request over its containers)
    host_memory_mib: int = 0  # host memory the pod requests

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def units(self) -> int:
        return sum(c.count for c in self.containers)

    @property
    def wants_gpu(self) -> bool:
        return self.units > 0

    def unit_ids(self) -> list[tuple[ContainerRequest, int]]:
        return [(c, u) for c in self.containers for u in range(c.count)]


def describe_request(c: ContainerRequest, times: str = "x", whole: str = "a whole GPU") -> str:
    """One container's GPU request as a person writes it (``2x 9000 MiB, 30% cores``)."""
    if c.memory_mib is not None:
        mem = f"{c.memory_mib} MiB"
    elif c.memory_percent is not None and c.memory_percent < 100:
        mem = f"{c.memory_percent}% memory"
    else:
        mem = whole
    cores = f", {c.cores}% cores" if c.cores and mem != whole else ""
    return f"{c.count}{times} {mem}{cores}"


def holder_id(pod_key: str, container_index: int, unit: int) -> str:
    """The identity a unit holds an instance or share under."""
    return f"{pod_key}/{container_index}/{unit}"


def pod_of_holder(holder: str) -> str:
    ns, name, _, _ = holder.rsplit("/", 3)
    return f"{ns}/{name}"


# --------------------------------------------------------------------------- fitting rules


def mig_memory_total(gpu_model: GpuModel) -> int:
    """What 100 % of a MIG GPU's memory means: the whole-GPU instance (HAMi compares with NVML total,
    which no instance reaches, so ``gpu: 1`` without memory never fit there)."""
    full = gpu_model.full_profile
    return full.memory_mib if full else gpu_model.memory_mib


def mig_unit_memory(c: ContainerRequest, gpu_model: GpuModel) -> int:
    return c.memory_for(mig_memory_total(gpu_model))


def profile_serves(gpu_model: GpuModel, profile: MigProfile, c: ContainerRequest) -> bool:
    """A MIG unit needs memory >= request (real instance memory) and compute share >= gpucores."""
    if profile.memory_mib < mig_unit_memory(c, gpu_model):
        return False
    return not (c.cores and gpu_model.core_percent(profile) < c.cores)


def share_fit_problem(gpu: Gpu, memory_mib: int, cores: int, extra: tuple[tuple[int, int], ...] = ()) -> str | None:
    """Why a hami-core unit does not fit on this GPU (None = it fits). ``extra``: units already
    planned on the GPU in the same plan, as (memory, cores)."""
    used_mem = gpu.used_memory_mib + sum(m for m, _ in extra)
    used_cores = gpu.used_cores + sum(c for _, c in extra)
    n = len(gpu.shares) + len(extra)
    if n >= gpu.split:
        return f"all {gpu.split} shares in use"
    if used_mem + memory_mib > gpu.memory_mib:
        return f"needs {memory_mib} MiB, {gpu.memory_mib - used_mem} MiB free"
    if cores >= 100 and n > 0:
        return "exclusive request (100% cores) on a shared GPU"
    if used_cores + cores > 100:
        return f"needs {cores}% cores, {100 - used_cores}% free"
    if any(s.cores >= 100 for s in gpu.shares) or any(c >= 100 for _, c in extra):
        return "GPU held exclusively"
    return None


def type_matches(device_name: str, wanted: str) -> bool:
    """HAMi's ``checkGPUtype``: the annotation entry, upper-cased, is a substring of the upper-cased
    NVML device name (``A100`` matches ``NVIDIA A100-PCIE-40GB``, ``H200`` never an ``H20``; an
    empty entry matches every name, as in HAMi)."""
    return wanted.upper() in device_name.upper()


def gpu_allowed(pod: PodRequest, gpu: Gpu) -> str | None:
    """Why annotations exclude this GPU (None = allowed): mode, type and UUID filters, health."""
    if not gpu.health:
        return "GPU unhealthy"
    if pod.modes and gpu.mode not in pod.modes:
        return f"pod asks vgpu-mode {','.join(sorted(pod.modes))}, GPU is {gpu.mode}"
    if pod.use_types and not any(type_matches(gpu.device_name, t) for t in pod.use_types):
        return f"use-gputype {','.join(pod.use_types)!r} excludes {gpu.device_name}"
    if pod.nouse_types and any(type_matches(gpu.device_name, t) for t in pod.nouse_types):
        return f"nouse-gputype {','.join(pod.nouse_types)!r} excludes {gpu.device_name}"
    if pod.use_uuids and gpu.uuid not in pod.use_uuids:
        return "use-gpuuuid excludes this GPU"
    if gpu.uuid in pod.nouse_uuids:
        return "nouse-gpuuuid excludes this GPU"
    return None


# --------------------------------------------------------------------------- parsing


def _qty(value: Any, where: str) -> int:
    """An integer resource quantity (``2``, ``4k``, ``1Ki``), read by the one quantity parser."""
    try:
        q = parse_quantity(value)
    except QuantityError:
        raise RequestError(f"{where}: expected an integer quantity, got {value!r}") from None
    if q != q.to_integral_value():
        raise RequestError(f"{where}: expected an integer, got {value!r}")
    return int(q)


def _csv(ann: Mapping[str, str], key: str) -> tuple[str, ...]:
    raw = ann.get(key, "")
    return tuple(x.strip() for x in str(raw).split(",") if x.strip())


def _hami_list(ann: Mapping[str, str], key: str) -> tuple[str, ...]:
    """HAMi's ``strings.Split(value, ",")``: no trimming, and a present but empty annotation is one
    empty entry (which matches every GPU type)."""
    return tuple(str(ann[key]).split(",")) if key in ann else ()


def _container(c: Mapping[str, Any], index: int, where: str,
               names: ResourceNames = DEFAULT_RESOURCES) -> ContainerRequest | None:
    name = str(c.get("name", f"#{index}"))
    res = c.get("resources") or {}
    limits = dict(res.get("requests") or {})
    limits.update(res.get("limits") or {})
    here = f"{where} container {name!r}"
    present = {k: limits[k] for k in names.all if k in limits and limits[k] is not None}
    if not present:
        return None
    vals = {k: _qty(v, f"{here} resource {k}") for k, v in present.items()}
    for k, v in vals.items():
        if v < 0:
            raise RequestError(f"{here}: {k} must not be negative, got {v}")
    count = vals.get(names.gpu)
    mem = vals.get(names.gpumem)
    pct = vals.get(names.gpumem_percentage)
    cores = vals.get(names.gpucores, 0)
    if count == 0:
        if any(k in vals for k in (names.gpumem, names.gpumem_percentage, names.gpucores)):
            raise RequestError(f"{here}: {names.gpu} is 0 but GPU memory/cores are requested")
        return None
    if count is None:
        count = 1  # HAMi defaultGPUNum
    if pct is not None and not 0 < pct <= 100:
        raise RequestError(f"{here}: {names.gpumem_percentage} must be in 1..100, got {pct}")
    if mem is not None and mem == 0:
        raise RequestError(f"{here}: {names.gpumem} is 0; ask for at least 1 MiB or omit it for a whole GPU")
    if cores > 100:
        raise RequestError(f"{here}: {names.gpucores} is a percentage of one GPU, got {cores}")
    if mem is not None and pct is not None:
        raise RequestError(f"{here}: set {names.gpumem} or {names.gpumem_percentage}, not both")
    if names.gpucores not in vals and mem is None and (pct is None or pct == 100):
        cores = 100  # HAMi: a count with no memory and no cores is an exclusive whole GPU
    return ContainerRequest(name, index, count, mem, pct, cores)


def _host_request(c: Mapping[str, Any], where: str) -> tuple[int, int]:
    """(CPU milli, memory MiB) a container requests; a limit stands in for a missing request (kube).
    ``where`` names the container (``pod ns/name.containers[0]``)."""
    res = c.get("resources") or {}
    req = dict(res.get("limits") or {})
    req.update(res.get("requests") or {})
    out = []
    for key, conv in (("cpu", cpu_milli), ("memory", memory_mib)):
        raw = req.get(key)
        if raw is None:
            out.append(0)
            continue
        try:
            v = conv(raw)
        except QuantityError as e:
            raise RequestError(f"{where}.resources.{key}: {e}") from None
        if v < 0:
            raise RequestError(f"{where}.resources.{key}: must not be negative, got {raw!r}")
        out.append(v)
    return out[0], out[1]


def host_request(spec: Mapping[str, Any], where: str) -> tuple[int, int]:
    """The pod's effective host request: max(largest init container, sum of app containers)."""
    init = [_host_request(c, f"{where}.initContainers[{i}]") for i, c in enumerate(spec.get("initContainers") or [])]
    app = [_host_request(c, f"{where}.containers[{i}]") for i, c in enumerate(spec.get("containers") or [])]
    cpu = max([sum(a[0] for a in app), *(i[0] for i in init)])
    mem = max([sum(a[1] for a in app), *(i[1] for i in init)])
    return cpu, mem


def parse_pod(pod: Mapping[str, Any], names: ResourceNames = DEFAULT_RESOURCES) -> PodRequest:
    """A PodRequest from a Pod manifest (dict as the API server returns it); ``names``: the
    resource names (device-config ``nvidia.resource*Name``)."""
    meta = pod.get("metadata") or {}
    ns = str(meta.get("namespace") or "default")
    name = meta.get("name")
    if not name:
        raise RequestError("pod manifest has no metadata.name")
    where = f"pod {ns}/{name}"
    spec = pod.get("spec") or {}
    all_containers = list(spec.get("initContainers") or []) + list(spec.get("containers") or [])
    if not spec.get("containers"):
        raise RequestError(f"{where}: spec.containers is empty")
    containers = []
    for i, c in enumerate(all_containers):
        cr = _container(c, i, where, names)
        if cr is not None:
            containers.append(cr)
    ann = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
    modes: set[NodeMode] = set()
    raw_mode = ann.get(ANN_MODE, "").strip()
    if ANN_MODE in ann and not raw_mode:
        # HAMi: strings.Contains("", mode) is false for every GPU, so the pod is never scheduled
        raise RequestError(f"{where}: annotation {ANN_MODE} is empty, which HAMi matches to no GPU; remove it "
                           "(any mode) or set 'mig' or 'hami-core'")
    if raw_mode:
        for m in NodeMode:
            if m.value in raw_mode:  # HAMi: substring test, so "mig,hami-core" allows both
                modes.add(m)
        if not modes:
            # HAMi's test is case-sensitive ("MIG" matches nothing) and "mps" GPUs do not exist here:
            # such a pod would wait forever there; here it gets this reason
            raise RequestError(f"{where}: annotation {ANN_MODE}={raw_mode!r}: expected 'mig' or 'hami-core' "
                               "(lower case, as HAMi compares it)")
    policies = []
    for key, default in ((ANN_NODE_POLICY, BINPACK), (ANN_GPU_POLICY, SPREAD)):
        v = ann.get(key, default).strip() or default
        if v not in (BINPACK, SPREAD):
            raise RequestError(f"{where}: annotation {key}={v!r}: expected binpack or spread")
        policies.append(v)
    numa = ann.get(ANN_NUMA_BIND, "").strip().lower() in ("1", "t", "true")  # Go's strconv.ParseBool
    if numa and any(c.count > 1 for c in containers):
        raise RequestError(f"{where}: annotation {ANN_NUMA_BIND}=true with more than one GPU per container is "
                           "not supported: dynamig does not track GPU NUMA nodes (remove the annotation or ask "
                           "for one GPU per container)")
    prio = spec.get("priority")
    cpu, host_mem = host_request(spec, where)
    return PodRequest(
        namespace=ns,
        name=str(name),
        uid=str(meta.get("uid") or ""),
        containers=tuple(containers),
        modes=frozenset(modes),
        use_types=_hami_list(ann, ANN_USE_TYPE),
        nouse_types=_hami_list(ann, ANN_NOUSE_TYPE),
        use_uuids=_csv(ann, ANN_USE_UUID),
        nouse_uuids=_csv(ann, ANN_NOUSE_UUID),
        node_policy=policies[0],
        gpu_policy=policies[1],
        priority=int(prio) if isinstance(prio, int) else 0,
        cpu_milli=cpu,
        host_memory_mib=host_mem,
    )
