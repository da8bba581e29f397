"""The fragmentation measure ``F`` of README §7.5, exact and vectorised.

For node ``n`` and typical pod ``t`` (cpu ``c_t``, per-GPU milli ``m_t``, count ``k_t``, models
``g_t``) the class is ``XL``/``XR`` for a CPU-only ``t`` (CPU fits / not), ``no_access`` when the
node's model is not allowed, else ``Q3``/``Q4`` when at least ``k_t`` GPUs have ``m_t`` free (CPU
fits / not) and ``Q2``/``Q1`` otherwise. The fragment is the free milli of GPUs with less than
``m_t`` free in ``Q3``, and **all** free GPU milli of the node in every other class.
``F(n) = Σ_t p_t · fragment(n, t)``.

To stay exact, this module works with integer numerators: ``p_t = count_t / W`` with
``W = Σ count_t``, so ``F(n) = num(n) / W`` where ``num(n) = Σ_t count_t · fragment(n, t)`` is an
integer. Policies and metrics divide by ``W`` only at the end.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from solver.fgd.cluster import ClusterState
from solver.fgd.workload import TypicalPods

__all__ = ["CLASSES", "FragModel", "FragTracker", "classify", "fragment"]

I64 = npt.NDArray[np.int64]
CLASSES = ("Q1", "Q2", "Q3", "Q4", "XL", "XR", "no_access")
_CHUNK = 4096


def classify(
    cpu_free: int,
    gpu_free: Sequence[int],
    model: str,
    cpu: int,
    milli: int,
    count: int,
    gpu_types: tuple[str, ...] = (),
) -> str:
    """The class of a node (free CPU, free milli per GPU, model) for one typical pod spec."""
    if milli == 0:
        return "XL" if cpu_free >= cpu else "XR"
    if gpu_types and model not in gpu_types:
        return "no_access"
    if sum(1 for f in gpu_free if f >= milli) >= count:
        return "Q3" if cpu_free >= cpu else "Q4"
    return "Q2" if cpu_free >= cpu else "Q1"


def fragment(
    cpu_free: int,
    gpu_free: Sequence[int],
    model: str,
    cpu: int,
    milli: int,
    count: int,
    gpu_types: tuple[str, ...] = (),
) -> int:
    """The fragment (milli) of a node for one typical pod spec."""
    if classify(cpu_free, gpu_free, model, cpu, milli, count, gpu_types) == "Q3":
        return sum(f for f in gpu_free if f < milli)
    return sum(gpu_free)


class FragModel:
    """Typical pods compiled for vectorised ``num(n)`` over a batch of node states."""

    def __init__(self, typical: TypicalPods, models: Sequence[str]) -> None:
        self.typical = typical
        self.models = tuple(models)
        self.weight_total = typical.total
        gpu_t = typical.milli > 0
        self.w_cpu_only = int(typical.count[~gpu_t].sum())
        self.c: I64 = typical.cpu[gpu_t]
        self.m: I64 = typical.milli[gpu_t]
        self.k: I64 = typical.num_gpu[gpu_t]
        self.w: I64 = typical.count[gpu_t]
        types = [t for t, g in zip(typical.gpu_types, gpu_t, strict=True) if g]
        # access[model, t]: a GPU node of that model may host typical pod t
        self.access = np.array([[not t or mdl in t for t in types] for mdl in self.models], dtype=np.bool_).reshape(
            len(self.models), len(types)
        )
        # CPU thresholds: F depends on free CPU only through comparisons with these
        self.cpu_levels: I64 = np.unique(self.c)

    def numerators(self, cpu_free: I64, gpu_free: I64, model_idx: I64) -> I64:
        """``num`` for a batch of node states: ``cpu_free`` (B,), ``gpu_free`` (B, G) padded with
        zeros, ``model_idx`` (B,) into ``models``."""
        b = len(cpu_free)
        out = np.empty(b, dtype=np.int64)
        for lo in range(0, b, _CHUNK):
            hi = min(b, lo + _CHUNK)
            out[lo:hi] = self._numerators(cpu_free[lo:hi], gpu_free[lo:hi], model_idx[lo:hi])
        return out

    def _numerators(self, cpu_free: I64, gpu_free: I64, model_idx: I64) -> I64:
        total = gpu_free.sum(axis=1)
        num: I64 = total * self.w_cpu_only
        if len(self.m) == 0:
            return num
        ge = gpu_free[:, :, None] >= self.m[None, None, :]  # (B, G, T)
        cnt = ge.sum(axis=1)
        fit_milli = np.einsum("bg,bgt->bt", gpu_free, ge.astype(np.int64))
        q3 = (cnt >= self.k[None, :]) & (cpu_free[:, None] >= self.c[None, :]) & self.access[model_idx]
        frag: I64 = np.where(q3, total[:, None] - fit_milli, total[:, None])
        out: I64 = num + frag @ self.w
        return out

    def numerators_dedup(self, cpu_free: I64, gpu_free: I64, model_idx: I64) -> I64:
        """Like :meth:`numerators`, computed once per distinct state (model, CPU level, sorted
        free milli): worth it when many nodes share a state, as in an empty cluster."""
        if len(cpu_free) <= 32:
            return self.numerators(cpu_free, gpu_free, model_idx)
        level = np.searchsorted(self.cpu_levels, cpu_free, side="right")
        key = np.concatenate([model_idx[:, None], level[:, None], -np.sort(-gpu_free, axis=1)], axis=1)
        _uniq, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
        vals = self.numerators(cpu_free[first], gpu_free[first], model_idx[first])
        return vals[inverse.reshape(-1)]


class FragTracker:
    """Per-node ``num`` kept up to date as pods are placed (the metric side)."""

    def __init__(self, model: FragModel, state: ClusterState) -> None:
        self.model = model
        self.state = state
        self.node_num: I64 = model.numerators_dedup(state.cpu_free, state.gpu_free, state.model_idx)
        self.total_num = int(self.node_num.sum())

    def update(self, node: int) -> None:
        s = self.state
        new = self.model.numerators(
            s.cpu_free[node : node + 1], s.gpu_free[node : node + 1], s.model_idx[node : node + 1]
        )
        self.total_num += int(new[0]) - int(self.node_num[node])
        self.node_num[node] = new[0]

    @property
    def frag_milli(self) -> float:
        """Cluster fragmentation ``Σ_n F(n)`` in milli-GPU."""
        return self.total_num / self.model.weight_total
