"""The one policy registry: every name means one algorithm, everywhere (CLI, simulator, docs).

Two kinds of state a policy can run on:

* ``cluster`` — :class:`models.ClusterState` (MIG layouts, hami-core shares, host CPU and memory);
  the policy answers a :class:`models.plan.Plan` that :func:`models.validate.validate` accepts.
  ``dynamig`` is :func:`solver.plan` with the configured objective; ``hami-legacy``,
  ``hami-v210`` and ``bestfit`` are the planner-side baselines (``solver.baselines``, through
  ``solver.plan``); ``dra-firstfit`` is NVIDIA's DRA DynamicMIG (:mod:`.dra`). These run on every
  protocol (``fgd`` and ``churn``) on an inventory, on the MIG variant of the openb node list, and
  on the node list's own GPUs as hami-core nodes (:func:`solver.whatif.specs.nodes_spec`).
* ``milli`` — the FGD paper's milli-GPU node model (:mod:`solver.fgd`), for the reproduction of the
  published numbers on the openb node list: ``random``, ``dotprod``, ``clustering``, ``packing``,
  ``fgd-bestfit`` (the paper's BestFit node score; not the planner-side ``bestfit``), ``fgd``, and
  the research policy ``share-pricing`` (cutting-stock share prices, :mod:`solver.fgd.dynamig_policy`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from models.plan import Plan
from models.requests import PodRequest
from models.types import ClusterState
from solver.planner import PlannerConfig, plan

from . import dra

__all__ = ["CLUSTER_POLICIES", "MILLI_POLICIES", "POLICIES", "Placer", "PolicyInfo", "info", "names", "placer"]


@dataclass(frozen=True)
class PolicyInfo:
    name: str
    state: str  # "cluster" | "milli"
    summary: str
    keeps_held: bool = False  # may change a busy GPU's layout, leaving held instances untouched
    research: bool = False


POLICIES: tuple[PolicyInfo, ...] = (
    PolicyInfo("dynamig", "cluster", "solver.plan: the CP-SAT / exact per-node planner, configured objective"),
    PolicyInfo("hami-legacy", "cluster", "HAMi <= v2.9 dynamic MIG: first-match templates, idle GPUs re-cut"),
    PolicyInfo("hami-v210", "cluster", "HAMi v2.10: smallest-fit profile at a free placement, per instance",
               keeps_held=True),
    PolicyInfo("dra-firstfit", "cluster", "NVIDIA DRA DynamicMIG: first published (profile, placement), no scoring",
               keeps_held=True),
    PolicyInfo("bestfit", "cluster", "least memory waste per unit (instance or share), then fewest re-cuts"),
    PolicyInfo("random", "milli", "FGD paper: a uniformly random feasible node"),
    PolicyInfo("dotprod", "milli", "FGD paper: dot product of free and requested resources"),
    PolicyInfo("clustering", "milli", "FGD paper: GpuClustering (same-class pods together)"),
    PolicyInfo("packing", "milli", "FGD paper: GpuPacking"),
    PolicyInfo("fgd-bestfit", "milli", "FGD paper: BestFit node score (least CPU and GPU left)"),
    PolicyInfo("fgd", "milli", "FGD paper: fragmentation gradient descent"),
    PolicyInfo("share-pricing", "milli", "research: cutting-stock share prices plus CPU/memory stranding",
               research=True),
)
_BY_NAME = {p.name: p for p in POLICIES}
CLUSTER_POLICIES: tuple[str, ...] = tuple(p.name for p in POLICIES if p.state == "cluster")
MILLI_POLICIES: tuple[str, ...] = tuple(p.name for p in POLICIES if p.state == "milli")

#: One placement decision: ``(state, pod, candidate nodes or None) -> Plan``.
Placer = Callable[[ClusterState, PodRequest, Sequence[str] | None], Plan]


def names(state: str | None = None) -> tuple[str, ...]:
    return tuple(p.name for p in POLICIES if state is None or p.state == state)


def info(name: str) -> PolicyInfo:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r} (known: {', '.join(names())})") from None


def placer(name: str, config: PlannerConfig = PlannerConfig()) -> Placer:
    """The decision function of a ``cluster`` policy; ``config`` gives templates, layouts, budget
    and (for ``dynamig``) the objective. Raises ``ValueError`` for a ``milli`` or unknown name."""
    p = info(name)
    if p.state != "cluster":
        raise ValueError(f"policy {name!r} runs on the FGD milli-GPU node model (--nodes), not on a cluster state")
    if name == dra.NAME:
        cfg = config

        def run_dra(state: ClusterState, pod: PodRequest, nodes: Sequence[str] | None) -> Plan:
            return dra.plan_dra(state, pod, cfg, nodes)

        return run_dra
    cfg = replace(config, policy=name)

    def run_plan(state: ClusterState, pod: PodRequest, nodes: Sequence[str] | None) -> Plan:
        return plan(state, pod, cfg, nodes=nodes)

    return run_plan
