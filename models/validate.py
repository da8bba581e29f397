"""The executable spec of a plan, independent of any solver.

``validate(state, plan, requests)`` returns every rule the plan breaks; an empty list means the
plan may be used. Rules: every unit of a placed pod exactly once, on one node; nodes, GPUs and
instances exist; an instance is held by one unit at most; layouts are valid for the model, come
from the templates unless ``layouts: any``, and change only as ``models.relayout`` allows (whole
re-cuts on idle GPUs; partial changes keeping every held instance, on ``nvml`` nodes); hami-core
memory, core and split limits hold (deviceSplitCount on MIG GPUs too); mode, type and UUID
annotations are honoured; host CPU and memory fit where a node's allocatable is known.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .catalog import GpuModel
from .layouts import Layout, layout_problems
from .plan import Plan, UnitAssignment
from .relayout import change_violations
from .requests import ContainerRequest, PodRequest, gpu_allowed, profile_serves, share_fit_problem
from .templates import DeviceConfig
from .types import ClusterState, Gpu, NodeMode, UnitKind


@dataclass(frozen=True)
class Violation:
    kind: str
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


def _template_index(templates: DeviceConfig, gm: GpuModel, layout: Layout) -> int | None:
    for t in templates.template_layouts(gm):
        if t.layout == layout:
            return t.index
    return None


def validate(
    state: ClusterState,
    plan: Plan,
    requests: Mapping[str, PodRequest],
    templates: DeviceConfig | None = None,
) -> list[Violation]:
    out: list[Violation] = []

    def bad(kind: str, msg: str) -> None:
        out.append(Violation(kind, msg))

    # ---- layout changes
    new_layout: dict[tuple[str, str], Layout] = {}
    incremental: set[tuple[str, str]] = set()
    for ch in plan.layout_changes:
        key = (ch.node, ch.gpu)
        where = f"node {ch.node} GPU {ch.gpu}"
        if key in new_layout:
            bad("layout-twice", f"{where}: re-partitioned twice in one plan")
            continue
        if not state.has_node(ch.node):
            bad("node", f"layout change on unknown node {ch.node}")
            continue
        try:
            gpu = state.gpu(ch.node, ch.gpu)
        except KeyError:
            bad("gpu", f"{where}: no such GPU")
            continue
        if gpu.mode is not NodeMode.MIG:
            bad("mode", f"{where}: layout change on a {gpu.mode} GPU")
            continue
        problems = layout_problems(gpu.gpu_model, ch.layout)
        if problems:
            bad("layout-invalid", f"{where}: {'; '.join(problems)}")
        for kind, msg in change_violations(state.node(ch.node), gpu, ch.layout, ch.incremental, plan.policy):
            bad(kind, f"{where}: {msg}")  # models.relayout: busy GPUs, held instances, the node's applier
        if templates is not None and not state.layouts_any and not ch.incremental:
            idx = _template_index(templates, gpu.gpu_model, ch.layout)
            if idx is None:
                bad("layout-not-template", f"{where}: layout is not one of the configured templates")
            elif ch.template_index is not None and ch.template_index != idx:
                bad("template-index", f"{where}: template_index {ch.template_index} but layout is template {idx}")
        new_layout[key] = ch.layout
        if ch.incremental:
            incremental.add(key)

    # ---- units
    held: dict[tuple[str, str, object], str] = {}
    shares_planned: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for pl in plan.placements:
        req = requests.get(pl.pod)
        if req is None:
            bad("unknown-pod", f"plan places {pl.pod}, which is not among the requests")
            continue
        if not pl.placed:
            if pl.units:
                bad("unit-count", f"{pl.pod}: not placed but has units")
            continue
        wanted = {(c.index, u) for c, u in req.unit_ids()}
        got = [(u.container_index, u.unit) for u in pl.units]
        if sorted(got) != sorted(wanted):
            bad("unit-count", f"{pl.pod}: units {sorted(got)} but the pod asks for {sorted(wanted)}")
        nodes = {u.node for u in pl.units}
        if len(nodes) > 1 or (pl.node is not None and nodes and nodes != {pl.node}):
            bad("multi-node", f"{pl.pod}: units on nodes {sorted(nodes)}, placement says {pl.node}")
        containers = {c.index: c for c in req.containers}
        share_gpus_per_container: dict[int, set[str]] = {}
        for u in pl.units:
            _check_unit(state, plan, req, containers, u, new_layout, held, shares_planned,
                        share_gpus_per_container, bad, incremental)
    _check_mig_split(state, held, bad)
    _check_host(state, plan, requests, bad)
    return out


def _check_mig_split(state: ClusterState, held: Mapping[tuple[str, str, object], str],
                     bad: Callable[[str, str], None]) -> None:
    """deviceSplitCount caps the units a MIG GPU serves at once (HAMi: ``CardTimeSlicingExhausted``)."""
    planned: dict[tuple[str, str], int] = {}
    for n, g, _ in held:
        planned[(n, g)] = planned.get((n, g), 0) + 1
    for (n, g), k in sorted(planned.items()):
        if not state.has_node(n):
            continue
        try:
            gpu = state.gpu(n, g)
        except KeyError:
            continue
        already = sum(1 for i in gpu.instances if not i.free)
        if gpu.mode is NodeMode.MIG and already + k > gpu.split:
            bad("mig-split", f"GPU {n}/{gpu.index}: {already} held + {k} planned MIG units exceed its "
                             f"deviceSplitCount {gpu.split}")


def _check_host(state: ClusterState, plan: Plan, requests: Mapping[str, PodRequest],
                bad: Callable[[str, str], None]) -> None:
    """Host CPU and memory (kube-scheduler's NodeResourcesFit): the pods planned on a node fit
    beside those already there, where the node's allocatable is known."""
    planned: dict[str, tuple[int, int]] = {}
    for pl in plan.placements:
        req = requests.get(pl.pod)
        if req is None or not pl.placed or pl.node is None or not state.has_node(pl.node):
            continue
        cpu, mem = planned.get(pl.node, (0, 0))
        cpu, mem = cpu + req.cpu_milli, mem + req.host_memory_mib
        planned[pl.node] = (cpu, mem)
        why = state.node(pl.node).host_fit_problem(cpu, mem)
        if why:
            bad("host", f"{pl.pod} on node {pl.node}: {why} (with the plan's other pods there)")


def _check_unit(
    state: ClusterState,
    plan: Plan,
    req: PodRequest,
    containers: Mapping[int, ContainerRequest],
    u: UnitAssignment,
    new_layout: dict[tuple[str, str], Layout],
    held: dict[tuple[str, str, object], str],
    shares_planned: dict[tuple[str, str], list[tuple[int, int]]],
    share_gpus: dict[int, set[str]],
    report: Callable[[str, str], None],
    incremental: set[tuple[str, str]] | None = None,
) -> None:
    where = f"{u.pod} container {u.container_index} unit {u.unit}"
    c = containers.get(u.container_index)
    if c is None:
        report("unit-count", f"{where}: the pod has no GPU container with that index")
        return
    if not state.has_node(u.node):
        report("node", f"{where}: unknown node {u.node}")
        return
    try:
        gpu: Gpu = state.gpu(u.node, u.gpu)
    except KeyError:
        report("gpu", f"{where}: node {u.node} has no GPU {u.gpu}")
        return
    why = gpu_allowed(req, gpu)
    if why:
        report("annotation", f"{where} on {u.node}/{gpu.index}: {why}")
    key = (u.node, u.gpu)
    if u.kind is UnitKind.MIG:
        if gpu.mode is not NodeMode.MIG:
            report("mode", f"{where}: MIG unit on a {gpu.mode} GPU")
            return
        if u.slot is None:
            report("instance-missing", f"{where}: MIG unit without an instance")
            return
        changed = key in new_layout
        if u.reconfigure != changed:
            report("reconfigure-flag", f"{where}: reconfigure={u.reconfigure} but layout change={changed}")
        if changed:
            if u.slot not in new_layout[key]:
                report("instance-missing", f"{where}: {u.slot} is not in the new layout of GPU {gpu.index}")
                return
            kept = gpu.instance(u.slot) if incremental and key in incremental else None
            if kept is not None and not kept.free:
                report("instance-held", f"{where}: {u.slot} on {u.node}/{gpu.index} is held by {kept.holder}")
        else:
            inst = gpu.instance(u.slot)
            if inst is None:
                report("instance-missing", f"{where}: GPU {u.node}/{gpu.index} has no instance {u.slot}")
                return
            if not inst.free:
                report("instance-held", f"{where}: {u.slot} on {u.node}/{gpu.index} is held by {inst.holder}")
        hk = (u.node, u.gpu, u.slot)
        if hk in held:
            report("double-held", f"{where}: {u.slot} on {u.node}/{gpu.index} also given to {held[hk]}")
        held[hk] = where
        gm = gpu.gpu_model
        if not gm.has_profile(u.slot.profile):
            report("instance-missing", f"{where}: {gm.name} has no profile {u.slot.profile}")
            return
        prof = gm.profile(u.slot.profile)
        if not profile_serves(gm, prof, c):
            report("fit", f"{where}: {prof.name} ({prof.memory_mib} MiB, {gm.core_percent(prof)}% compute) "
                          "does not serve the request")
        if u.memory_mib != prof.memory_mib:
            report("fit", f"{where}: records {u.memory_mib} MiB, instance has {prof.memory_mib} MiB")
    else:
        if gpu.mode is not NodeMode.HAMI_CORE:
            report("mode", f"{where}: shared unit on a {gpu.mode} GPU")
            return
        mem = c.memory_for(gpu.memory_mib)
        cores = c.cores
        if u.memory_mib != mem or u.cores != cores:
            report("fit", f"{where}: records {u.memory_mib} MiB/{u.cores}% but asks {mem} MiB/{cores}%")
        seen = share_gpus.setdefault(u.container_index, set())
        if u.gpu in seen:
            report("share-same-gpu", f"{where}: two units of one container on GPU {u.node}/{gpu.index}")
        seen.add(u.gpu)
        extra = shares_planned.setdefault(key, [])
        why_not = share_fit_problem(gpu, mem, cores, tuple(extra))
        if why_not:
            report("share-limit", f"{where} on {u.node}/{gpu.index}: {why_not}")
        extra.append((mem, cores))
