"""Per GPU class: every way one GPU of the class can host some of a pod's units (a *pattern*), with
its cost components, keeping the best pattern per unit-count vector.

A MIG pattern is an *option* (keep the current layout and use free instances; re-partition an idle
GPU to one of the allowed layouts; or, on an ``nvml`` node, change a busy GPU in part to a layout
that keeps every held instance: ``ClassInfo.partial``) plus which free instances (by profile)
each container's units take. Several units of one pod may share a MIG GPU. A hami-core pattern puts
at most one unit of each container on the GPU (HAMi: a container's units are on distinct GPUs).

Tables are cached per (class, container demands, GPU policy): they depend on nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from models.requests import ContainerRequest, share_fit_problem

from .context import ClassInfo, Context
from .objective import fragmentation, policy, reconfigurations, template_order, waste
from .objective.reconfigurations import KEEP as KEEP
from .objective.reconfigurations import PARTIAL_BASE, is_partial
from .shapes import mig_demand, serving, share_demand


@dataclass(frozen=True)
class Pattern:
    a: tuple[int, ...]  # units per container on this GPU
    a_idx: int  # mixed-radix index of ``a``
    option: int  # KEEP, or an index into ModelInfo.options
    held: tuple[tuple[int, str, int], ...]  # (container, profile, count) newly held
    comps: tuple[int, int, int, int, int]
    cost: int


@dataclass
class PatternTable:
    patterns: tuple[Pattern, ...]
    copies: dict[int, list[tuple[int, tuple[int, ...]] | None]] = field(default_factory=dict)


class Radix:
    """Mixed-radix indexing of unit-count vectors ``0 <= a <= n``."""

    def __init__(self, n: tuple[int, ...]) -> None:
        self.n = n
        strides = []
        s = 1
        for k in n:
            strides.append(s)
            s *= k + 1
        self.strides = tuple(strides)
        self.size = s
        self.full = s - 1
        self.add = [[self._add(i, j) for j in range(s)] for i in range(s)] if s <= 4096 else []

    def index(self, a: tuple[int, ...]) -> int:
        return sum(x * st for x, st in zip(a, self.strides, strict=True))

    def vector(self, i: int) -> tuple[int, ...]:
        return tuple((i // st) % (k + 1) for st, k in zip(self.strides, self.n, strict=True))

    def _add(self, i: int, j: int) -> int:
        a, b = self.vector(i), self.vector(j)
        if any(x + y > k for x, y, k in zip(a, b, self.n, strict=True)):
            return -1
        return i + j


def radix(ctx: Context, n: tuple[int, ...]) -> Radix:
    key = ("radix", n)
    r = ctx.cache.get(key)
    if r is None:
        r = Radix(n)
        ctx.cache[key] = r
    return r  # type: ignore[no-any-return]


def gpu_unit_cost(info: ClassInfo, gpu_policy: str) -> int:
    return policy.unit(info.usage, gpu_policy)


def table(ctx: Context, info: ClassInfo, containers: tuple[ContainerRequest, ...], n: tuple[int, ...],
          gpu_policy: str, shape_key: Any = None) -> PatternTable:
    """The class's pattern table for these containers. ``shape_key`` (the containers' requests, if
    the caller has it) makes the lookup cheap; tables are shared by all requests with the same
    per-model demands."""
    fast = ("tfast", info.uid, shape_key, gpu_policy) if shape_key is not None else None
    if fast is not None:
        hit = ctx.cache.get(fast)
        if hit is not None:
            return hit  # type: ignore[no-any-return]
    t = _table(ctx, info, containers, n, gpu_policy)
    if fast is not None:
        ctx.cache[fast] = t
    return t


def _table(ctx: Context, info: ClassInfo, containers: tuple[ContainerRequest, ...], n: tuple[int, ...],
           gpu_policy: str) -> PatternTable:
    demands: tuple[Any, ...]
    if info.kind == "mig":
        assert info.model_info is not None
        m = info.model_info.gpu_model
        demands = tuple((*mig_demand(c, m), k) for c, k in zip(containers, n, strict=True))
    else:
        demands = tuple((*share_demand(c, info.gpu), k) for c, k in zip(containers, n, strict=True))
    key = ("table", info.key, demands, gpu_policy)
    t = ctx.cache.get(key)
    if t is None:
        rdx = radix(ctx, n)
        if info.kind == "mig":
            t = PatternTable(tuple(_mig_patterns(ctx, info, containers, n, gpu_policy, rdx)))
        elif info.kind == "share":
            t = PatternTable(tuple(_share_patterns(ctx, info, containers, n, gpu_policy, rdx)))
        else:
            t = PatternTable(())
        ctx.cache[key] = t
    return t  # type: ignore[no-any-return]


def _best(found: dict[int, Pattern], p: Pattern) -> None:
    old = found.get(p.a_idx)
    if old is None or p.cost < old.cost:
        found[p.a_idx] = p


def mig_split_left(info: ClassInfo) -> int:
    """How many more units a MIG GPU of this class may take: HAMi's ``Count > Used`` check
    (``CardTimeSlicingExhausted``), Count being the GPU's deviceSplitCount."""
    return max(0, info.gpu.split - sum(info.held.values()))


def _mig_patterns(ctx: Context, info: ClassInfo, containers: tuple[ContainerRequest, ...], n: tuple[int, ...],
                  gpu_policy: str, rdx: Radix) -> list[Pattern]:
    mi = info.model_info
    assert mi is not None
    m = mi.gpu_model
    unit_cost = gpu_unit_cost(info, gpu_policy)
    options: list[tuple[int, dict[str, int], dict[str, int], dict[str, int], int]] = []
    if info.free:
        options.append((KEEP, info.layout, info.held, info.free, 0))
    if info.idle:
        for i, o in enumerate(mi.options):
            lay = dict(o.counts)
            if lay != info.layout:
                options.append((i, lay, {}, lay, o.rank))
    options.extend(partial_options(info))
    mem = {p.name: p.memory_mib for p in m.profiles}
    reqs = [mig_demand(c, m)[0] for c in containers]
    serve = [serving(m, c) for c in containers]
    found: dict[int, Pattern] = {}
    credit = [fragmentation.unit(ctx, info, c) for c in containers]
    frag_cache: dict[tuple[int, tuple[tuple[str, int], ...]], int] = {}
    split_left = mig_split_left(info)
    for opt, layout, held0, free, _rank in options:
        profiles = sorted(p for p in free if any(p in s for s in serve))
        for a, held in _assign(profiles, free, serve, n):
            if not any(a) or sum(a) > split_left:  # deviceSplitCount caps units per GPU (HAMi)
                continue
            after = dict(held0)
            for _, p, c in held:
                after[p] = after.get(p, 0) + c
            fkey = (opt, tuple(sorted(after.items())))
            df = frag_cache.get(fkey)
            if df is None:
                df = fragmentation.mig_pattern(ctx, info, layout, after)
                frag_cache[fkey] = df
            units = sum(a)
            wasted = sum(c * waste.unit(mem[p], reqs[k]) for k, p, c in held)
            fr = df + sum(x * cr for x, cr in zip(a, credit, strict=True))
            taken = [(p, c) for _, p, c in held]
            order = (template_order.keep_order(mi.options, layout, info.idle, taken) if opt == KEEP
                     else 0 if is_partial(opt) else mi.options[opt].order(taken))
            comps = (reconfigurations.pattern(opt, info.idle), template_order.pattern(opt, order), fr,
                     units * unit_cost, wasted)
            _best(found, Pattern(a, rdx.index(a), opt, held, comps, ctx.encode(comps)))
    return sorted(found.values(), key=lambda p: p.a_idx)


def partial_options(info: ClassInfo) -> list[tuple[int, dict[str, int], dict[str, int], dict[str, int], int]]:
    """The class's partial changes as options ``(PARTIAL_BASE + j, layout, held, free, rank 0)``:
    the held instances stay, so they stay held; the rest of the new layout is free."""
    out = []
    for j, (_, counts) in enumerate(info.partial):
        free = {p: n - info.held.get(p, 0) for p, n in counts.items() if n - info.held.get(p, 0) > 0}
        out.append((PARTIAL_BASE + j, counts, info.held, free, 0))
    return out


def _assign(profiles: list[str], free: dict[str, int], serve: list[frozenset[str]], n: tuple[int, ...]
            ) -> Iterator[tuple[tuple[int, ...], tuple[tuple[int, str, int], ...]]]:
    """Every way to hand free instances (by profile) to containers' units, within ``n``."""
    k_all = len(n)

    def rec(pi: int, a: list[int], held: list[tuple[int, str, int]]
            ) -> Iterator[tuple[tuple[int, ...], tuple[tuple[int, str, int], ...]]]:
        if pi == len(profiles):
            yield tuple(a), tuple(held)
            return
        p = profiles[pi]
        yield from split(pi, p, 0, free[p], a, held)

    def split(pi: int, p: str, k: int, left: int, a: list[int], held: list[tuple[int, str, int]]
              ) -> Iterator[tuple[tuple[int, ...], tuple[tuple[int, str, int], ...]]]:
        if k == k_all:
            yield from rec(pi + 1, a, held)
            return
        top = min(left, n[k] - a[k]) if p in serve[k] else 0
        for h in range(top + 1):
            a[k] += h
            if h:
                held.append((k, p, h))
            yield from split(pi, p, k + 1, left - h, a, held)
            if h:
                held.pop()
            a[k] -= h

    yield from rec(0, [0] * k_all, [])


def _share_patterns(ctx: Context, info: ClassInfo, containers: tuple[ContainerRequest, ...], n: tuple[int, ...],
                    gpu_policy: str, rdx: Radix) -> list[Pattern]:
    g = info.gpu
    unit_cost = gpu_unit_cost(info, gpu_policy)
    found: dict[int, Pattern] = {}
    dem = [share_demand(c, g) for c in containers]
    credit = [fragmentation.unit(ctx, info, c) for c in containers]
    k_all = len(n)
    for mask in range(1, 1 << k_all):
        ks = [k for k in range(k_all) if mask >> k & 1]
        if any(n[k] == 0 for k in ks):
            continue
        extra: list[tuple[int, int]] = []
        ok = True
        for k in ks:
            if share_fit_problem(g, dem[k][0], dem[k][1], tuple(extra)) is not None:
                ok = False
                break
            extra.append(dem[k])
        if not ok:
            continue
        fr = fragmentation.share_pattern(ctx, info, extra) + sum(credit[k] for k in ks)
        a = tuple(1 if mask >> k & 1 else 0 for k in range(k_all))
        comps = (reconfigurations.pattern(KEEP), template_order.pattern(KEEP, 0), fr, len(ks) * unit_cost, 0)
        _best(found, Pattern(a, rdx.index(a), KEEP, tuple((k, "", 1) for k in ks), comps, ctx.encode(comps)))
    return sorted(found.values(), key=lambda p: p.a_idx)


def copies(t: PatternTable, m: int, rdx: Radix) -> list[tuple[int, tuple[int, ...]] | None]:
    """Best cost per unit vector using up to ``m`` GPUs of the class: (cost, pattern indices)."""
    got = t.copies.get(m)
    if got is not None:
        return got
    prev = copies(t, m - 1, rdx) if m > 1 else _zero(rdx)
    cur = list(prev)
    add = rdx.add
    pats = t.patterns
    for i, cell in enumerate(prev):
        if cell is None:
            continue
        c0, r0 = cell
        row = add[i] if add else None
        for pi, p in enumerate(pats):
            j = row[p.a_idx] if row is not None else _slow_add(rdx, i, p.a_idx)
            if j < 0:
                continue
            c = c0 + p.cost
            old = cur[j]
            if old is None or c < old[0]:
                cur[j] = (c, (*r0, pi))
    t.copies[m] = cur
    return cur


def _zero(rdx: Radix) -> list[tuple[int, tuple[int, ...]] | None]:
    z: list[tuple[int, tuple[int, ...]] | None] = [None] * rdx.size
    z[0] = (0, ())
    return z


def _slow_add(rdx: Radix, i: int, j: int) -> int:
    return rdx._add(i, j)
