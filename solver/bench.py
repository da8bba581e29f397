"""Planner latency benchmark: a mixed, half-full cluster built deterministically, single-pod
queries (each placed pod is applied, and pods are released now and then, as in a live cluster), and
optionally one batch of pending pods.

Cluster: nodes cycle through A100-SXM4-40GB, A100-SXM4-80GB, H100-80GB and H200; one node in four is
hami-core, the rest MIG. MIG GPUs are empty (never partitioned), idle with a template layout, or busy
with a template layout and some instances held; hami-core GPUs carry a few shares. About half of
the capacity is in use.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from models.catalog import model
from models.config import builtin_device_config
from models.plan import Plan, apply_plan, release_pod
from models.requests import PodRequest, parse_pod
from models.types import ClusterState, Gpu, MigInstance, Node, NodeMode, ShareUsage, gpu_uuid

from .planner import PlannerConfig, plan

MODELS = ("A100-SXM4-40GB", "A100-SXM4-80GB", "H100-80GB", "H200")
MEMORY_MENU = (2000, 4000, 8000, 10000, 16000, 20000, 30000, 40000, 60000)


def build_cluster(nodes: int, gpus_per_node: int, seed: int = 0) -> ClusterState:
    rng = random.Random(seed)
    tpl = builtin_device_config()
    out = []
    for i in range(nodes):
        name = f"node-{i:04d}"
        m = model(MODELS[i % len(MODELS)])
        mode = NodeMode.HAMI_CORE if i % 4 == 3 else NodeMode.MIG
        gpus = []
        for j in range(gpus_per_node):
            g = Gpu(gpu_uuid(name, j), j, m.name, mode, m.memory_mib)
            if mode is NodeMode.MIG:
                r = rng.random()
                if r >= 0.25:
                    lay = rng.choice(tpl.template_layouts(m)).layout
                    held = set()
                    if r >= 0.4:
                        k = rng.randint(1, len(lay))
                        held = set(rng.sample(range(len(lay)), k))
                    g = replace(g, instances=tuple(
                        MigInstance(s, f"bench/fill-{name}-{j}/0/{x}" if x in held else None)
                        for x, s in enumerate(lay)))
            else:
                shares = []
                used = 0
                for x in range(rng.randint(0, 4)):
                    mem = rng.choice((4000, 8000, 10000, 16000))
                    if used + mem > g.memory_mib:
                        break
                    used += mem
                    shares.append(ShareUsage(f"bench/fill-{name}-{j}/0/{x}", mem, rng.choice((0, 10, 20))))
                g = replace(g, shares=tuple(shares))
            gpus.append(g)
        out.append(Node(name, mode, tuple(gpus)))
    return ClusterState(tuple(out))


def random_pod(rng: random.Random, name: str) -> PodRequest:
    r = rng.random()
    count = 1 if r < 0.8 else 2 if r < 0.92 else 4 if r < 0.98 else 8
    limits: dict[str, Any] = {"nvidia.com/gpu": count}
    k = rng.random()
    if k < 0.85:
        limits["nvidia.com/gpumem"] = rng.choice(MEMORY_MENU)
    elif k < 0.97:
        limits["nvidia.com/gpumem-percentage"] = rng.choice((10, 25, 50))
    if rng.random() < 0.1 and "nvidia.com/gpumem" in limits:
        limits["nvidia.com/gpucores"] = rng.choice((10, 30))
    ann: dict[str, str] = {}
    m = rng.random()
    if m < 0.3:
        ann["nvidia.com/vgpu-mode"] = "mig"
    elif m < 0.4:
        ann["nvidia.com/vgpu-mode"] = "hami-core"
    if rng.random() < 0.2:
        ann["hami.io/node-scheduler-policy"] = "spread"
    if rng.random() < 0.3:
        ann["hami.io/gpu-scheduler-policy"] = "binpack"
    manifest = {"metadata": {"name": name, "namespace": "bench", "annotations": ann},
                "spec": {"priority": rng.choice((0, 0, 0, 100)),
                         "containers": [{"name": "main", "resources": {"limits": limits}}]}}
    return parse_pod(manifest)


def percentile(xs: Sequence[float], q: float) -> float:
    if not xs:
        return 0.0
    s = sorted(xs)
    idx = min(len(s) - 1, max(0, math.ceil(q / 100.0 * len(s)) - 1))
    return s[idx]


@dataclass
class BenchResult:
    nodes: int
    gpus: int
    queries: int
    latencies_ms: list[float] = field(default_factory=list)
    placed: int = 0
    batch: int = 0
    batch_ms: float = 0.0
    batch_placed: int = 0
    batch_status: str = ""
    batch_stages: list[dict[str, Any]] = field(default_factory=list)
    policy: str = "dynamig"
    build_ms: float = 0.0

    def summary(self) -> dict[str, Any]:
        lat = self.latencies_ms
        out: dict[str, Any] = {
            "nodes": self.nodes, "gpus": self.gpus, "queries": self.queries, "policy": self.policy,
            "p50_ms": round(statistics.median(lat), 3) if lat else 0.0,
            "p99_ms": round(percentile(lat, 99), 3), "max_ms": round(max(lat), 3) if lat else 0.0,
            "first_ms": round(lat[0], 3) if lat else 0.0, "mean_ms": round(statistics.fmean(lat), 3) if lat else 0.0,
            "placed": self.placed, "build_ms": round(self.build_ms, 1),
        }
        if self.batch:
            out.update({"batch": self.batch, "batch_ms": round(self.batch_ms, 1), "batch_placed": self.batch_placed,
                        "batch_status": self.batch_status, "batch_stages": self.batch_stages})
        return out


def run(nodes: int = 100, gpus_per_node: int = 8, queries: int = 200, batch: int = 0, seed: int = 0,
        config: PlannerConfig | None = None, batch_budget_ms: float = 1800.0) -> BenchResult:
    config = config or PlannerConfig()
    t = time.perf_counter()
    state = build_cluster(nodes, gpus_per_node, seed)
    res = BenchResult(nodes, nodes * gpus_per_node, queries, policy=config.policy)
    res.build_ms = (time.perf_counter() - t) * 1000
    rng = random.Random(seed + 1)
    live: list[str] = []
    for i in range(queries):
        pod = random_pod(rng, f"q{i}")
        t = time.perf_counter()
        p: Plan = plan(state, pod, config)
        res.latencies_ms.append((time.perf_counter() - t) * 1000)
        if p.placed:
            res.placed += 1
            state = apply_plan(state, p)
            live.append(pod.key)
        if live and rng.random() < 0.5:
            state = release_pod(state, live.pop(rng.randrange(len(live))))
    if batch > 0:
        import solver.planner.batch  # noqa: F401  (OR-Tools' one-time import is not the planner's time)

        pods = [random_pod(rng, f"b{i}") for i in range(batch)]
        cfg = replace(config, time_budget_ms=batch_budget_ms)
        t = time.perf_counter()
        p = plan(state, pods[0], cfg, pending=pods[1:])
        res.batch_ms = (time.perf_counter() - t) * 1000
        res.batch = batch
        res.batch_placed = sum(1 for x in p.placements if x.placed)
        res.batch_status = p.status
        res.batch_stages = [{"name": s.name, "value": s.value, "bound": s.bound, "status": s.status,
                             "wall_ms": round(s.wall_ms, 1)} for s in p.stages]
    return res
