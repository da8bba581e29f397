"""The FGD paper's baseline policies (README §7.4): random, dotprod, clustering, packing,
fgd-bestfit (the paper's BestFit).

Each scores every node at once with numpy (integer scores, higher wins, exactly the upstream
plugin arithmetic); the filter mask picks the candidates and :meth:`Policy.pick` the winner (ties:
see :func:`~solver.fgd.policy.pick_best`). ``scores()`` is public so tests can check a node's
score by hand.
"""

from __future__ import annotations

import abc

import numpy as np
import numpy.typing as npt

from solver.fgd.cluster import MAX_CLASS, ClusterState
from solver.fgd.policy import Placement, Policy, best_fit_gpus, register_policy
from solver.fgd.workload import SimPod
from solver.openb import MILLI_PER_GPU

__all__ = [
    "MAX_NODE_SCORE",
    "MAX_SPEC_CPU",
    "MAX_SPEC_GPU",
    "BestFitPolicy",
    "ClusteringPolicy",
    "DotProdPolicy",
    "PackingPolicy",
    "RandomPolicy",
    "ScoredPolicy",
]

MAX_NODE_SCORE = 100
MAX_SPEC_CPU = 128_000  # milli-CPU
MAX_SPEC_GPU = 8_000  # milli-GPU

I64 = npt.NDArray[np.int64]
BOOL = npt.NDArray[np.bool_]


class ScoredPolicy(Policy):
    """A policy = a node score (vectorised over nodes) + a GPU choice on the winning node."""

    @abc.abstractmethod
    def scores(self, state: ClusterState, pod: SimPod, feasible: BOOL) -> I64:
        """Integer node scores (only feasible entries are meaningful)."""

    def gpus(self, state: ClusterState, node: int, pod: SimPod) -> tuple[int, ...]:
        return best_fit_gpus(state, node, pod)

    def select(self, state: ClusterState, pod: SimPod) -> Placement | None:
        feasible = state.feasible(pod)
        if not feasible.any():
            return None
        node = self.pick(self.scores(state, pod, feasible), feasible)
        assert node is not None
        return node, self.gpus(state, node, pod)


class RandomPolicy(Policy):
    """A uniformly random feasible node; a share goes to a uniformly random GPU that fits, whole
    GPUs to the lowest-index fully free ones."""

    name = "random"

    def select(self, state: ClusterState, pod: SimPod) -> Placement | None:
        idx = np.flatnonzero(state.feasible(pod))
        if idx.size == 0:
            return None
        node = int(idx[self.rng.integers(idx.size)])
        if pod.num_gpu == 0:
            return node, ()
        if pod.is_share:
            fits = np.flatnonzero(state.gpu_free[node] >= pod.milli)
            return node, (int(fits[self.rng.integers(fits.size)]),)
        return node, state.lowest_full_gpus(node, pod.num_gpu)


class DotProdPolicy(ScoredPolicy):
    """Tetris dot product, dimensions merged (CPU, total GPU), normalised by the max spec:
    ``int(100 · (1 − (C/128000 · cpu/128000 + L/8000 · gpu/8000) / 2))``; 0 when CPU lacks."""

    name = "dotprod"

    def scores(self, state: ClusterState, pod: SimPod, feasible: BOOL) -> I64:
        node_c = state.cpu_free / float(MAX_SPEC_CPU)
        node_g = state.gpu_free_sum / float(MAX_SPEC_GPU)
        pod_c = pod.cpu / float(MAX_SPEC_CPU)
        pod_g = pod.demand / float(MAX_SPEC_GPU)
        dot = node_c * pod_c + node_g * pod_g
        score = 1.0 - dot / 2.0
        out = np.trunc(MAX_NODE_SCORE * score).astype(np.int64)
        out[state.cpu_free < pod.cpu] = 0
        return out


class ClusteringPolicy(ScoredPolicy):
    """GpuClustering: keep pods of one class (a share, or n whole GPUs) together.
    ``base = 25 · (8000 − L) / 8000`` (integer); +75 if the node hosts only the pod's class, +50 if
    it hosts it among others, +25 if it hosts no GPU pod yet; CPU-only pods score 0."""

    name = "clustering"

    def scores(self, state: ClusterState, pod: SimPod, feasible: BOOL) -> I64:
        if pod.num_gpu == 0:
            return np.zeros(state.size, dtype=np.int64)
        base = (MAX_NODE_SCORE // 4) * (MAX_SPEC_GPU - state.gpu_free_sum) // MAX_SPEC_GPU
        present = state.class_count > 0
        n_classes = present.sum(axis=1)
        own = present[:, min(pod.gpu_class, MAX_CLASS)]
        bonus = np.where(
            own,
            np.where(n_classes == 1, MAX_NODE_SCORE * 3 // 4, MAX_NODE_SCORE * 2 // 4),
            np.where(n_classes == 0, MAX_NODE_SCORE // 4, 0),
        )
        return (base + bonus).astype(np.int64)


class PackingPolicy(ScoredPolicy):
    """GpuPacking: prefer shared GPUs, then free GPUs on used nodes, then idle nodes.
    Idle node (k GPUs): ``max(33 − k, k)``; the pod needs fully free GPUs: ``max(50 − #used
    fully free, 33)``; else ``max(100 − Σ(free·100/1000)/10, 50)`` over the picked GPUs (GPUs
    taken in ascending free milli). CPU-only pods score 0."""

    name = "packing"

    def scores(self, state: ClusterState, pod: SimPod, feasible: BOOL) -> I64:
        if pod.num_gpu == 0:
            return np.zeros(state.size, dtype=np.int64)
        k = state.gpu_count
        idle = np.maximum(MAX_NODE_SCORE // 3 - k, k)
        if pod.is_share:
            row = state.gpu_free
            min_fit = np.where(row >= pod.milli, row, MILLI_PER_GPU + 1).min(axis=1)
            shared = np.maximum(MAX_NODE_SCORE - (min_fit * 100 // MILLI_PER_GPU) // 10, MAX_NODE_SCORE // 2)
            fresh = max(MAX_NODE_SCORE // 2 - 1, MAX_NODE_SCORE // 3)
            used = np.where(min_fit == MILLI_PER_GPU, fresh, shared)
        else:
            used = np.full(state.size, max(MAX_NODE_SCORE // 2 - pod.num_gpu, MAX_NODE_SCORE // 3))
        return np.where(state.full_free == k, idle, used).astype(np.int64)


class BestFitPolicy(ScoredPolicy):
    """BestFit: ``s = 0.5·(C − cpu)/128000 + 0.5·(L − gpu)/8000``, raw ``int(100·(1 − s))``,
    min-max normalised over the feasible nodes to 0..100 (all equal → 0)."""

    name = "fgd-bestfit"

    @staticmethod
    def raw_scores(state: ClusterState, pod: SimPod) -> I64:
        s = (state.cpu_free - pod.cpu) / float(MAX_SPEC_CPU) * 0.5
        s = s + (state.gpu_free_sum - pod.demand) / float(MAX_SPEC_GPU) * 0.5
        return np.trunc((1.0 - s) * MAX_NODE_SCORE).astype(np.int64)

    def scores(self, state: ClusterState, pod: SimPod, feasible: BOOL) -> I64:
        raw = self.raw_scores(state, pod)
        if not feasible.any():
            return raw
        lo = int(raw[feasible].min())
        hi = int(raw[feasible].max())
        if hi == lo:
            out = np.zeros(state.size, dtype=np.int64)
        else:
            out = (raw - lo) * MAX_NODE_SCORE // (hi - lo)
        out[~feasible] = -1
        return out


for _cls in (RandomPolicy, DotProdPolicy, ClusteringPolicy, PackingPolicy, BestFitPolicy):
    register_policy(_cls.name, _cls)
