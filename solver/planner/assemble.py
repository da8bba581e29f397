"""Turning a chosen node result into plan units and layout changes (concrete GPUs and instances)."""

from __future__ import annotations

from models.catalog import model
from models.layouts import Layout, Slot
from models.plan import LayoutChange, PodPlacement, UnitAssignment
from models.requests import ContainerRequest, PodRequest
from models.types import Gpu, UnitKind

from .context import Context, gpu_class_key
from .nodesolve import NodeResult
from .objective.reconfigurations import PARTIAL_BASE, is_partial
from .patterns import KEEP, Pattern


class Workspace:
    """Layout changes and taken instances/shares of one plan under construction (several pods)."""

    def __init__(self) -> None:
        self.changes: dict[str, LayoutChange] = {}
        self.taken: set[tuple[str, Slot]] = set()

    def layout_changes(self) -> tuple[LayoutChange, ...]:
        return tuple(sorted(self.changes.values(), key=lambda c: (c.node, c.gpu)))

    def free_slots(self, g: Gpu, profile: str) -> list[Slot]:
        ch = self.changes.get(g.uuid)
        if ch is not None:
            held = {i.slot for i in g.instances if not i.free} if ch.incremental else set()
            slots: list[Slot] = [s for s in ch.layout if s.profile == profile and s not in held]
        else:
            slots = [i.slot for i in g.instances if i.free and i.slot.profile == profile]
        return sorted((s for s in slots if (g.uuid, s) not in self.taken), key=lambda s: s.start)

    def repartition(self, node: str, g: Gpu, layout: Layout, template_index: int | None,
                    incremental: bool = False) -> None:
        self.changes[g.uuid] = LayoutChange(node, g.uuid, layout, template_index, incremental)


def repartition(ws: Workspace, ctx: Context, node: str, g: Gpu, option: int) -> None:
    """Record the layout change of ``option`` for ``g``: a whole re-cut to a layout option, or a
    partial change (incremental) to one of the GPU class's partial layouts."""
    if is_partial(option):
        info = ctx.class_info(gpu_class_key(g, partial=True), g)
        ws.repartition(node, g, info.partial[option - PARTIAL_BASE][0], None, incremental=True)
        return
    mi = ctx.model_info(g.model)
    assert mi is not None
    opt = mi.options[option]
    ws.repartition(node, g, opt.layout, opt.template_index)


def mig_unit(ws: Workspace, ctx: Context, pod: PodRequest, c: ContainerRequest, unit: int, node: str, g: Gpu,
             slot: Slot) -> UnitAssignment:
    m = model(g.model)
    p = m.profile(slot.profile)
    ws.taken.add((g.uuid, slot))
    ch = ws.changes.get(g.uuid)
    if ch is not None:
        tpl = ch.template_index
    else:
        mi = ctx.model_info(g.model)
        tpl = mi.template_of.get(g.layout) if mi is not None else None
    return UnitAssignment(pod.key, c.name, c.index, unit, node, g.uuid, g.index, UnitKind.MIG, p.memory_mib,
                          m.core_percent(p), slot, ch is not None, tpl)


def share_unit(pod: PodRequest, c: ContainerRequest, unit: int, node: str, g: Gpu) -> UnitAssignment:
    return UnitAssignment(pod.key, c.name, c.index, unit, node, g.uuid, g.index, UnitKind.SHARE,
                          c.memory_for(g.memory_mib), c.cores)


def place_patterns(ws: Workspace, ctx: Context, pod: PodRequest, containers: tuple[ContainerRequest, ...],
                   node: str, per_gpu: list[tuple[Gpu, Pattern]]) -> PodPlacement:
    """Units for ``pod`` from one pattern per GPU (GPU order), numbered per container by GPU index."""
    picks: list[list[tuple[int, int, Gpu, Slot | None]]] = [[] for _ in containers]
    for g, p in sorted(per_gpu, key=lambda x: x[0].index):
        if p.option != KEEP:
            repartition(ws, ctx, node, g, p.option)
        for k, prof, cnt in p.held:
            if not prof:
                picks[k].append((g.index, -1, g, None))
                continue
            slots = ws.free_slots(g, prof)[:cnt]
            if len(slots) < cnt:
                raise AssertionError(f"pattern wants {cnt}x {prof} on {node}/{g.index}, {len(slots)} free")
            for s in slots:
                ws.taken.add((g.uuid, s))
                picks[k].append((g.index, s.start, g, s))
    units: list[UnitAssignment] = []
    for k, c in enumerate(containers):
        for u, (_, _, g, slot) in enumerate(sorted(picks[k], key=lambda x: (x[0], x[1]))):
            if slot is None:
                units.append(share_unit(pod, c, u, node, g))
            else:
                units.append(mig_unit(ws, ctx, pod, c, u, node, g, slot))
    return PodPlacement(pod.key, True, node, tuple(units))


def place_result(ws: Workspace, ctx: Context, pod: PodRequest, containers: tuple[ContainerRequest, ...],
                 res: NodeResult) -> PodPlacement:
    per_gpu: list[tuple[Gpu, Pattern]] = []
    for gr, pats in res.choice:
        for g, p in zip(gr.gpus, pats, strict=False):
            per_gpu.append((g, p))
    return place_patterns(ws, ctx, pod, containers, res.node, per_gpu)
