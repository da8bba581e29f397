"""Allocated GPU capacity of a what-if run and its arrived-load buckets.

The FGD protocol's unallocated GPU % (README §7.6) is capacity minus the *requested* milli-GPU of
the placed pods. On MIG a pod holds a whole instance, usually more than it asked for (a 470-milli
share holds a 4g, 4/7 of the compute), so three measures are kept, each in % of the cluster's GPU
capacity and bucketed by arrived load exactly as FGD does (:func:`solver.fgd.metrics.bucketize`):

* ``unallocated_gpu_pct`` (the headline): GPU **compute** not held. MIG GPU: compute slices not
  covered by a held instance (a free instance, or a slice no instance covers, e.g. the 7th slice of
  a 3g+3g layout, counts as unallocated); hami-core GPU: ``1 − max(used memory, used cores)``;
* ``unallocated_gpu_mem_pct``: GPU **memory** not held (MIG: memory slices; hami-core: memory);
* ``unallocated_demand_pct``: the FGD definition — capacity minus the placed pods' requested
  milli-GPU — which charges MIG's round-up (held but not requested) as unallocated.

Fragmentation (FGD's ``F``) is defined over milli-GPU shares of free GPU capacity; a MIG GPU's
free capacity is a set of instances and legal placements, not a milli amount, so the measure does
not transfer and ``fragmentation_pct`` is reported as null for every what-if run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.types import Gpu, Node, NodeMode
from solver.fgd.metrics import StepLog, bucketize
from solver.openb import MILLI_PER_GPU

__all__ = ["UNALLOCATED_DEFINITIONS", "WhatifBuckets", "WhatifLog", "gpu_allocation", "node_allocation"]

UNALLOCATED_DEFINITIONS: dict[str, str] = {
    "unallocated_gpu_pct": "GPU compute not held, % of capacity: MIG = compute slices not covered by a held "
                           "instance; hami-core = 1 - max(used memory, used cores) per GPU",
    "unallocated_gpu_mem_pct": "GPU memory not held, % of capacity: MIG = memory slices not in a held instance; "
                               "hami-core = free memory",
    "unallocated_demand_pct": "FGD definition: capacity minus the placed pods' requested milli-GPU, % of capacity "
                              "(MIG round-up counts as unallocated)",
    "fragmentation_pct": "null: FGD's fragmentation measure is defined on milli-GPU shares and does not transfer "
                         "to MIG instances",
}


def gpu_allocation(g: Gpu) -> tuple[float, float]:
    """(compute, memory) held on one GPU, in milli-GPU."""
    if g.mode is NodeMode.MIG:
        m = g.gpu_model
        comp = mem = 0
        for i in g.instances:
            if not i.free:
                p = m.profile(i.slot.profile)
                comp += p.compute_slices
                mem += p.memory_slices
        return (min(MILLI_PER_GPU, comp * MILLI_PER_GPU / m.compute_slices),
                min(MILLI_PER_GPU, mem * MILLI_PER_GPU / m.memory_slices))
    if not g.shares:
        return 0.0, 0.0
    mem_f = min(1.0, g.used_memory_mib / g.memory_mib) if g.memory_mib else 1.0
    core_f = min(1.0, g.used_cores / 100)
    return max(mem_f, core_f) * MILLI_PER_GPU, mem_f * MILLI_PER_GPU


def node_allocation(n: Node) -> tuple[float, float]:
    comp = mem = 0.0
    for g in n.gpus:
        c, m = gpu_allocation(g)
        comp += c
        mem += m
    return comp, mem


F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class WhatifBuckets:
    unallocated_gpu_pct: dict[int, float]
    unallocated_gpu_mem_pct: dict[int, float]
    unallocated_demand_pct: dict[int, float]


@dataclass(frozen=True)
class WhatifLog:
    """One row per pod attempt: arrived demand and the three allocated amounts, in milli-GPU."""

    arrived_milli: npt.NDArray[np.int64]
    used_compute: F64
    used_memory: F64
    used_demand: npt.NDArray[np.int64]
    placed: npt.NDArray[np.bool_]

    def buckets(self, total_gpus: int) -> WhatifBuckets:
        cap = total_gpus * MILLI_PER_GPU
        zero = np.zeros(len(self.arrived_milli), dtype=np.float64)

        def one(used: npt.NDArray[np.generic]) -> dict[int, float]:
            u = np.rint(np.asarray(used, dtype=np.float64)).astype(np.int64)
            log = StepLog(self.arrived_milli, u, zero, cap - u, self.placed)
            return bucketize(log, total_gpus).unallocated_gpu_pct

        return WhatifBuckets(one(self.used_compute), one(self.used_memory), one(self.used_demand))
