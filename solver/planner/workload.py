"""The workload estimate: the mix of requests the fragmentation level keeps capacity for.

A :class:`Workload` is a frozen planner input (``PlannerConfig.workload``, or ``plan(...,
workload=...)``): the per-unit GPU demands of recent requests with weights, plus the host CPU and
memory the GPU pods bring per milli-GPU and the CPU pressure (for the stranding and CPU terms of
:mod:`.objective.fragmentation`). :class:`OnlineWorkload` learns one from the requests it is shown
(decayed counts, so the mix follows the cluster); until ``min_pods`` requests were seen it answers
the built-in prior (:data:`PRIOR`). Its snapshot changes only on a fixed schedule, so the planner's
per-configuration tables (prices, per-class costs) are rebuilt rarely.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from dataclasses import dataclass

from models.requests import ContainerRequest, PodRequest

#: One unit's demand: (memory MiB or None, memory percent or None, cores %). Neither memory field:
#: the whole GPU's memory (HAMi's default).
Demand = tuple[int | None, int | None, int]
MILLI = 1000


def demand_of(c: ContainerRequest) -> Demand:
    return (c.memory_mib, c.memory_percent if c.memory_mib is None else None, c.cores)


def as_container(d: Demand) -> ContainerRequest:
    return ContainerRequest("", 0, 1, d[0], d[1], d[2])


@dataclass(frozen=True)
class Workload:
    """What the planner expects to come (see the module doc).

    ``mix``: (demand, weight) pairs, weight > 0. ``cpu_per_gpu_milli`` / ``mem_per_gpu_milli``: host
    CPU (milli-cores) and host memory (MiB) the GPU pods request per milli-GPU they ask; 0 turns the
    stranding term off. ``cpu_pressure``: weight in [0, 1] of the CPU-threshold term (0: off).
    ``cpu_tail``: (CPU milli, P(a GPU pod asks for more than that)) sorted by CPU, the threshold
    distribution of that term. ``pods``: how many requests the estimate was learned from (0: prior).
    """

    mix: tuple[tuple[Demand, float], ...]
    cpu_per_gpu_milli: float = 0.0
    mem_per_gpu_milli: float = 0.0
    cpu_pressure: float = 0.0
    cpu_tail: tuple[tuple[int, float], ...] = ()
    pods: int = 0

    def __post_init__(self) -> None:
        if not self.mix:
            raise ValueError("workload: the mix needs at least one demand")
        for d, w in self.mix:
            if not w > 0:
                raise ValueError(f"workload: demand {d} has weight {w}; weights must be positive")
            if (d[0] is not None and d[0] <= 0) or (d[1] is not None and not 0 < d[1] <= 100) or not 0 <= d[2] <= 100:
                raise ValueError(f"workload: bad demand {d} (MiB > 0, percent in 1..100, cores in 0..100)")
        if self.cpu_per_gpu_milli < 0 or self.mem_per_gpu_milli < 0 or not 0 <= self.cpu_pressure <= 1:
            raise ValueError("workload: CPU/memory per GPU milli must be >= 0 and cpu_pressure in [0, 1]")

    def cpu_above(self, cpu_milli: float) -> float:
        """P(a GPU pod asks for more than ``cpu_milli`` host CPU)."""
        if not self.cpu_tail:
            return 0.0
        i = bisect.bisect_right([c for c, _ in self.cpu_tail], cpu_milli)
        return self.cpu_tail[i][1] if i < len(self.cpu_tail) else 0.0


#: The built-in prior: small requests are the most frequent (1/8, 1/4, 1/2 and the whole GPU's
#: memory at 4:3:2:1); no host terms until pods were seen.
PRIOR = Workload((((None, 12, 0), 4.0), ((None, 25, 0), 3.0), ((None, 50, 0), 2.0), ((None, None, 0), 1.0)))


class OnlineWorkload:
    """Learns a :class:`Workload` from the requests shown to :meth:`observe` (arrived or pending).

    Counts decay with ``half_life`` requests. The snapshot (:meth:`estimate`) is the prior until
    ``min_pods`` requests were seen, then the learned mix (the prior mixed in with ``prior_pods``
    requests' weight); it is recomputed when the seen count reaches 64, 256, 1024, 4096 and then
    every 4096 requests, and only then. ``cluster_cpu_milli`` / ``cluster_gpu_milli`` (when known)
    give the CPU pressure: (requested CPU / cluster CPU) / (requested GPU / cluster GPU); above 1,
    CPU runs out before GPUs and the CPU-threshold term is weighted ``min(1, pressure - 1)``.
    """

    REFRESH_AT = (64, 256, 1024, 4096)
    REFRESH_EVERY = 4096

    def __init__(self, prior: Workload = PRIOR, *, half_life: float = 4096.0, min_pods: int = 64,
                 prior_pods: float = 256.0, cluster_cpu_milli: int = 0, cluster_gpu_milli: int = 0) -> None:
        if half_life <= 0 or min_pods < 0 or prior_pods < 0:
            raise ValueError("half_life must be > 0, min_pods and prior_pods >= 0")
        self.prior = prior
        self.decay = 0.5 ** (1.0 / half_life)
        self.min_pods = min_pods
        self.prior_pods = prior_pods
        self.cluster_cpu = cluster_cpu_milli
        self.cluster_gpu = cluster_gpu_milli
        self.seen = 0
        self._scale = 1.0  # lazy decay: stored counts are in units of 1 / _scale
        self._mix: dict[Demand, float] = {}
        self._cpu: dict[int, float] = {}  # GPU pods' CPU requests
        self._sums = [0.0, 0.0, 0.0, 0.0]  # GPU pods' CPU, GPU pods' memory, GPU demand (milli), all pods' CPU
        self._snapshot = prior
        self._next = self.REFRESH_AT[0]

    def observe(self, pod: PodRequest, gpu_milli: int | None = None) -> None:
        """Count one request. ``gpu_milli``: its GPU demand in milli-GPU, when the caller knows it
        (otherwise estimated from memory percent or cores; a MiB request counts as its cores or 1/8)."""
        self._scale /= self.decay
        if self._scale > 1e100:
            self._rescale()
        w = self._scale
        self._sums[3] += pod.cpu_milli * w
        if pod.wants_gpu:
            milli = gpu_milli if gpu_milli is not None else sum(_milli(c) * c.count for c in pod.containers)
            self._sums[0] += pod.cpu_milli * w
            self._sums[1] += pod.host_memory_mib * w
            self._sums[2] += milli * w
            self._cpu[pod.cpu_milli] = self._cpu.get(pod.cpu_milli, 0.0) + w
            for c in pod.containers:
                if c.count > 0:
                    d = demand_of(c)
                    self._mix[d] = self._mix.get(d, 0.0) + c.count * w
        self.seen += 1
        if self.seen >= self._next:
            self._snapshot = self._build()
            self._next = next((a for a in self.REFRESH_AT if a > self.seen), self.seen + self.REFRESH_EVERY)

    def observe_all(self, pods: Iterable[PodRequest]) -> None:
        for p in pods:
            self.observe(p)

    def estimate(self) -> Workload:
        return self._snapshot

    def _rescale(self) -> None:
        s = self._scale
        self._mix = {d: v / s for d, v in self._mix.items()}
        self._cpu = {c: v / s for c, v in self._cpu.items()}
        self._sums = [v / s for v in self._sums]
        self._scale = 1.0

    def _build(self) -> Workload:
        if self.seen < self.min_pods or not self._mix:
            return self.prior
        s = self._scale
        ptotal = sum(w for _, w in self.prior.mix)
        mix: dict[Demand, float] = {}
        for d, w in self.prior.mix:
            mix[d] = mix.get(d, 0.0) + w / ptotal * self.prior_pods
        for d, v in self._mix.items():
            mix[d] = mix.get(d, 0.0) + v / s
        norm = sum(mix.values())
        items = tuple(sorted(((d, round(w / norm, 6)) for d, w in mix.items() if w / norm >= 1e-6),
                             key=lambda x: (x[0][0] or 0, x[0][1] or 0, x[0][2])))
        gpu_cpu, gpu_mem, gpu_dem, all_cpu = (v / s for v in self._sums)
        cpu_r = gpu_cpu / gpu_dem if gpu_dem > 0 else 0.0
        mem_r = gpu_mem / gpu_dem if gpu_dem > 0 else 0.0
        pressure = 0.0
        if self.cluster_cpu > 0 and self.cluster_gpu > 0 and gpu_dem > 0:
            p = (all_cpu / self.cluster_cpu) / (gpu_dem / self.cluster_gpu)
            pressure = min(1.0, max(0.0, p - 1.0))
        tail: list[tuple[int, float]] = []
        if self._cpu:
            cw = sorted(self._cpu.items())
            tot = sum(v for _, v in cw)
            left = tot
            for c, v in cw:
                left -= v
                tail.append((c, round(max(0.0, left) / tot, 6)))
        return Workload(items, round(cpu_r, 6), round(mem_r, 6), round(pressure, 4), tuple(tail), self.seen)


def _milli(c: ContainerRequest) -> int:
    if c.memory_mib is None:
        pct = 100 if c.memory_percent is None else c.memory_percent
        return max(pct * 10, c.cores * 10)
    return c.cores * 10 if c.cores else MILLI // 8


def demand_size(d: Demand, memory_mib: int) -> int:
    """One unit of ``d`` in per-mille of a hami-core GPU with ``memory_mib`` (memory or cores,
    whichever is larger; at most one GPU)."""
    if d[0] is not None:
        mem = math.ceil(d[0] * MILLI / memory_mib) if memory_mib > 0 else MILLI + 1
    else:
        mem = (100 if d[1] is None else d[1]) * 10
    return max(mem, d[2] * 10)


__all__ = ["PRIOR", "Demand", "OnlineWorkload", "Workload", "as_container", "demand_of", "demand_size"]
