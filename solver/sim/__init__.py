"""The simulator: one cluster state (:class:`models.ClusterState`, host CPU and memory included),
one policy registry (:mod:`solver.policies`), protocols:

* ``churn`` (:mod:`.churn`) — a live cluster: Poisson arrivals at an offered load, durations,
  departures, a FIFO queue retried when capacity frees, a re-cut delay per layout change;
* ``fgd`` — the FGD paper's protocol (arrivals only, no retries). Cluster-state policies run it
  through :mod:`solver.whatif` on :class:`models.ClusterState` (host CPU and memory included): on
  an inventory, the MIG variant of the openb node list, or the node list's own GPUs as hami-core
  nodes (``--nodes`` with a cluster policy). The paper's policies still run it on
  :mod:`solver.fgd`'s own loop and milli-GPU node model (for the published numbers); porting
  them onto the one state is open (see docs/fgd_dynamig.md).

:mod:`.sweep` runs policies × loads × seeds as Ray tasks.
"""

from .churn import ChurnSpec, arrival_rate, run_churn
from .fluid import fluid_limit, held_compute

PROTOCOLS: tuple[str, ...] = ("fgd", "churn")

__all__ = ["PROTOCOLS", "ChurnSpec", "arrival_rate", "fluid_limit", "held_compute", "run_churn"]
