"""Building :class:`RunSpec` values: the MIG variant of the openb cluster, or an inventory."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from models.catalog import model
from models.config import BUILTIN_DEVICE_CONFIG, Inventory, InventoryNode
from models.requests import mig_memory_total
from models.templates import DeviceConfig
from models.types import NodeMode
from solver.fgd.workload import SimPod
from solver.openb import OpenbNode, OpenbPod
from solver.policies import info

from .cluster import scale_nodes
from .mapping import mig_inventory_nodes
from .runner import RunSpec
from .workload import Job

__all__ = ["HAMI_CORE_MODELS", "HAMI_CORE_SPLIT", "hami_core_inventory_nodes", "inventory_spec", "mig_spec",
           "nodes_spec", "openb_ref_memory"]

#: The catalog model each openb GPU model becomes on the hami-core view of the node list. G2 and G3
#: are unnamed in the trace; on hami-core a share is a memory percentage, so a model only names the
#: GPU (its MiB never enter a percentage request) -- they become ``A10``.
HAMI_CORE_MODELS: dict[str, str] = {"T4": "T4", "P100": "P100", "V100M16": "V100-16GB", "V100M32": "V100-32GB",
                                    "A10": "A10", "G2": "A10", "G3": "A10"}
#: Shares per GPU on the hami-core view: the FGD protocol has no per-GPU share limit (HAMi's default
#: ``deviceSplitCount`` is 10); 100 is more than any GPU can hold of >= 1 % shares.
HAMI_CORE_SPLIT = 100


def openb_ref_memory(inv: Inventory) -> int | None:
    """What 100 % of a GPU means for an openb share on this inventory: with one GPU model, that
    model's full-GPU memory (MiB requests, exactly what the MIG variant of the node list asks, so
    the node-list path and an inventory of the same cluster agree); with several models, None
    (memory percentages, valid on every model)."""
    models = {m for n in inv.nodes for m, _ in n.gpus}
    if len(models) != 1:
        return None
    from .runner import reference_memory

    return reference_memory(inv)


def _sim(pods: Sequence[OpenbPod | SimPod]) -> tuple[SimPod, ...]:
    return tuple(p if isinstance(p, SimPod) else SimPod.from_openb(p) for p in pods)


def mig_spec(nodes: Sequence[OpenbNode], pods: Sequence[OpenbPod | SimPod], mig_model: str = "A100-SXM4-80GB",
             policy: str = "dynamig", *, scale: float = 1.0, layouts_any: bool = False, tune_ratio: float = 1.3,
             templates: DeviceConfig = BUILTIN_DEVICE_CONFIG, time_budget_ms: float = 200.0) -> RunSpec:
    """The MIG variant: every GPU node of ``nodes`` with its GPUs replaced by ``mig_model`` in mig
    mode (a ``scale`` fraction of the nodes, by shape), the openb ``pods`` mapped to MiB requests
    against the model's full-instance memory."""
    m = model(mig_model)
    inv = Inventory(scale_nodes(mig_inventory_nodes(nodes, m.name), scale), templates, layouts_any, "openb")
    return RunSpec(inv, _sim(pods), policy, tune_ratio, mig_memory_total(m), time_budget_ms,
                   (("mig_model", m.name), ("scale", scale), ("variant", "mig")))


def hami_core_inventory_nodes(nodes: Sequence[OpenbNode]) -> tuple[InventoryNode, ...]:
    """Every GPU node of the openb node list as a hami-core node: its GPUs (model per
    :data:`HAMI_CORE_MODELS`), CPU and host memory, :data:`HAMI_CORE_SPLIT` shares per GPU."""
    out = []
    for n in sorted(nodes, key=lambda n: n.name):
        if n.gpus <= 0:
            continue
        name = HAMI_CORE_MODELS.get(n.model)
        if name is None:
            raise ValueError(f"node {n.name}: GPU model {n.model!r} has no hami-core equivalent "
                             f"(known: {', '.join(HAMI_CORE_MODELS)})")
        out.append(InventoryNode(n.name, NodeMode.HAMI_CORE, ((name, n.gpus),), n.cpu_milli, n.memory_mib,
                                 HAMI_CORE_SPLIT))
    return tuple(out)


def nodes_spec(nodes: Sequence[OpenbNode], pods: Sequence[OpenbPod | SimPod], policy: str = "dynamig", *,
               scale: float = 1.0, tune_ratio: float = 1.3, time_budget_ms: float = 200.0) -> RunSpec:
    """The openb node list as it is (no MIG): hami-core nodes (:func:`hami_core_inventory_nodes`),
    shares as ``gpumem-percentage = gpucores = milli / 10`` -- the FGD protocol for a cluster-state
    policy. The same run as :func:`inventory_spec` on an inventory of those nodes."""
    inv = Inventory(scale_nodes(hami_core_inventory_nodes(nodes), scale), BUILTIN_DEVICE_CONFIG, False, "openb")
    return RunSpec(inv, _sim(pods), policy, tune_ratio, None, time_budget_ms,
                   (("scale", scale), ("variant", "hami-core")))


def inventory_spec(inv: Inventory, pods: Sequence[OpenbPod | SimPod] | Sequence[Job], policy: str = "dynamig", *,
                   scale: float = 1.0, layouts_any: bool | None = None, tune_ratio: float = 1.3,
                   time_budget_ms: float = 200.0) -> RunSpec:
    """An inventory-driven run: openb pods become requests as :func:`openb_ref_memory` says (MiB
    on a one-model cluster, memory percentages on a mixed one); jobs (e.g. from Pod YAML) are
    taken as they are. Under the FGD paper's policies openb shares are percentages on every
    inventory (those policies read a share as milli-GPU)."""
    inv = replace(inv, nodes=scale_nodes(inv.nodes, scale))
    if layouts_any is not None:
        inv = replace(inv, layouts_any=layouts_any)
    items: tuple[SimPod, ...] | tuple[Job, ...]
    if pods and isinstance(pods[0], Job):
        items = tuple(p for p in pods if isinstance(p, Job))
    else:
        items = _sim([p for p in pods if not isinstance(p, Job)])
    # the FGD paper's policies read shares as milli-GPU: percentages, the same on every model
    ref = None if info(policy).fgd_model else openb_ref_memory(inv)
    return RunSpec(inv, items, policy, tune_ratio, ref, time_budget_ms,
                   (("inventory", inv.source), ("scale", scale), ("variant", "inventory")))
