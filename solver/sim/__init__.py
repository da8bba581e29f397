"""The simulator: one cluster state (:class:`models.ClusterState`, host CPU and memory included),
one policy registry (:mod:`solver.policies`), protocols:

* ``churn`` (:mod:`.churn`) — a live cluster: Poisson arrivals at an offered load, durations,
  departures, a FIFO queue retried when capacity frees, a re-cut delay per layout change;
* ``fgd`` — the FGD paper's protocol (arrivals only, no retries): on an inventory through
  :mod:`solver.whatif` (cluster-state policies), on the openb node list through :mod:`solver.fgd`
  (the paper's milli-GPU node model, for the published numbers).

:mod:`.sweep` runs policies × loads × seeds as Ray tasks.
"""

from .churn import ChurnSpec, arrival_rate, run_churn
from .fluid import fluid_limit, held_compute

PROTOCOLS: tuple[str, ...] = ("fgd", "churn")

__all__ = ["PROTOCOLS", "ChurnSpec", "arrival_rate", "fluid_limit", "held_compute", "run_churn"]
