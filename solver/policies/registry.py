"""The one policy registry: every name means one algorithm, everywhere (CLI, simulator, docs).

Every policy runs on the one simulator's state, :class:`models.ClusterState` (MIG layouts,
hami-core shares, host CPU and memory), and answers a :class:`models.plan.Plan` that
:func:`models.validate.validate` accepts. Two families:

* planner-side (``fgd_model`` false): ``dynamig`` is :func:`solver.plan` with the configured
  objective; ``hami-legacy``, ``hami-v210`` and ``bestfit`` are the planner-side baselines
  (``solver.baselines``, through ``solver.plan``); ``dra-firstfit`` is NVIDIA's DRA DynamicMIG
  (:mod:`.dra`). They run on every protocol (``fgd`` and ``churn``) on an inventory, on the MIG
  variant of the openb node list, and on the node list's own GPUs as hami-core nodes
  (:func:`solver.whatif.specs.nodes_spec`); CPU-only pods go to kube-scheduler's LeastAllocated.
* the FGD paper's policies (``fgd_model`` true, :mod:`.fgd_model`): ``random``, ``dotprod``,
  ``clustering``, ``packing``, ``fgd-bestfit`` (the paper's BestFit node score; not the
  planner-side ``bestfit``), ``fgd``, and the research policy ``share-pricing`` (cutting-stock
  share prices, :mod:`solver.fgd.dynamig_policy`). Their score math is :mod:`solver.fgd`'s; they
  see the same state through a derived milli-GPU view, so they need hami-core GPUs, the trace's
  typical pods and the run's RNG (:class:`.fgd_model.PolicyContext`), and they place CPU-only pods
  too (as in the paper). They run the ``fgd`` protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from models.plan import Plan
from models.requests import PodRequest
from models.types import ClusterState
from solver.planner import PlannerConfig, plan

from . import dra
from .fgd_model import MilliPlacer, PolicyContext

__all__ = ["CLUSTER_POLICIES", "FGD_POLICIES", "MILLI_POLICIES", "POLICIES", "Placer", "PolicyContext", "PolicyInfo",
           "info", "names", "placer"]


@dataclass(frozen=True)
class PolicyInfo:
    name: str
    summary: str
    fgd_model: bool = False  # the FGD paper's milli-GPU model: hami-core only, needs a PolicyContext
    keeps_held: bool = False  # may change a busy GPU's layout, leaving held instances untouched
    research: bool = False

    @property
    def places_cpu_pods(self) -> bool:
        """The policy places CPU-only pods itself (else: kube-scheduler's LeastAllocated)."""
        return self.fgd_model


POLICIES: tuple[PolicyInfo, ...] = (
    PolicyInfo("dynamig", "solver.plan: the CP-SAT / exact per-node planner, configured objective"),
    PolicyInfo("hami-legacy", "HAMi <= v2.9 dynamic MIG: first-match templates, idle GPUs re-cut"),
    PolicyInfo("hami-v210", "HAMi v2.10: smallest-fit profile at a free placement, per instance",
               keeps_held=True),
    PolicyInfo("dra-firstfit", "NVIDIA DRA DynamicMIG: first published (profile, placement), no scoring",
               keeps_held=True),
    PolicyInfo("bestfit", "least memory waste per unit (instance or share), then fewest re-cuts"),
    PolicyInfo("random", "FGD paper: a uniformly random feasible node", fgd_model=True),
    PolicyInfo("dotprod", "FGD paper: dot product of free and requested resources", fgd_model=True),
    PolicyInfo("clustering", "FGD paper: GpuClustering (same-class pods together)", fgd_model=True),
    PolicyInfo("packing", "FGD paper: GpuPacking", fgd_model=True),
    PolicyInfo("fgd-bestfit", "FGD paper: BestFit node score (least CPU and GPU left)", fgd_model=True),
    PolicyInfo("fgd", "FGD paper: fragmentation gradient descent", fgd_model=True),
    PolicyInfo("share-pricing", "research: cutting-stock share prices plus CPU/memory stranding", fgd_model=True,
               research=True),
)
_BY_NAME = {p.name: p for p in POLICIES}
#: The planner-side policies: every cluster (MIG, hami-core, mixed) and every protocol.
CLUSTER_POLICIES: tuple[str, ...] = tuple(p.name for p in POLICIES if not p.fgd_model)
#: The FGD paper's policies (and share-pricing): hami-core clusters, the fgd protocol.
FGD_POLICIES: tuple[str, ...] = tuple(p.name for p in POLICIES if p.fgd_model)
#: The same names under their earlier label (the milli-GPU model), for existing callers.
MILLI_POLICIES: tuple[str, ...] = FGD_POLICIES

#: One placement decision: ``(state, pod, candidate nodes or None) -> Plan``.
Placer = Callable[[ClusterState, PodRequest, Sequence[str] | None], Plan]


def names(fgd_model: bool | None = None) -> tuple[str, ...]:
    return tuple(p.name for p in POLICIES if fgd_model is None or p.fgd_model == fgd_model)


def info(name: str) -> PolicyInfo:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r} (known: {', '.join(names())})") from None


def placer(name: str, config: PlannerConfig = PlannerConfig(), context: PolicyContext | None = None) -> Placer:
    """The decision function of policy ``name``; ``config`` gives templates, layouts, budget and
    (for ``dynamig``) the objective. An FGD-model policy needs ``context`` (the trace's typical
    pods and the run's RNG) and is built for one run. Raises ``ValueError`` for an unknown name or
    an FGD-model policy without a context."""
    p = info(name)
    if p.fgd_model:
        if context is None:
            raise ValueError(f"policy {name!r} (the FGD paper's milli-GPU model) needs the trace's typical pods and "
                             "the run's RNG: it runs the fgd protocol (dynamig simulate --protocol fgd)")
        return MilliPlacer(name, context)
    if name == dra.NAME:
        cfg = config

        def run_dra(state: ClusterState, pod: PodRequest, nodes: Sequence[str] | None) -> Plan:
            return dra.plan_dra(state, pod, cfg, nodes)

        return run_dra
    cfg = replace(config, policy=name)

    def run_plan(state: ClusterState, pod: PodRequest, nodes: Sequence[str] | None) -> Plan:
        return plan(state, pod, cfg, nodes=nodes)

    return run_plan
