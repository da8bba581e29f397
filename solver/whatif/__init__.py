"""What-if simulation (DESIGN §7): the openb workloads under the FGD protocol on a MIG, hami-core
or any inventory-defined cluster, every pod placed by a policy of the one registry
(:mod:`solver.policies`) on :class:`models.ClusterState` -- :func:`solver.plan` and the baselines,
and the FGD paper's policies (:mod:`solver.policies.fgd_model`) on hami-core GPUs.

Modules, one job each:

* :mod:`.mapping` — an openb pod (``gpu_milli`` share) as a HAMi request; the smallest MIG
  profile that serves it; the openb node list as a MIG inventory;
* :mod:`.workload` — :class:`Job` (one pod of a run), Pod-YAML loading, shuffle and tuning;
* :mod:`.cluster` — scaling a node list, the seeded node order, host CPU/memory accounting;
* :mod:`.metrics` — allocated GPU capacity (compute slices, memory), arrived-load buckets;
* :mod:`.runner` — one run, many seeds in parallel processes, the JSON document;
* :mod:`.capacity` — the smallest node count that keeps unplaced pods under a target;
"""

from solver.whatif.capacity import CapacityPoint, CapacityResult, NodeKind, min_nodes, uniform_nodes
from solver.whatif.cluster import Hosts, scale_nodes
from solver.whatif.mapping import (
    MIG_MODELS,
    mig_inventory_nodes,
    openb_request,
    serving_profiles,
    smallest_profile,
)
from solver.whatif.metrics import UNALLOCATED_DEFINITIONS, gpu_allocation
from solver.whatif.runner import RunSpec, WhatifResult, aggregate, run_once, simulate
from solver.whatif.specs import inventory_spec, mig_spec
from solver.whatif.workload import Job, jobs_from_openb, load_pod_yaml, shuffle_and_tune_jobs

__all__ = [
    "MIG_MODELS",
    "UNALLOCATED_DEFINITIONS",
    "CapacityPoint",
    "CapacityResult",
    "Hosts",
    "Job",
    "NodeKind",
    "RunSpec",
    "WhatifResult",
    "aggregate",
    "gpu_allocation",
    "inventory_spec",
    "jobs_from_openb",
    "load_pod_yaml",
    "mig_inventory_nodes",
    "mig_spec",
    "min_nodes",
    "openb_request",
    "run_once",
    "scale_nodes",
    "serving_profiles",
    "shuffle_and_tune_jobs",
    "simulate",
    "smallest_profile",
    "uniform_nodes",
]
