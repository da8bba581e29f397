"""The objective levels, one module each (DESIGN §4). Each module owns its level: the exact cost the
per-node DP adds up and the coefficients of the CP-SAT expression of the batch model (the same
numbers, by construction and by test: ``tests/test_objective_*.py``).

* :mod:`.placed` — placed pods (priority-weighted in batch mode);
* :mod:`.reconfigurations` — GPUs re-cut;
* :mod:`.template_order` — HAMi's first-match template rank;
* :mod:`.fragmentation` — packing value lost for the expected workload (cutting-stock prices,
  :mod:`.pricing`), host CPU/memory stranding and the CPU-pressure term;
* :mod:`.policy` — binpack/spread at node and GPU level;
* :mod:`.waste` — instance memory beyond the request.
"""

from . import fragmentation, placed, policy, reconfigurations, template_order, waste

LEVELS = {m.NAME: m for m in (placed, reconfigurations, template_order, fragmentation, policy, waste)}

__all__ = ["LEVELS", "fragmentation", "placed", "policy", "reconfigurations", "template_order", "waste"]
