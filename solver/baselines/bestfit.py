"""``bestfit``: per unit, the instance (or share) that leaves the least memory unused.

MIG: among free serving instances of the node's GPUs, and the serving instances of the allowed
layouts of idle GPUs, the one with the least waste (instance memory minus request); ties prefer no
re-partitioning, then the earlier template, then the GPU order. hami-core: the GPU with the least
free memory left after the unit (distinct GPUs per container). The node: least total waste, then
fewest re-partitioned GPUs, then name.
"""

from __future__ import annotations

from models.layouts import Slot, make_layout
from models.plan import UnitAssignment
from models.requests import ContainerRequest, PodRequest, mig_unit_memory, profile_serves
from models.types import NodeMode
from solver.planner.context import Context

from .common import WGpu, fit_containers, mig_assignment, share_assignment


def _shares(pod: PodRequest, c: ContainerRequest, node: str, gpus: list[WGpu]) -> list[UnitAssignment] | None:
    out: list[UnitAssignment] = []
    used: set[str] = set()
    for u in range(c.count):
        best: tuple[int, int, WGpu] | None = None
        for w in gpus:
            if w.gpu.uuid in used or w.gpu.mode is not NodeMode.HAMI_CORE:
                continue
            mem = c.memory_for(w.gpu.memory_mib)
            if w.fits_share(mem, c.cores) is None:
                left = w.gpu.memory_mib - w.gpu.used_memory_mib - sum(m for m, _ in w.shares) - mem
                if best is None or (left, w.gpu.index) < best[:2]:
                    best = (left, w.gpu.index, w)
        if best is None:
            return None
        used.add(best[2].gpu.uuid)
        out.append(share_assignment(pod, c, u, node, best[2]))
    return out


def _pick(ctx: Context, pod: PodRequest, c: ContainerRequest, u: int, node: str,
          gpus: list[WGpu]) -> UnitAssignment | None:
    best: tuple[tuple[int, int, int, int, int], WGpu, Slot, int | None] | None = None
    for w in gpus:
        m = w.gpu.gpu_model
        if w.gpu.mode is not NodeMode.MIG or not m.mig_capable:
            continue
        req = mig_unit_memory(c, m)
        for s in w.free:
            p = m.profile(s.profile)
            if profile_serves(m, p, c):
                key = (p.memory_mib - req, 0, 0, w.gpu.index, s.start)
                if best is None or key < best[0]:
                    best = (key, w, s, None)
        if not w.held and not w.changed:
            mi = ctx.model_info(m.name)
            for o in mi.options if mi is not None else ():
                if make_layout(o.layout) == make_layout(w.layout):
                    continue
                for s in o.layout:
                    p = m.profile(s.profile)
                    if profile_serves(m, p, c):
                        key = (p.memory_mib - req, 1, o.rank, w.gpu.index, s.start)
                        if best is None or key < best[0]:
                            best = (key, w, s, o.rank)
    if best is None:
        return None
    _, w, slot, rank = best
    if rank is not None:
        mi = ctx.model_info(w.gpu.model)
        assert mi is not None
        opt = next(o for o in mi.options if o.rank == rank)
        w.layout = list(opt.layout)
        w.changed = True
        w.template_index = opt.template_index
    return mig_assignment(ctx, pod, c, u, node, w, slot)


def fit(ctx: Context, pod: PodRequest, node: str, gpus: list[WGpu]) -> list[UnitAssignment] | None:
    return fit_containers(ctx, pod, node, gpus, _pick, _shares)


def node_key(pod: PodRequest, name: str, before: list[WGpu], units: list[UnitAssignment]) -> tuple[object, ...]:
    waste = 0
    for u in units:
        if u.kind.value == "mig":
            waste += u.memory_mib
    changed = sum(1 for u in {(x.gpu, x.reconfigure) for x in units} if u[1])
    return (waste, changed, name)
