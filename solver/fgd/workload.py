"""The workload side of the FGD protocol (README §7.1, §7.2 steps 3–5).

* :class:`SimPod`: a pod as the simulator sees it (CPU, host memory, GPU count, per-GPU milli,
  allowed GPU models).
* :func:`shuffle_and_tune`: seeded shuffle of the pod order, then tune the total GPU demand to
  ``ratio ×`` the cluster capacity by sampling copies with replacement (tune-up) or removing
  random pods (tune-down), including the upstream stop-test quirk.
* :func:`typical_pods`: the typical-pod distribution used by FGD and the fragmentation metric.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from solver.openb import MILLI_PER_GPU, OpenbPod

__all__ = [
    "CPU_CLASS",
    "PodSpec",
    "SimPod",
    "TypicalPods",
    "shuffle_and_tune",
    "total_demand",
    "typical_pods",
]

CPU_CLASS = -1
"""GPU class of a CPU-only pod (see :attr:`SimPod.gpu_class`)."""

PodSpec = tuple[int, int, int, tuple[str, ...]]
"""(cpu milli, per-GPU milli, GPU count, allowed GPU models): what a policy's score depends on."""


@dataclass(frozen=True, slots=True)
class SimPod:
    """A pod in the simulation.

    ``milli`` is the per-GPU share, clamped to 0..1000 as the trace's YAML converter does; a pod
    with ``num_gpu == 0`` or ``milli == 0`` is CPU-only (``num_gpu == milli == 0``, no model
    constraint: the converter writes GPU annotations only for GPU pods).
    """

    name: str
    cpu: int
    mem: int
    num_gpu: int = 0
    milli: int = 0
    gpu_types: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.cpu < 0 or self.mem < 0 or self.num_gpu < 0 or not 0 <= self.milli <= MILLI_PER_GPU:
            raise ValueError(f"pod {self.name}: negative request or milli outside 0..1000")
        if (self.num_gpu == 0) != (self.milli == 0):
            raise ValueError(f"pod {self.name}: num_gpu and milli must be both zero or both positive")
        if self.num_gpu > 1 and self.milli != MILLI_PER_GPU:
            raise ValueError(f"pod {self.name}: a multi-GPU pod must ask for whole GPUs")
        if self.num_gpu == 0 and self.gpu_types:
            raise ValueError(f"pod {self.name}: a CPU-only pod cannot constrain the GPU model")

    @classmethod
    def from_openb(cls, pod: OpenbPod) -> SimPod:
        milli = min(max(pod.gpu_milli, 0), MILLI_PER_GPU) if pod.num_gpu > 0 else 0
        if milli == 0:
            return cls(pod.name, pod.cpu_milli, pod.memory_mib)
        return cls(pod.name, pod.cpu_milli, pod.memory_mib, pod.num_gpu, milli, pod.gpu_spec)

    @property
    def demand(self) -> int:
        """Total GPU demand in milli: ``num_gpu × milli``."""
        return self.num_gpu * self.milli

    @property
    def is_share(self) -> bool:
        """One GPU, less than a whole one."""
        return self.num_gpu == 1 and self.milli < MILLI_PER_GPU

    @property
    def gpu_class(self) -> int:
        """GpuClustering's pod class: ``0`` for a share, ``n`` for ``n`` whole GPUs, -1 CPU-only."""
        if self.num_gpu == 0:
            return CPU_CLASS
        return 0 if self.is_share else self.num_gpu

    @property
    def spec(self) -> PodSpec:
        return (self.cpu, self.milli, self.num_gpu, self.gpu_types)

    def copy_as(self, name: str) -> SimPod:
        return SimPod(name, self.cpu, self.mem, self.num_gpu, self.milli, self.gpu_types)


def total_demand(pods: Iterable[SimPod]) -> int:
    return sum(p.demand for p in pods)


def shuffle_and_tune(
    pods: Sequence[SimPod], capacity_milli: int, ratio: float, rng: np.random.Generator
) -> list[SimPod]:
    """README §7.2 steps 3–4.

    Sort by name and shuffle (the arrival order). Then, with ``target = ratio × capacity``:

    * tune-up (total demand below target): repeatedly draw ``idx`` uniformly from the name-sorted
      original list (CPU-only pods included), copy it as ``<name>-tuned-<i>``; stop as soon as
      ``total + per-GPU milli > target`` (the upstream quirk: the stop test adds the per-GPU milli,
      the running total the full demand); otherwise add the copy's full demand and append it
      after the shuffled originals;
    * tune-down (above target): remove uniformly random pods from the shuffled list until the
      total is at most the target.

    ``ratio <= 0`` disables tuning. A workload without any GPU demand cannot be tuned
    (``ValueError``; upstream panics).
    """
    originals = sorted(pods, key=lambda p: p.name)
    order = rng.permutation(len(originals))
    out = [originals[i] for i in order]
    if ratio <= 0 or not originals:
        return out
    target = ratio * float(capacity_milli)
    total = total_demand(out)
    if total <= 0:
        raise ValueError("cannot tune a workload without GPU demand to the GPU capacity")
    if float(total) < target:
        n = len(originals)
        i = 0
        while True:
            src = originals[int(rng.integers(n))]
            if float(total + src.milli) > target:
                break
            total += src.demand
            out.append(src.copy_as(f"{src.name}-tuned-{i}"))
            i += 1
    elif float(total) > target:
        while float(total) > target:
            idx = int(rng.integers(len(out)))
            total -= out.pop(idx).demand
    return out


@dataclass(frozen=True, slots=True)
class TypicalPods:
    """The typical-pod distribution (README §7.2 step 5, §7.5).

    Arrays are aligned: entry ``t`` is the spec (``cpu``, ``milli``, ``num_gpu``, ``gpu_types``)
    seen ``count[t]`` times. ``p_t = count[t] / count.sum()`` (the upstream renormalisation).
    """

    cpu: npt.NDArray[np.int64]
    milli: npt.NDArray[np.int64]
    num_gpu: npt.NDArray[np.int64]
    gpu_types: tuple[tuple[str, ...], ...]
    count: npt.NDArray[np.int64]

    @property
    def size(self) -> int:
        return len(self.count)

    @property
    def total(self) -> int:
        return int(self.count.sum())

    @property
    def prob(self) -> npt.NDArray[np.float64]:
        return self.count / float(self.total)

    def specs(self) -> list[PodSpec]:
        return [
            (int(c), int(m), int(n), t)
            for c, m, n, t in zip(self.cpu, self.milli, self.num_gpu, self.gpu_types, strict=True)
        ]

    @classmethod
    def from_specs(cls, specs: Sequence[tuple[PodSpec, int]]) -> TypicalPods:
        """Build from explicit ``(spec, count)`` pairs (tests, other workloads)."""
        return cls(
            cpu=np.array([s[0] for s, _ in specs], dtype=np.int64),
            milli=np.array([s[1] for s, _ in specs], dtype=np.int64),
            num_gpu=np.array([s[2] for s, _ in specs], dtype=np.int64),
            gpu_types=tuple(s[3] for s, _ in specs),
            count=np.array([c for _, c in specs], dtype=np.int64),
        )


def typical_pods(pods: Iterable[SimPod], popularity_pct: int = 95) -> TypicalPods:
    """Group pods by spec, sort by count (descending), keep specs until the cumulative count
    reaches ``popularity_pct`` % of all pods (CPU-only pods included, one spec at a time).

    Ties in count are ordered as upstream (``sort.Reverse`` of the spec order: larger CPU, then
    larger milli, larger GPU count, larger model string first).
    """
    counts = Counter(p.spec for p in pods)
    if not counts:
        raise ValueError("no pods: the typical-pod distribution is undefined")
    total = sum(counts.values())

    def key(item: tuple[PodSpec, int]) -> tuple[int, int, int, int, str]:
        (cpu, milli, num, types), cnt = item
        return (cnt, cpu, milli, num, "|".join(types))

    ordered = sorted(counts.items(), key=key, reverse=True)
    expected = float(popularity_pct) * total / 100.0
    chosen: list[tuple[PodSpec, int]] = []
    cum = 0
    for spec, cnt in ordered:
        if cum >= expected:
            break
        chosen.append((spec, cnt))
        cum += cnt
    return TypicalPods.from_specs(chosen)
