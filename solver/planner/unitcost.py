"""The best single unit on one GPU of a class, computed directly (the hot path of one-unit pods and
of batch candidate ranking). Gives exactly the pattern :mod:`.patterns` would rank first."""

from __future__ import annotations

from models.requests import ContainerRequest
from models.types import Gpu

from .context import ClassInfo, Context
from .objective import fragmentation, reconfigurations, template_order, waste
from .patterns import KEEP, Pattern, gpu_unit_cost, mig_split_left, partial_options
from .shapes import mig_demand, serving, share_demand


def share_fits(g: Gpu, mem: int, cores: int) -> bool:
    """``models.requests.share_fit_problem(g, mem, cores) is None``, without building messages."""
    n = len(g.shares)
    if n >= g.split or g.used_memory_mib + mem > g.memory_mib:
        return False
    if cores >= 100 and n > 0:
        return False
    if g.used_cores + cores > 100:
        return False
    return not any(s.cores >= 100 for s in g.shares)


def best_unit(ctx: Context, info: ClassInfo, c: ContainerRequest, gpu_policy: str) -> tuple[Pattern, int] | None:
    """(best one-unit pattern, how many units of ``c`` one GPU of the class can host), or None."""
    if info.kind == "mig":
        assert info.model_info is not None
        demand = mig_demand(c, info.model_info.gpu_model)
    elif info.kind == "share":
        demand = share_demand(c, info.gpu)
    else:
        return None
    key = ("unit", info.uid, demand, gpu_policy)
    hit = ctx.cache.get(key, False)
    if hit is not False:
        return hit  # type: ignore[no-any-return]
    got = _mig(ctx, info, c, gpu_policy) if info.kind == "mig" else _share(ctx, info, c, gpu_policy)
    ctx.cache[key] = got
    return got


def _mig(ctx: Context, info: ClassInfo, c: ContainerRequest, gpu_policy: str) -> tuple[Pattern, int] | None:
    mi = info.model_info
    assert mi is not None
    m = mi.gpu_model
    ok = serving(m, c)
    req = mig_demand(c, m)[0]
    unit = gpu_unit_cost(info, gpu_policy)
    credit = fragmentation.unit(ctx, info, c)
    best: Pattern | None = None
    cap = 0
    if mig_split_left(info) < 1:
        return None
    if info.free:
        cap = sum(n for p, n in info.free.items() if p in ok)
        for p in sorted(info.free):
            if p not in ok:
                continue
            after = dict(info.held)
            after[p] = after.get(p, 0) + 1
            keep = template_order.keep_order(mi.options, info.layout, info.idle, ((p, 1),))
            comps = (reconfigurations.pattern(KEEP), template_order.pattern(KEEP, keep),
                     fragmentation.mig_pattern(ctx, info, info.layout, after) + credit, unit,
                     waste.unit(m.profile(p).memory_mib, req))
            pat = Pattern((1,), 1, KEEP, ((0, p, 1),), comps, ctx.encode(comps))
            if best is None or pat.cost < best.cost:
                best = pat
    if info.idle:
        for i, o in enumerate(mi.options):
            lay = dict(o.counts)
            if lay == info.layout:
                continue
            here = sum(n for p, n in o.counts if p in ok)
            cap = max(cap, here)
            for p, _ in o.counts:
                if p not in ok:
                    continue
                comps = (reconfigurations.pattern(i, info.idle), template_order.pattern(i, o.order(((p, 1),))),
                         fragmentation.mig_pattern(ctx, info, lay, {p: 1}) + credit, unit,
                         waste.unit(m.profile(p).memory_mib, req))
                pat = Pattern((1,), 1, i, ((0, p, 1),), comps, ctx.encode(comps))
                if best is None or pat.cost < best.cost:
                    best = pat
    for opt, lay, held, free, _ in partial_options(info):  # a busy GPU on an nvml node, in part
        cap = max(cap, sum(n for p, n in free.items() if p in ok))
        for p in sorted(free):
            if p not in ok:
                continue
            after = dict(held)
            after[p] = after.get(p, 0) + 1
            comps = (reconfigurations.pattern(opt), template_order.pattern(opt, 0),
                     fragmentation.mig_pattern(ctx, info, lay, after) + credit, unit,
                     waste.unit(m.profile(p).memory_mib, req))
            pat = Pattern((1,), 1, opt, ((0, p, 1),), comps, ctx.encode(comps))
            if best is None or pat.cost < best.cost:
                best = pat
    return None if best is None else (best, cap)


def _share(ctx: Context, info: ClassInfo, c: ContainerRequest, gpu_policy: str) -> tuple[Pattern, int] | None:
    g = info.gpu
    mem, cores = share_demand(c, g)
    if not share_fits(g, mem, cores):
        return None
    comps = (reconfigurations.pattern(KEEP), template_order.pattern(KEEP, 0),
             fragmentation.share_pattern(ctx, info, [(mem, cores)]) + fragmentation.unit(ctx, info, c),
             gpu_unit_cost(info, gpu_policy), waste.unit(None, mem))
    return Pattern((1,), 1, KEEP, ((0, "", 1),), comps, ctx.encode(comps)), 1
