"""Reproduction of the FGD paper's evaluation protocol on the Alibaba "openb" trace.

See ``shared/data/openb/README.md`` §7 for the protocol and ``docs/fgd_reproduction.md`` for
results. Public API:

* :func:`run` ``(trace_csv, nodes_csv, policy, seed) -> RunResult`` — one run;
* :func:`simulate` ``(trace_csv, nodes_csv, policy, seeds, processes) -> dict`` — many seeds in
  parallel processes, aggregated into the JSON document of DESIGN §8;
* :class:`Policy` / :func:`register_policy` — the plug-in interface; the six built-in policies are
  ``random``, ``dotprod``, ``clustering``, ``packing``, ``fgd-bestfit`` (the paper's BestFit) and ``fgd``;
  the research policy ``share-pricing`` (:class:`SharePricingPolicy`) is registered too.

The one simulator runs these same policies (their scoring, this package's code) on
``models.ClusterState`` (:mod:`solver.policies.fgd_model`, ``dynamig simulate --protocol fgd
--nodes …``); this package's own loop and node model stay as the cross-check that it makes the same
decisions (``tests/test_fgd_one_simulator.py``) and as the derived view's array layout.

Equal node scores go, by default, to the first node in the seeded node order, as in the FGD
artifact (its kube-scheduler fork picks the smallest node name; README §7.3 inferred uniform
sampling, available as ``tie_break="random"``).
"""

from solver.fgd.baselines import (
    BestFitPolicy,
    ClusteringPolicy,
    DotProdPolicy,
    PackingPolicy,
    RandomPolicy,
)
from solver.fgd.cluster import ClusterState, PlacementError, SimNode
from solver.fgd.dynamig_policy import SharePricingPolicy as SharePricingPolicy
from solver.fgd.fgdscore import FGDPolicy
from solver.fgd.frag import FragModel, FragTracker, classify, fragment
from solver.fgd.metrics import Buckets, StepLog, bucketize
from solver.fgd.policy import (
    TIE_BREAKS,
    Placement,
    Policy,
    PolicyFactory,
    make_policy,
    pick_best,
    policy_names,
    register_policy,
)
from solver.fgd.runner import DEFAULT_TUNE_RATIO, RunResult, aggregate, run, run_loaded, simulate
from solver.fgd.workload import SimPod, TypicalPods, shuffle_and_tune, typical_pods

BASELINE_POLICIES = ("random", "dotprod", "clustering", "packing", "fgd-bestfit", "fgd")

__all__ = [
    "BASELINE_POLICIES",
    "DEFAULT_TUNE_RATIO",
    "TIE_BREAKS",
    "BestFitPolicy",
    "Buckets",
    "ClusterState",
    "ClusteringPolicy",
    "DotProdPolicy",
    "FGDPolicy",
    "FragModel",
    "FragTracker",
    "PackingPolicy",
    "Placement",
    "PlacementError",
    "Policy",
    "PolicyFactory",
    "RandomPolicy",
    "RunResult",
    "SharePricingPolicy",
    "SimNode",
    "SimPod",
    "StepLog",
    "TypicalPods",
    "aggregate",
    "bucketize",
    "classify",
    "fragment",
    "make_policy",
    "pick_best",
    "policy_names",
    "register_policy",
    "run",
    "run_loaded",
    "shuffle_and_tune",
    "simulate",
    "typical_pods",
]
