"""The simulator: one cluster state (:class:`models.ClusterState`, host CPU and memory included),
one policy registry (:mod:`solver.policies`), protocols:

* ``churn`` (:mod:`.churn`) — a live cluster: Poisson arrivals at an offered load, durations,
  departures, a FIFO queue retried when capacity frees, a re-cut delay per layout change;
* ``fgd`` — the FGD paper's protocol (arrivals only, no retries), run by :mod:`solver.whatif` on
  the same :class:`models.ClusterState` for every policy: on an inventory, the MIG variant of the
  openb node list, or the node list's own GPUs as hami-core nodes. The paper's policies read a
  milli-GPU view derived from that state (:mod:`solver.policies.fgd_model`) and make the same
  decisions as :mod:`solver.fgd`'s own loop, which stays as the cross-check
  (docs/fgd_reproduction.md). They do not run ``churn`` yet (they need the trace's typical pods
  and the run's random stream, which :mod:`.churn` does not hand them; it says so).

:mod:`.sweep` runs policies × loads × seeds as Ray tasks.
"""

from .churn import ChurnSpec, arrival_rate, run_churn
from .fluid import fluid_limit, held_compute

PROTOCOLS: tuple[str, ...] = ("fgd", "churn")

__all__ = ["PROTOCOLS", "ChurnSpec", "arrival_rate", "fluid_limit", "held_compute", "run_churn"]
