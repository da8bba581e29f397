"""A seeded workload: pods of mixed sizes arriving and departing over simulated time."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

#: (weight, limits, annotations) of the pod shapes the generator draws from.
SHAPES: tuple[tuple[int, dict[str, str], dict[str, str]], ...] = (
    (20, {"nvidia.com/gpumem": "4000"}, {}),
    (15, {"nvidia.com/gpumem": "9000"}, {}),
    (12, {"nvidia.com/gpumem": "18000"}, {}),
    (8, {"nvidia.com/gpumem": "30000"}, {}),
    (6, {"nvidia.com/gpumem": "60000"}, {}),
    (5, {"nvidia.com/gpu": "1"}, {"nvidia.com/vgpu-mode": "mig"}),  # a whole GPU as a 7g instance
    (8, {"nvidia.com/gpumem": "9000"}, {"nvidia.com/vgpu-mode": "mig"}),
    (8, {"nvidia.com/gpumem": "12000", "nvidia.com/gpucores": "30"}, {"nvidia.com/vgpu-mode": "hami-core"}),
    (5, {"nvidia.com/gpumem-percentage": "25"}, {"nvidia.com/vgpu-mode": "hami-core"}),
    (5, {"nvidia.com/gpu": "2", "nvidia.com/gpumem": "8000"}, {}),
    (3, {"nvidia.com/gpu": "2", "nvidia.com/gpumem": "15000"}, {"nvidia.com/vgpu-mode": "mig"}),
)

#: The burst: whole GPUs (a 7g MIG instance each), all at once while the first phase's pods still run,
#: so some must queue until GPUs empty and are re-cut (the queue the extender's lookahead plans).
BURST = ({"nvidia.com/gpu": "1"}, {"nvidia.com/vgpu-mode": "mig"})

#: Larger than any MIG instance or GPU in the built-in cluster: must stay pending with a reason.
TOO_LARGE = {"nvidia.com/gpumem": "200000"}


@dataclass(frozen=True)
class PodSpec:
    name: str
    arrival: float
    duration: float
    manifest: dict[str, Any]


def manifest(name: str, limits: dict[str, str], annotations: dict[str, str], namespace: str = "demo") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "annotations": dict(annotations), "labels": {"app": "demo"}},
        "spec": {
            "schedulerName": "dynamig-scheduler",
            "containers": [{"name": "main", "image": "nvcr.io/nvidia/cuda:12.4.1-base-ubuntu22.04",
                            "resources": {"limits": dict(limits)}}],
        },
        "status": {"phase": "Pending"},
    }


def generate(n: int, seed: int, too_large: bool = True, arrival_rate: float = 12.0,
             prefix: str = "job", burst: int | None = None) -> list[PodSpec]:
    """``n`` pods named ``{prefix}-NNNN`` (one of them too large for any GPU when ``too_large``) in
    arrival order. ``burst`` pods (default ``n // 6`` from 20 pods on) at the phase change ask for a
    whole GPU each and arrive together."""
    burst = (n // 6 if n >= 20 else 0) if burst is None else burst
    rng = random.Random(seed)
    weights = [w for w, _, _ in SHAPES]
    # The mix shifts over the run (many small inference pods first, then larger training pods), so
    # GPUs partitioned for the first phase must be freed and re-partitioned for the second.
    small = [w if int(lim.get("nvidia.com/gpumem", "0") or 0) in range(1, 10000) else 1 for w, lim, _ in SHAPES]
    large = [1 if int(lim.get("nvidia.com/gpumem", "0") or 0) in range(1, 10000) else w for w, lim, _ in SHAPES]
    out: list[PodSpec] = []
    t = 0.0
    for i in range(n):
        in_burst = n // 2 <= i < n // 2 + burst
        t += rng.expovariate(arrival_rate) * (0.01 if in_burst else 1.0)
        phase = small if i < n // 2 else large
        _, limits, ann = rng.choices(SHAPES, phase if n >= 20 else weights)[0]
        duration = rng.uniform(5.0, 60.0)
        if in_burst:
            limits, ann = BURST
        name = f"{prefix}-{i:04d}"
        out.append(PodSpec(name, t, duration, manifest(name, limits, ann)))
    if too_large and n > 0:
        k = min(3, n - 1)
        big = out[k]
        out[k] = PodSpec(big.name, big.arrival, big.duration, manifest(big.name, TOO_LARGE, {}))
    return out
