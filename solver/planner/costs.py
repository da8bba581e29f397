"""Per-GPU cost terms: usage (for binpack/spread) and fragmentation (expected loss over a typical workload).

Fragmentation follows FGD (Weng et al., ATC'23) adapted to MIG. For one GPU and one typical
demand ``d`` (per-mille of the GPU's memory), the *fragment* is the free capacity the demand
cannot use:

* idle MIG GPU (no held instance): it can still be re-partitioned, so nothing is lost when some
  allowed layout (template, or any layout) has an instance of at least ``d``; otherwise all of it is;
* busy MIG GPU: its layout is frozen. If a free instance of at least ``d`` exists, the fragment is
  the free instances smaller than ``d`` plus the slices no instance covers (stranded until the GPU
  is idle again); if none exists, all free capacity is lost to ``d``;
* hami-core GPU: all its free memory if ``d`` does not fit (memory, split count, exclusivity,
  cores), else nothing.

The GPU's fragmentation is ``Σ_d weight_d · fragment_d`` in per-mille of one GPU (an integer).
The planner minimises the sum of its change over the GPUs a plan touches: this keeps the most
future capacity usable by the workload it expects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

PERMILLE = 1000


def mig_usage(pm: Mapping[str, int], held: Mapping[str, int]) -> int:
    return min(PERMILLE, sum(pm[p] * n for p, n in held.items()))


def mig_frag(
    pm: Mapping[str, int],
    layout: Mapping[str, int],
    held: Mapping[str, int],
    reconfig_servable: Iterable[int],
    workload: Iterable[tuple[int, int]],
) -> int:
    """Fragmentation of a MIG GPU with ``layout`` (profile -> count) of which ``held`` are in use.

    ``reconfig_servable``: the demands some layout the GPU may be re-partitioned to serves.
    """
    total = 0
    if not any(held.values()):
        can = set(reconfig_servable)
        biggest = max((pm[p] for p, n in layout.items() if n), default=0)
        for d, w in workload:
            if d not in can and biggest < d:
                total += w * PERMILLE
        return total
    used = sum(pm[p] * n for p, n in layout.items())
    held_pm = sum(pm[p] * n for p, n in held.items())
    free_pm = PERMILLE - held_pm
    stranded = max(0, PERMILLE - used)
    free = {p: layout.get(p, 0) - held.get(p, 0) for p in layout}
    for d, w in workload:
        if any(n > 0 and pm[p] >= d for p, n in free.items()):
            total += w * (stranded + sum(pm[p] * n for p, n in free.items() if n > 0 and pm[p] < d))
        else:
            total += w * free_pm
    return total


def share_usage(memory_mib: int, used_mib: int) -> int:
    return min(PERMILLE, used_mib * PERMILLE // memory_mib) if memory_mib > 0 else PERMILLE


def share_frag(
    memory_mib: int,
    used_mib: int,
    shares: int,
    split: int,
    used_cores: int,
    exclusive: bool,
    workload: Iterable[tuple[int, int]],
) -> int:
    """Fragmentation of a hami-core GPU."""
    if memory_mib <= 0:
        return 0
    free = max(0, memory_mib - used_mib)
    free_pm = free * PERMILLE // memory_mib
    blocked = exclusive or shares >= split or used_cores >= 100
    total = 0
    for d, w in workload:
        need = -(-d * memory_mib // PERMILLE)
        if blocked or free < need:
            total += w * free_pm
    return total
