"""Per-GPU usage (for binpack/spread and the node's mean usage), per-mille of one GPU.

Fragmentation (the packing value the workload loses) lives in :mod:`.objective.fragmentation`.
"""

from __future__ import annotations

from collections.abc import Mapping

PERMILLE = 1000


def mig_usage(pm: Mapping[str, int], held: Mapping[str, int]) -> int:
    return min(PERMILLE, sum(pm[p] * n for p, n in held.items()))


def share_usage(memory_mib: int, used_mib: int) -> int:
    return min(PERMILLE, used_mib * PERMILLE // memory_mib) if memory_mib > 0 else PERMILLE
