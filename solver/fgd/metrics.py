"""Per-pod log rows and the arrived-load bucketing of README §7.6.

After every pod the runner logs used GPU milli, arrived GPU milli, cluster fragmentation
``Σ F`` and idle GPU milli. Post-processing, per run:

* arrived ratio ``= round(arrived / (GPUs · 1000) · 100)`` (integer %, half-to-even);
* allocation ratio ``= used / (GPUs · 1000) · 100`` rounded to 0.01 per row;
* for each bucket ``x`` in 0..130: the mean over rows with arrived ratio ``x``, else over rows in
  ``[x − 1, x + 1]``, else missing; rounded to 0.01;
* unallocated GPU % ``= 100 − allocation``; Frag/Total % ``= ΣF / (GPUs · 1000) · 100``;
  frag rate % ``= ΣF / idle · 100``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["BUCKETS", "Buckets", "StepLog", "bucketize"]

BUCKETS = range(0, 131)
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class StepLog:
    """One row per pod attempt (placed or failed)."""

    arrived_milli: I64
    used_milli: I64
    frag_milli: F64
    idle_milli: I64
    placed: npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Buckets:
    """Per arrived-load bucket (integer %) values; buckets without data are absent."""

    unallocated_gpu_pct: dict[int, float]
    fragmentation_pct: dict[int, float]
    frag_rate_pct: dict[int, float]


def _bucket_means(ratio: I64, values: F64) -> dict[int, float]:
    out: dict[int, float] = {}
    if ratio.size == 0:
        return out
    top = max(int(ratio.max()), BUCKETS.stop) + 2
    shifted = ratio.clip(min=0)
    sums = np.bincount(shifted, weights=values, minlength=top)
    counts = np.bincount(shifted, minlength=top)
    for x in BUCKETS:
        if counts[x]:
            out[x] = float(sums[x] / counts[x])
            continue
        lo, hi = max(x - 1, 0), x + 2
        c = counts[lo:hi].sum()
        if c:
            out[x] = float(sums[lo:hi].sum() / c)
    return out


def bucketize(log: StepLog, total_gpus: int) -> Buckets:
    """README §7.6 aggregation of one run."""
    scale = float(total_gpus) * 10.0  # milli → % of capacity
    arrived = np.array([round(v / scale) for v in log.arrived_milli.tolist()], dtype=np.int64)
    alloc = np.array([round(v / scale, 2) for v in log.used_milli.tolist()], dtype=np.float64)
    frag = log.frag_milli
    idle = log.idle_milli.astype(np.float64)
    rate = np.divide(100.0 * frag, idle, out=np.zeros_like(frag), where=idle > 0)
    alloc_b = _bucket_means(arrived, alloc)
    frag_b = _bucket_means(arrived, frag)
    rate_b = _bucket_means(arrived, rate)
    return Buckets(
        unallocated_gpu_pct={x: round(100.0 - round(v, 2), 2) for x, v in alloc_b.items()},
        fragmentation_pct={x: round(100.0 * v / 1000.0 / total_gpus, 2) for x, v in frag_b.items()},
        frag_rate_pct={x: round(v, 2) for x, v in rate_b.items()},
    )
