"""Capacity what-if: the fewest nodes of one kind that keep unplaced pods at or under a target.

A workload (a fixed list of pods) is replayed, shuffled per seed and **not** tuned, on ``count``
identical nodes of a kind; the unplaced share is the failed pods over all pods (CPU-only pods
included), the worst over the seeds. The search grows ``count`` from the GPU lower bound (total
demand over the node's GPUs) by doubling until the target holds, then bisects; it assumes that
more nodes never place fewer pods (true of every policy here up to tie-breaking).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from models.config import BUILTIN_DEVICE_CONFIG, Inventory, InventoryNode
from models.types import NodeMode
from solver.fgd.workload import SimPod
from solver.openb import MILLI_PER_GPU, OpenbPod

from .runner import WhatifResult, run_once
from .specs import inventory_spec, mig_spec
from .workload import Job

__all__ = ["CapacityPoint", "CapacityResult", "NodeKind", "min_nodes", "uniform_nodes"]


@dataclass(frozen=True)
class NodeKind:
    """One kind of node: ``gpus`` GPUs of ``model`` in ``mode``, with host CPU and memory."""

    label: str
    mode: NodeMode
    model: str
    gpus: int = 8
    cpu_milli: int = 96_000
    memory_mib: int = 393_216
    split: int = 10


def uniform_nodes(kind: NodeKind, count: int) -> tuple[InventoryNode, ...]:
    return tuple(InventoryNode(f"{kind.label}-{i:04d}", kind.mode, ((kind.model, kind.gpus),), kind.cpu_milli,
                               kind.memory_mib, kind.split) for i in range(count))


@dataclass(frozen=True)
class CapacityPoint:
    nodes: int
    unplaced_pct: float  # worst over seeds
    unallocated_gpu_pct: float  # mean over seeds, after the whole workload
    reconfigurations: float  # mean over seeds


@dataclass
class CapacityResult:
    kind: NodeKind
    policy: str
    target_pct: float
    nodes: int | None  # the fewest nodes meeting the target (None: not found up to the limit)
    points: list[CapacityPoint] = field(default_factory=list)

    def curve(self) -> tuple[list[int], list[float]]:
        pts = sorted(self.points, key=lambda p: p.nodes)
        return [p.nodes for p in pts], [p.unplaced_pct for p in pts]


def _final_unallocated(r: WhatifResult) -> float:
    cap = r.total_gpus * MILLI_PER_GPU
    assert r.log is not None
    used = float(r.log.used_compute[-1]) if r.log.used_compute.size else 0.0
    return round(100.0 * (1 - used / cap), 2)


def evaluate_count(kind: NodeKind, count: int, pods: Sequence[OpenbPod | SimPod] | Sequence[Job], policy: str,
                   seeds: Sequence[int] = (0,), layouts_any: bool = False) -> CapacityPoint:
    """Replay ``pods`` (untuned) on ``count`` nodes of ``kind``."""
    inv = Inventory(uniform_nodes(kind, count), BUILTIN_DEVICE_CONFIG, layouts_any, kind.label)
    is_jobs = bool(pods) and isinstance(pods[0], Job)
    if kind.mode is NodeMode.MIG and not is_jobs:
        from solver.openb import OpenbNode

        onodes = [OpenbNode(n.name, n.cpu_milli or 0, n.memory_mib or 0, kind.gpus, kind.model) for n in inv.nodes]
        sims = [p for p in pods if not isinstance(p, Job)]
        spec = mig_spec(onodes, sims, kind.model, policy, layouts_any=layouts_any, tune_ratio=0.0)
    else:
        spec = inventory_spec(inv, pods, policy, tune_ratio=0.0)
    results = [run_once(spec, s, keep_log=True) for s in seeds]
    unplaced = max(100.0 * r.failed / max(r.pods, 1) for r in results)
    unallocated = sum(_final_unallocated(r) for r in results) / len(results)
    return CapacityPoint(count, round(unplaced, 3), round(unallocated, 2),
                         sum(r.layout_changes for r in results) / len(results))


def _demand(pods: Sequence[OpenbPod | SimPod] | Sequence[Job]) -> int:
    total = 0
    for p in pods:
        if isinstance(p, Job):
            total += p.demand
        else:
            total += (p if isinstance(p, SimPod) else SimPod.from_openb(p)).demand
    return total


def min_nodes(kind: NodeKind, pods: Sequence[OpenbPod | SimPod] | Sequence[Job], policy: str = "dynamig", *,
              target_pct: float = 1.0, seeds: Sequence[int] = (0,), layouts_any: bool = False, limit: int = 4096,
              on_point: Callable[[CapacityPoint], None] | None = None) -> CapacityResult:
    """The fewest nodes of ``kind`` with at most ``target_pct`` % unplaced pods (see module doc)."""
    out = CapacityResult(kind, policy, target_pct, None)
    seen: dict[int, CapacityPoint] = {}

    def ok(count: int) -> bool:
        if count not in seen:
            pt = evaluate_count(kind, count, pods, policy, seeds, layouts_any)
            seen[count] = pt
            out.points.append(pt)
            if on_point:
                on_point(pt)
        return seen[count].unplaced_pct <= target_pct

    lo = max(1, math.ceil(_demand(pods) / (kind.gpus * MILLI_PER_GPU)))  # fewer nodes cannot hold the demand
    if ok(lo):
        hi = lo
        lo = 0
    else:
        step = max(1, lo // 8)
        hi = lo + step
        while not ok(hi):
            lo = hi
            step *= 2
            hi = lo + step
            if hi > limit:
                return out
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    out.nodes = hi
    return out
