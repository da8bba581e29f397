"""FGD, fragmentation gradient descent (README §7.4, last row).

Node score: for a sharing pod, for each GPU ``i`` with enough free milli, simulate the placement
(CPU −= cpu, GPU ``i`` −= milli), ``Δ = F(before) − F(after)`` and ``score_i = int(100 ·
sigmoid(Δ / 1000))``; the node's score is the best ``score_i`` and the pod goes to the first GPU
that reaches it. Other pods: simulate packing into the GPUs with the least sufficient free milli
(for whole GPUs: the lowest-index fully free ones), same formula. A pod with no requests at all
scores 100 everywhere.

Speed: a node's score for a pod depends only on the node's state and the pod's spec, and one
node changes per placed pod, so scores are cached per spec and recomputed, vectorised, only for
nodes that changed since that spec was last scored (``ClusterState.stamp``); fresh states are
deduplicated (an empty cluster has a handful of distinct node shapes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from solver.fgd.cluster import ClusterState
from solver.fgd.frag import FragModel
from solver.fgd.policy import Placement, Policy, register_policy
from solver.fgd.workload import PodSpec, SimPod, TypicalPods
from solver.openb import MILLI_PER_GPU

__all__ = ["FGDPolicy", "fgd_score"]

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


def fgd_score(num_before: I64 | int, num_after: I64 | int, weight_total: int) -> I64:
    """``int(100 · sigmoid(Δ/1000))`` with ``Δ = (num_before − num_after) / W`` (milli-GPU)."""
    delta = (np.asarray(num_before, dtype=np.int64) - np.asarray(num_after, dtype=np.int64)) / float(weight_total)
    sig = 1.0 / (1.0 + np.exp(-(delta / 1000.0)))
    return np.trunc(sig * 100.0).astype(np.int64)


@dataclass
class _SpecCache:
    score: I64
    gpu: I64  # chosen GPU for a share (-1 otherwise)
    stamp: I64  # ClusterState.clock when the entry was computed (-1: never)


class FGDPolicy(Policy):
    name = "fgd"

    def __init__(self) -> None:
        super().__init__()
        self.model: FragModel | None = None
        self._cache: dict[PodSpec, _SpecCache] = {}
        self._before: I64 = np.zeros(0, dtype=np.int64)
        self._before_stamp: I64 = np.zeros(0, dtype=np.int64)

    def prepare(self, state: ClusterState, typical: TypicalPods, rng: np.random.Generator) -> None:
        super().prepare(state, typical, rng)
        self.model = FragModel(typical, state.models)
        self._cache = {}
        self._before = np.zeros(state.size, dtype=np.int64)
        self._before_stamp = np.full(state.size, -1, dtype=np.int64)

    # -- scores ----------------------------------------------------------------------------
    def _numerators_before(self, state: ClusterState, idx: I64) -> I64:
        assert self.model is not None
        stale = idx[state.stamp[idx] > self._before_stamp[idx]]
        if stale.size:
            self._before[stale] = self.model.numerators_dedup(
                state.cpu_free[stale], state.gpu_free[stale], state.model_idx[stale]
            )
            self._before_stamp[stale] = state.clock
        return self._before[idx]

    def node_scores(self, state: ClusterState, pod: SimPod, idx: I64) -> tuple[I64, I64]:
        """FGD scores (and the share's GPU, else -1) of nodes ``idx``, which must be feasible."""
        model = self.model
        assert model is not None
        before = self._numerators_before(state, idx)
        cpu_after = state.cpu_free[idx] - pod.cpu
        gpus = state.gpu_free[idx]
        if pod.is_share:
            rows, cols = np.nonzero(gpus >= pod.milli)
            after = gpus[rows].copy()
            after[np.arange(rows.size), cols] -= pod.milli
            num_after = model.numerators_dedup(cpu_after[rows], after, state.model_idx[idx][rows])
            per_gpu = np.full(gpus.shape, -1, dtype=np.int64)
            per_gpu[rows, cols] = fgd_score(before[rows], num_after, model.weight_total)
            return per_gpu.max(axis=1), per_gpu.argmax(axis=1)
        after = gpus
        if pod.num_gpu:
            full = gpus == MILLI_PER_GPU
            take = full & (np.cumsum(full, axis=1) <= pod.num_gpu)
            after = np.where(take, 0, gpus)
        num_after = model.numerators_dedup(cpu_after, after, state.model_idx[idx])
        return fgd_score(before, num_after, model.weight_total), np.full(idx.size, -1, dtype=np.int64)

    def _spec_cache(self, state: ClusterState, spec: PodSpec) -> _SpecCache:
        hit = self._cache.get(spec)
        if hit is None:
            n = state.size
            hit = _SpecCache(
                score=np.full(n, -1, dtype=np.int64),
                gpu=np.full(n, -1, dtype=np.int64),
                stamp=np.full(n, -1, dtype=np.int64),
            )
            self._cache[spec] = hit
        return hit

    def select(self, state: ClusterState, pod: SimPod) -> Placement | None:
        if self.model is None:
            raise RuntimeError("FGDPolicy.prepare() was not called")
        feasible = state.feasible(pod)
        if not feasible.any():
            return None
        if pod.cpu == 0 and pod.mem == 0 and pod.num_gpu == 0:
            node = self.pick(np.full(state.size, 100, dtype=np.int64), feasible)
            assert node is not None
            return node, ()
        cache = self._spec_cache(state, pod.spec)
        stale = np.flatnonzero(feasible & (state.stamp > cache.stamp))
        if stale.size:
            score, gpu = self.node_scores(state, pod, stale)
            cache.score[stale] = score
            cache.gpu[stale] = gpu
            cache.stamp[stale] = state.clock
        node = self.pick(cache.score, feasible)
        assert node is not None
        if pod.num_gpu == 0:
            return node, ()
        if pod.is_share:
            return node, (int(cache.gpu[node]),)
        return node, state.lowest_full_gpus(node, pod.num_gpu)


register_policy(FGDPolicy.name, FGDPolicy)
