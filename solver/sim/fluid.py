"""The fluid limit of a churn run: the offered load at which the compute the pods would actually
hold (after MIG round-up) fills the cluster exactly.

Offered load ρ is measured in FGD milli-GPU demand (a 470-milli share counts 470 on every cluster).
A MIG GPU cannot sell 470: the unit gets the smallest serving instance (a 4g.40gb on an A100-80GB,
4/7 of the compute = 571 milli). The cluster is full in the fluid sense when
``ρ · E[demand] = E[held compute]``, so ``fluid_limit_load = E[demand] / E[held compute]``.
On a mixed cluster the held compute is averaged over the GPU groups by their share of the GPUs
(a pod lands on either kind); a hami-core unit holds what it asks (the larger of its memory and
compute fractions). No policy sustains a load above its cluster's fluid limit.
"""

from __future__ import annotations

from collections.abc import Sequence

from models.catalog import GpuModel, model
from models.config import Inventory
from models.requests import PodRequest, profile_serves
from models.types import NodeMode
from solver.openb import MILLI_PER_GPU
from solver.whatif.mapping import serving_profiles
from solver.whatif.workload import Job, job_demand

__all__ = ["fluid_limit", "held_compute"]


def held_compute(req: PodRequest, gpu_model: GpuModel, mode: NodeMode, inv: Inventory) -> float:
    """Milli-GPU of compute one pod holds on a GPU of this model and mode."""
    if mode is NodeMode.HAMI_CORE or not gpu_model.mig_capable:
        return float(job_demand(req, gpu_model.memory_mib)[0])
    profiles = serving_profiles(gpu_model, None if inv.layouts_any else inv.templates)
    total = 0.0
    for c in req.containers:
        if not c.count:
            continue
        best = next((p for p in sorted(profiles, key=lambda p: (p.compute_slices, p.memory_slices))
                     if profile_serves(gpu_model, p, c)), None)
        slices = best.compute_slices if best is not None else gpu_model.compute_slices
        total += c.count * slices * MILLI_PER_GPU / gpu_model.compute_slices
    return total


def fluid_limit(jobs: Sequence[Job], inv: Inventory) -> float | None:
    """``E[demand] / E[held compute]`` over the pod shapes (GPU pods only), None without demand."""
    groups: dict[tuple[str, NodeMode], int] = {}
    for n in inv.nodes:
        for name, k in n.gpus:
            groups[(model(name).name, n.mode)] = groups.get((model(name).name, n.mode), 0) + k
    gpus = sum(groups.values())
    gpu_jobs = [j for j in jobs if j.request is not None and j.demand > 0]
    if not gpu_jobs or not gpus:
        return None
    demand = sum(j.demand for j in gpu_jobs)
    held = 0.0
    for (name, mode), k in groups.items():
        m = model(name)
        held += k / gpus * sum(held_compute(j.request, m, mode, inv) for j in gpu_jobs if j.request is not None)
    return demand / held if held else None


