"""Level ``fragmentation``: the packing value a placement takes from the expected workload, plus the
host-resource terms, in per-mille of one GPU (lower is better).

Per GPU, ``F(g) = 1000 − value(g)`` where ``value`` is what its free capacity is worth to the
workload (:mod:`.pricing`): hami-core ``K(free)``; MIG with a layout that may still be re-cut (idle,
:func:`models.relayout.may_change_layout`) the best allowed layout's worth, otherwise ``Σ w(P)``
over its free instances (slices no instance covers are worth nothing until the GPU is idle).
Every unit placed is credited with its own worth (hami-core ``K(s)``, MIG ``π`` of its class), so
a pod's level value is the *loss* ``Σ ΔF − Σ credit``: for one share ``K(f) − K(s) − K(f − s)``.

Per node (when the workload has host ratios and the node's allocatable is known), the change of
the stranded GPU capacity ``max(0, G − C / r_cpu, G − M / r_mem)`` (``G`` free GPU per-mille, ``C``
free CPU, ``M`` free host memory, ``r`` the workload's CPU and memory per milli-GPU), plus, under
CPU pressure, its weight times the change of ``G · P(a GPU pod needs more CPU than C)``. In batch
mode this node term is counted per pod against the starting state (linear).

Exact per-node cost (DP): :func:`mig_pattern`, :func:`share_pattern`, :func:`unit`, :func:`node`.
CP-SAT: the same numbers are the coefficients of the pattern-count, unit and node-pod variables
(:func:`cpsat_terms` collects them); :func:`gpu_value` feeds :mod:`solver.planner.evaluate`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from models.catalog import GpuModel
from models.requests import ContainerRequest, mig_memory_total, mig_unit_memory
from models.types import Gpu, Node, NodeMode

from ..workload import MILLI, Workload, as_container, demand_size
from .pricing import instance_values, knapsack, mig_prices, share_prices

if TYPE_CHECKING:
    from ..context import ClassInfo, Context, ModelInfo

NAME = "fragmentation"
PERMILLE = MILLI
#: No unit loses less than this (each unit's packing loss is >= 0 up to rounding; the node term
#: falls by at most twice the unit's GPU demand): a lower bound of the level, per unit.
LOSS_BOUND_PER_UNIT = -3 * PERMILLE


# ---------------------------------------------------------------- hami-core values

@dataclass(frozen=True)
class ShareValues:
    """``K`` for one GPU memory size, as integers (per-mille of a GPU's worth)."""

    k: tuple[int, ...]  # index: free per-mille 0..1000

    def value(self, free_pm: int) -> int:
        return self.k[max(0, min(PERMILLE, free_pm))]


def share_values(workload: Workload, memory_mib: int) -> ShareValues:
    demand: dict[int, float] = {}
    for d, w in workload.mix:
        s = demand_size(d, memory_mib)
        if 0 < s <= PERMILLE:
            demand[s] = demand.get(s, 0.0) + w
    prices = share_prices(demand)
    k = knapsack(prices)
    k[PERMILLE] = max(k[PERMILLE], 1.0)  # a whole GPU is worth one GPU
    return ShareValues(tuple(round(v * PERMILLE) for v in k))


def share_free_pm(memory_mib: int, used_mib: int, shares: int, split: int, used_cores: int, exclusive: bool) -> int:
    """Free per-mille of a hami-core GPU that a new share can use (0 when it takes no more)."""
    if memory_mib <= 0 or exclusive or shares >= split or used_cores >= 100:
        return 0
    mem = max(0, memory_mib - used_mib) * PERMILLE // memory_mib
    return min(mem, (100 - used_cores) * 10)


def share_unit_size(c: ContainerRequest, memory_mib: int) -> int:
    return demand_size((c.memory_mib, c.memory_percent if c.memory_mib is None else None, c.cores), memory_mib)


# ---------------------------------------------------------------- MIG values

@dataclass(frozen=True)
class MigValues:
    """Per model: the worth of one free instance of each profile, of an idle GPU, and of each
    request class (smallest serving profile)."""

    instance: Mapping[str, int]
    idle: int
    price: Mapping[str, int]

    def free_value(self, layout: Mapping[str, int], held: Mapping[str, int]) -> int:
        return sum(self.instance.get(p, 0) * (n - held.get(p, 0)) for p, n in layout.items())


def request_class(m: GpuModel, c: ContainerRequest) -> str | None:
    """The smallest profile of ``m`` serving one unit of ``c`` (None: none does)."""
    need = mig_unit_memory(c, m)
    best = None
    for p in m.profiles:
        if p.memory_mib >= need and not (c.cores and m.core_percent(p) < c.cores):
            key = (p.memory_slices, p.compute_slices, p.media, p.name)
            if best is None or key < best[0]:
                best = (key, p.name)
    return None if best is None else best[1]


def mig_values(workload: Workload, mi: ModelInfo) -> MigValues:
    m = mi.gpu_model
    profs = {p.name: p for p in m.profiles}
    serves = {P: frozenset(q for q, Q in profs.items() if P_.memory_mib >= Q.memory_mib and
                           m.core_percent(P_) >= m.core_percent(Q) and (P_.media or not Q.media))
              for P, P_ in profs.items()}
    demand: dict[str, float] = {}
    for d, w in workload.mix:
        cls = request_class(m, as_container(d))
        if cls is not None:
            demand[cls] = demand.get(cls, 0.0) + w
    layouts = [dict(o.counts) for o in mi.options]
    if not layouts:
        full = m.full_profile
        layouts = [{full.name: 1}] if full else []
    prices = mig_prices(demand, layouts, serves) if layouts else {}
    inst = instance_values(prices, serves)
    # rounded down, so no layout's instances add up to more than one GPU (7 x 143 would)
    inst_i = {p: _per_mille(v) for p, v in inst.items()}
    idle = max((sum(inst_i[p] * n for p, n in lay.items()) for lay in layouts), default=0)
    return MigValues(inst_i, min(PERMILLE, idle), {c: _per_mille(v) for c, v in prices.items()})


def _per_mille(v: float) -> int:
    return math.floor(v * PERMILLE + 1e-6)


# ---------------------------------------------------------------- per-GPU state

def mig_frag(ctx: Context, mi: ModelInfo, layout: Mapping[str, int], held: Mapping[str, int], recut: bool) -> int:
    """``F`` of a MIG GPU with ``layout`` (profile -> count) of which ``held`` are held."""
    vals = ctx.mig_values(mi)
    v = min(vals.free_value(layout, held), vals.idle)  # never above an idle GPU's worth (rounding)
    if recut:
        v = vals.idle
    return PERMILLE - v


def share_frag(ctx: Context, memory_mib: int, used_mib: int, shares: int, split: int, used_cores: int,
               exclusive: bool) -> int:
    vals = ctx.share_values(memory_mib)
    return PERMILLE - vals.value(share_free_pm(memory_mib, used_mib, shares, split, used_cores, exclusive))


def gpu_value(ctx: Context, g: Gpu) -> int:
    """``F(g)`` of any GPU (what :mod:`solver.planner.evaluate` sums over touched GPUs)."""
    from ..context import gpu_class_key

    return ctx.class_info(gpu_class_key(g), g).frag


# ---------------------------------------------------------------- level coefficients

def mig_pattern(ctx: Context, info: ClassInfo, layout: Mapping[str, int], after: Mapping[str, int]) -> int:
    """ΔF of one GPU of the class taking ``layout`` (its own or a re-cut) with ``after`` held."""
    assert info.model_info is not None
    return ctx.mig_frag_after(info.model_info, layout, after) - info.frag


def share_pattern(ctx: Context, info: ClassInfo, extra: list[tuple[int, int]]) -> int:
    """ΔF of one hami-core GPU of the class taking the shares ``extra`` ((MiB, cores) each)."""
    g = info.gpu
    used = g.used_memory_mib + sum(m for m, _ in extra)
    cores = g.used_cores + sum(c for _, c in extra)
    excl = any(s.cores >= 100 for s in g.shares) or any(c >= 100 for _, c in extra)
    return share_frag(ctx, g.memory_mib, used, len(g.shares) + len(extra), g.split, cores, excl) - info.frag


def unit(ctx: Context, info: ClassInfo, c: ContainerRequest, profile: str | None = None) -> int:
    """Minus the worth of one unit of ``c`` on a GPU of the class (its credit)."""
    if info.kind == "share":
        s = share_unit_size(c, info.gpu.memory_mib)
        return -ctx.share_values(info.gpu.memory_mib).value(s) if s <= PERMILLE else 0
    if info.kind == "mig":
        mi = info.model_info
        assert mi is not None
        cls = request_class(mi.gpu_model, c)
        return -ctx.mig_values(mi).price.get(cls, 0) if cls is not None else 0
    return 0


def node_free_gpu(ctx: Context, node: Node) -> int:
    """``G``: the node's free GPU capacity in per-mille (idle MIG GPUs whole)."""
    total = 0
    for g in node.gpus:
        if g.mode is NodeMode.MIG:
            if not any(not i.free for i in g.instances):
                total += PERMILLE
            else:
                mi = ctx.model_info(g.model)
                if mi is not None and mi.pm:
                    total += sum(mi.pm.get(i.slot.profile, 0) for i in g.instances if i.free)
        elif g.memory_mib > 0:
            mem = max(0, g.memory_mib - g.used_memory_mib) * PERMILLE // g.memory_mib
            total += min(mem, max(0, 100 - g.used_cores) * 10)
    return total


def pod_gpu_demand(node: Node, containers: tuple[ContainerRequest, ...]) -> int:
    """The pod's GPU demand in per-mille on this node's GPU model."""
    if not node.gpus:
        return 0
    g = node.gpus[0]
    total = 0
    for c in containers:
        if g.mode is NodeMode.MIG:
            m = g.gpu_model
            tot = mig_memory_total(m)
            pm = min(PERMILLE, max(math.ceil(mig_unit_memory(c, m) * PERMILLE / tot) if tot else PERMILLE,
                                   c.cores * 10))
        else:
            pm = min(PERMILLE, share_unit_size(c, g.memory_mib))
        total += pm * c.count
    return total


def _stranded(w: Workload, gpu: float, cpu: float, mem: float) -> float:
    out = 0.0
    if w.cpu_per_gpu_milli > 0:
        out = max(out, gpu - cpu / w.cpu_per_gpu_milli)
    if w.mem_per_gpu_milli > 0:
        out = max(out, gpu - mem / w.mem_per_gpu_milli)
    if w.cpu_pressure > 0:
        out += w.cpu_pressure * gpu * w.cpu_above(cpu)
    return out


def node(ctx: Context, n: Node, free_gpu: int, containers: tuple[ContainerRequest, ...], cpu_milli: int,
         memory_mib: int) -> int:
    """Change of the node's stranded GPU capacity when the pod goes there (0 without host data)."""
    w = ctx.workload
    if n.cpu_milli is None or n.memory_mib is None or not (w.cpu_per_gpu_milli or w.mem_per_gpu_milli):
        return 0
    c0 = n.cpu_milli - n.cpu_used_milli
    m0 = n.memory_mib - n.memory_used_mib
    g0 = float(free_gpu)
    g1 = g0 - pod_gpu_demand(n, containers)
    return round(_stranded(w, g1, c0 - cpu_milli, m0 - memory_mib) - _stranded(w, g0, c0, m0))


def cpsat_terms(terms: list[tuple[Any, int]], var: Any, coef: int) -> None:
    """Add ``coef · var`` to the level's CP-SAT expression."""
    if coef:
        terms.append((var, coef))


__all__ = ["NAME", "MigValues", "ShareValues", "cpsat_terms", "gpu_value", "mig_frag", "mig_pattern", "mig_values",
           "node", "node_free_gpu", "pod_gpu_demand", "request_class", "share_frag", "share_free_pm",
           "share_pattern", "share_values", "unit"]
