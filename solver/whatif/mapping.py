"""The MIG mapping of the openb workload (``shared/data/openb/README.md`` §5).

A ``gpu_milli`` share is a fraction of one GPU's memory *and* compute (trace author, clusterdata
#193). On a MIG GPU it becomes a HAMi request for one unit with

* ``nvidia.com/gpumem = ceil(milli / 1000 × full-instance memory)`` (the 7g instance's real memory,
  what ``models.requests.mig_memory_total`` calls 100 %), and
* ``nvidia.com/gpucores = ceil(milli / 10)`` (% of the SMs),

so the unit lands on the smallest instance with at least that memory and compute share, exactly as
``models.requests.profile_serves`` decides. Whole-GPU pods become ``nvidia.com/gpu: N`` (HAMi: an
exclusive whole GPU, i.e. the 7g instance). CPU-only pods have no GPU request.

Without a reference model (an inventory of mixed models, or hami-core GPUs) the share becomes
``nvidia.com/gpumem-percentage = ceil(milli / 10)`` and the same ``gpucores``.

``gpu_spec`` (the trace's GPU-type constraints) names the trace's own models (T4, V100M16, …);
on a rebuilt cluster they mean nothing and are ignored.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from models.catalog import GpuModel, MigProfile, model
from models.config import InventoryNode
from models.requests import ContainerRequest, PodRequest, mig_memory_total, profile_serves
from models.templates import DeviceConfig
from models.types import NodeMode
from solver.fgd.workload import SimPod
from solver.openb import MILLI_PER_GPU, OpenbNode

__all__ = [
    "MIG_MODELS",
    "NAMESPACE",
    "mig_inventory_nodes",
    "openb_container",
    "openb_request",
    "serving_profiles",
    "smallest_profile",
]

#: The 80 GB MIG models the variant offers (``--mig-model``).
MIG_MODELS: tuple[str, ...] = ("A100-SXM4-80GB", "H100-80GB")
NAMESPACE = "openb"


def openb_container(num_gpu: int, milli: int, ref_memory_mib: int | None) -> ContainerRequest | None:
    """The container request of an openb pod (None for a CPU-only pod).

    ``ref_memory_mib``: what 100 % of a GPU's memory means for the share (the MIG model's
    full-instance memory); None: express the share as a memory percentage instead.
    """
    if num_gpu <= 0 or milli <= 0:
        return None
    if milli >= MILLI_PER_GPU:
        return ContainerRequest("main", 0, num_gpu, None, None, 100)
    cores = math.ceil(milli / 10)
    if ref_memory_mib is None:
        return ContainerRequest("main", 0, 1, None, math.ceil(milli / 10), cores)
    return ContainerRequest("main", 0, 1, math.ceil(milli * ref_memory_mib / MILLI_PER_GPU), None, cores)


def openb_request(pod: SimPod, ref_memory_mib: int | None) -> PodRequest | None:
    """An openb pod as a :class:`PodRequest` in namespace ``openb`` (None for a CPU-only pod)."""
    c = openb_container(pod.num_gpu, pod.milli, ref_memory_mib)
    if c is None:
        return None
    return PodRequest(NAMESPACE, pod.name, containers=(c,))


def serving_profiles(gpu_model: GpuModel, templates: DeviceConfig | None = None) -> list[MigProfile]:
    """The profiles a planner may carve, smallest first (memory, then compute): those of the model's
    templates, or every non-media profile when ``templates`` is None (``layouts: any``)."""
    if templates is None:
        names = {p.name for p in gpu_model.profiles if not p.media}
    else:
        names = {s.profile for t in templates.template_layouts(gpu_model) for s in t.layout}
    return sorted((gpu_model.profile(n) for n in names),
                  key=lambda p: (p.memory_mib, p.compute_slices, p.name))


def smallest_profile(model_name: str, milli: int, templates: DeviceConfig | None = None) -> MigProfile | None:
    """The smallest profile of ``model_name`` that serves one unit of a ``milli`` share
    (``profile_serves``), among the templates' profiles (or all, when ``templates`` is None)."""
    m = model(model_name)
    c = openb_container(1, milli, mig_memory_total(m))
    if c is None:
        return None
    for p in serving_profiles(m, templates):
        if profile_serves(m, p, c):
            return p
    return None


def mig_inventory_nodes(nodes: Sequence[OpenbNode], model_name: str) -> tuple[InventoryNode, ...]:
    """Every GPU node of the openb node list, its GPUs replaced by ``model_name`` in ``mig`` mode;
    node names, GPU counts, CPU and host memory kept. Nodes without GPUs are left out."""
    m = model(model_name)
    if not m.mig_capable:
        raise ValueError(f"{m.name} is not MIG-capable")
    return tuple(
        InventoryNode(n.name, NodeMode.MIG, ((m.name, n.gpus),), n.cpu_milli, n.memory_mib)
        for n in sorted(nodes, key=lambda n: n.name)
        if n.gpus > 0
    )
