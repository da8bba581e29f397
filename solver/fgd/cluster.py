"""Numpy cluster state for the FGD protocol: per node free CPU, free host memory, free milli per
GPU, GPU model, and the per-class pod counts that GpuClustering needs.

GPU arrays are padded to the largest GPU count in the cluster; a padded slot has 0 free milli
and ``gpu_exists`` false, so it never fits a GPU request (every GPU request is > 0 milli).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from solver.fgd.workload import SimPod
from solver.openb import MILLI_PER_GPU, OpenbNode

__all__ = ["MAX_CLASS", "ClusterState", "PlacementError", "SimNode"]

MAX_CLASS = 8
"""Largest whole-GPU pod class tracked per node (GpuClustering); larger counts share the last slot."""

I64 = npt.NDArray[np.int64]
BOOL = npt.NDArray[np.bool_]


class PlacementError(ValueError):
    """A policy returned a placement that the cluster state cannot take."""


@dataclass(frozen=True, slots=True)
class SimNode:
    name: str
    cpu: int
    mem: int
    gpus: int
    model: str

    @classmethod
    def from_openb(cls, node: OpenbNode) -> SimNode:
        return cls(node.name, node.cpu_milli, node.memory_mib, node.gpus, node.model)


class ClusterState:
    """Mutable cluster state; index ``i`` is the i-th node in the (seeded) node order."""

    def __init__(self, nodes: Sequence[SimNode | OpenbNode]) -> None:
        sim = [n if isinstance(n, SimNode) else SimNode.from_openb(n) for n in nodes]
        if not sim:
            raise ValueError("a cluster needs at least one node")
        self.nodes: tuple[SimNode, ...] = tuple(sim)
        self.names: tuple[str, ...] = tuple(n.name for n in sim)
        n = len(sim)
        self.size = n
        self.max_gpus = max(1, max(s.gpus for s in sim))
        self.models: tuple[str, ...] = tuple(sorted({s.model for s in sim}))
        model_pos = {m: i for i, m in enumerate(self.models)}
        self.model_idx: I64 = np.array([model_pos[s.model] for s in sim], dtype=np.int64)
        self.cpu_cap: I64 = np.array([s.cpu for s in sim], dtype=np.int64)
        self.mem_cap: I64 = np.array([s.mem for s in sim], dtype=np.int64)
        self.gpu_count: I64 = np.array([s.gpus for s in sim], dtype=np.int64)
        slots = np.arange(self.max_gpus, dtype=np.int64)
        self.gpu_exists: BOOL = slots[None, :] < self.gpu_count[:, None]
        self.cpu_free: I64 = self.cpu_cap.copy()
        self.mem_free: I64 = self.mem_cap.copy()
        self.gpu_free: I64 = np.where(self.gpu_exists, MILLI_PER_GPU, 0).astype(np.int64)
        # derived per-node aggregates, kept in step with gpu_free by allocate()
        self.gpu_free_sum: I64 = self.gpu_free.sum(axis=1)
        self.gpu_max_free: I64 = self.gpu_free.max(axis=1)
        self.full_free: I64 = (self.gpu_free == MILLI_PER_GPU).sum(axis=1).astype(np.int64)
        self.class_count: I64 = np.zeros((n, MAX_CLASS + 1), dtype=np.int64)
        self.pods_on_node: I64 = np.zeros(n, dtype=np.int64)
        # modification clock: stamp[i] = clock value when node i last changed (0 = never)
        self.clock = 0
        self.stamp: I64 = np.zeros(n, dtype=np.int64)
        self.capacity_milli = int(self.gpu_count.sum()) * MILLI_PER_GPU
        self.total_gpus = int(self.gpu_count.sum())
        self._access: dict[tuple[str, ...], BOOL] = {}

    # ------------------------------------------------------------------ queries
    def access(self, gpu_types: tuple[str, ...]) -> BOOL:
        """Nodes with GPUs of an allowed model (``()`` = any GPU node)."""
        hit = self._access.get(gpu_types)
        if hit is None:
            has_gpu = self.gpu_count > 0
            if gpu_types:
                allowed = np.array([m in gpu_types for m in self.models], dtype=np.bool_)
                hit = has_gpu & allowed[self.model_idx]
            else:
                hit = has_gpu
            hit.setflags(write=False)
            self._access[gpu_types] = hit
        return hit

    def feasible(self, pod: SimPod) -> BOOL:
        """The filter stage: CPU and host memory fit (NodeResourcesFit), and for a GPU pod a GPU
        node of an allowed model with one GPU of free milli >= the share, or ``n`` fully free
        GPUs (Open-Gpu-Share)."""
        ok = (self.cpu_free >= pod.cpu) & (self.mem_free >= pod.mem)
        if pod.num_gpu == 0:
            return ok
        ok &= self.access(pod.gpu_types)
        if pod.is_share:
            ok &= self.gpu_max_free >= pod.milli
        else:
            ok &= self.full_free >= pod.num_gpu
        return ok

    def feasible_one(self, node: int, pod: SimPod) -> bool:
        if self.cpu_free[node] < pod.cpu or self.mem_free[node] < pod.mem:
            return False
        if pod.num_gpu == 0:
            return True
        if not self.access(pod.gpu_types)[node]:
            return False
        if pod.is_share:
            return bool(self.gpu_max_free[node] >= pod.milli)
        return bool(self.full_free[node] >= pod.num_gpu)

    def free_gpus(self, node: int) -> list[int]:
        """Free milli per GPU of ``node`` (real GPUs only)."""
        return [int(v) for v in self.gpu_free[node, : self.gpu_count[node]]]

    def lowest_full_gpus(self, node: int, n: int) -> tuple[int, ...]:
        """The ``n`` lowest-index fully free GPUs of ``node`` (whole-GPU choice of every policy)."""
        idx = np.flatnonzero(self.gpu_free[node] == MILLI_PER_GPU)[:n]
        return tuple(int(i) for i in idx)

    @property
    def used_gpu_milli(self) -> int:
        return self.capacity_milli - int(self.gpu_free_sum.sum())

    @property
    def idle_gpu_milli(self) -> int:
        return int(self.gpu_free_sum.sum())

    # ------------------------------------------------------------------ mutation
    def check(self, node: int, gpus: Sequence[int], pod: SimPod) -> None:
        """Raise :class:`PlacementError` unless ``pod`` fits ``node`` on exactly ``gpus``."""
        if not 0 <= node < self.size:
            raise PlacementError(f"pod {pod.name}: no node with index {node}")
        name = self.names[node]
        if self.cpu_free[node] < pod.cpu or self.mem_free[node] < pod.mem:
            raise PlacementError(f"pod {pod.name}: node {name} lacks CPU or host memory")
        if len(gpus) != pod.num_gpu or len(set(gpus)) != len(gpus):
            raise PlacementError(f"pod {pod.name}: needs {pod.num_gpu} distinct GPU(s), got {list(gpus)}")
        if pod.num_gpu and not self.access(pod.gpu_types)[node]:
            raise PlacementError(f"pod {pod.name}: node {name} has no GPU of model {'|'.join(pod.gpu_types)}")
        for g in gpus:
            if not 0 <= g < self.gpu_count[node]:
                raise PlacementError(f"pod {pod.name}: node {name} has no GPU {g}")
            if self.gpu_free[node, g] < pod.milli:
                raise PlacementError(f"pod {pod.name}: GPU {g} of node {name} has too little free milli")

    def allocate(self, node: int, gpus: Sequence[int], pod: SimPod) -> None:
        """Place ``pod`` on ``node`` using GPUs ``gpus`` (validated first)."""
        self.check(node, gpus, pod)
        self.cpu_free[node] -= pod.cpu
        self.mem_free[node] -= pod.mem
        if gpus:
            row = self.gpu_free[node]
            for g in gpus:
                row[g] -= pod.milli
            self.gpu_free_sum[node] = row.sum()
            self.gpu_max_free[node] = row.max()
            self.full_free[node] = int((row == MILLI_PER_GPU).sum())
            self.class_count[node, min(pod.gpu_class, MAX_CLASS)] += 1
        self.pods_on_node[node] += 1
        self.clock += 1
        self.stamp[node] = self.clock
