"""Why a pod cannot go on a node, in words a person can act on.

Example: ``needs 1x 20000 MiB (MIG): GPU 3 (GPU-…): largest free MIG instance is 9728 MiB; GPU busy,
cannot re-partition``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from models.errors import CatalogError
from models.relayout import may_change_layout
from models.requests import ContainerRequest, PodRequest, describe_request, gpu_allowed, share_fit_problem
from models.types import ClusterState, Gpu, Node, NodeMode

from .context import ClassInfo, Context
from .shapes import mig_demand, serving, share_demand

if TYPE_CHECKING:
    from .views import NodeView


def _gpus(gs: list[Gpu]) -> str:
    if len(gs) == 1:
        return f"GPU {gs[0].index} ({gs[0].uuid})"
    return "GPUs " + ",".join(str(g.index) for g in gs)


def _grouped(items: list[tuple[Gpu, str]]) -> str:
    by: dict[str, list[Gpu]] = {}
    for g, why in items:
        by.setdefault(why, []).append(g)
    return "; ".join(f"{_gpus(gs)}: {why}" for why, gs in by.items())


def explain(ctx: Context, view: NodeView, node: Node, pod: PodRequest, containers: tuple[ContainerRequest, ...],
            per_gpu: bool) -> str:
    if not containers:
        return "pod requests no GPU (no nvidia.com/gpu, gpumem or gpucores)"
    if not node.gpus:
        return "node has no GPUs"
    if pod.modes and all(g.mode not in pod.modes for g in node.gpus):
        want = ",".join(sorted(m.value for m in pod.modes))
        return f"no GPU matches vgpu-mode {want} (node is {node.mode.value})"
    allowed: list[tuple[Gpu, ClassInfo]] = []
    refused: list[tuple[Gpu, str]] = []
    unknown: set[str] = set()
    for gr in view.groups:
        for g in gr.gpus:
            if gr.info.kind == "unknown":
                unknown.add(g.model)
                continue
            why = gpu_allowed(pod, g)
            if why is not None:
                refused.append((g, why))
            else:
                allowed.append((g, gr.info))
    if not allowed:
        if unknown and not refused:
            return f"unknown GPU model {', '.join(sorted(unknown))}"
        if pod.modes and all(g.mode not in pod.modes for g, _ in refused):
            want = ",".join(sorted(m.value for m in pod.modes))
            return f"no GPU matches vgpu-mode {want} (node is {node.mode.value})"
        text = _grouped(refused)
        if unknown:
            text += f"; unknown GPU model {', '.join(sorted(unknown))}"
        return text
    for c in containers:
        hosts: list[tuple[Gpu, int]] = []
        lacks: list[tuple[Gpu, str]] = []
        for g, info in allowed:
            cap, why = _capacity(ctx, g, info, c)
            if cap:
                hosts.append((g, cap))
            else:
                lacks.append((g, why))
        total = sum(k for _, k in hosts)
        kind = "MIG" if node.mode is NodeMode.MIG else "hami-core share"
        if total < c.count:
            head = f"needs {describe_request(c)} ({kind})"
            if hosts:
                distinct = " on distinct GPUs" if node.mode is NodeMode.HAMI_CORE and c.count > 1 else ""
                head += f"; the node can host {total}{distinct}"
            tail = _grouped(lacks)
            return f"{head}: {tail}" if tail else head
    total_units = sum(c.count for c in containers)
    return f"the pod's {total_units} units (all containers together) do not fit on the node's free GPUs"


def _capacity(ctx: Context, g: Gpu, info: ClassInfo, c: ContainerRequest) -> tuple[int, str]:
    """How many units of ``c`` this GPU can host alone, and why not when none (cached per class)."""
    key = ("capacity", info.key, c.count, c.memory_mib, c.memory_percent, c.cores)
    hit = ctx.cache.get(key)
    if hit is None:
        hit = _capacity_of(ctx, g, info, c)
        ctx.cache[key] = hit
    return hit  # type: ignore[no-any-return]


def _capacity_of(ctx: Context, g: Gpu, info: ClassInfo, c: ContainerRequest) -> tuple[int, str]:
    if info.kind == "share":
        mem, cores = share_demand(c, g)
        why = share_fit_problem(g, mem, cores)
        return (0, why) if why else (1, "")
    mi = info.model_info
    assert mi is not None
    m = mi.gpu_model
    req, _ = mig_demand(c, m)
    ok = serving(m, c)
    held = sum(1 for i in g.instances if not i.free)
    if held >= g.split:
        return 0, f"all {g.split} units of the GPU in use (deviceSplitCount)"
    free = [i for i in g.instances if i.free]
    fits = [i for i in free if i.slot.profile in ok]
    if may_change_layout(g):  # the one re-layout rule (models.relayout)
        best = 0
        for o in mi.options:
            best = max(best, sum(n for p, n in o.counts if p in ok))
        best = max(best, len(fits))
        if best:
            return best, ""
        if not mi.options:
            return 0, f"no MIG template configured for {m.name}"
        biggest = max((m.profile(s.profile) for o in mi.options for s in o.layout), key=lambda p: p.memory_mib)
        need = f" and {c.cores}% cores" if c.cores else ""
        return 0, (f"no allowed layout of {m.name} has an instance with {req} MiB{need} "
                   f"(largest: {biggest.name}, {biggest.memory_mib} MiB, {m.core_percent(biggest)}% cores)")
    if fits:
        return len(fits), ""
    if not free:
        return 0, "no free MIG instance; GPU busy, cannot re-partition"
    big = max((m.profile(i.slot.profile) for i in free), key=lambda p: p.memory_mib)
    if big.memory_mib >= req and c.cores:
        return 0, (f"needs {c.cores}% cores; largest free MIG instance is {big.name} with "
                   f"{m.core_percent(big)}%; GPU busy, cannot re-partition")
    return 0, f"largest free MIG instance is {big.memory_mib} MiB ({big.name}); GPU busy, cannot re-partition"


def cluster_too_small(state: ClusterState, pod: PodRequest) -> str | None:
    """The cause when a unit asks for more memory than any GPU the pod may use has in the whole
    cluster (largest MIG profile of a MIG GPU's model, memory of a hami-core GPU); None otherwise.
    Per-node reasons would name each node's own largest instance, which hides that cause."""
    need = [c for c in pod.containers if c.count > 0 and c.memory_mib is not None]
    if not need:
        return None
    best: tuple[int, str] | None = None
    filtered = False
    seen: set[tuple[str, NodeMode, int]] = set()
    for n in state.nodes:
        for g in n.gpus:
            key = (g.model, g.mode, g.memory_mib)
            if key in seen:
                continue
            seen.add(key)
            if gpu_allowed(pod, replace(g, health=True, instances=(), shares=())) is not None:
                filtered = True
                continue
            if g.mode is NodeMode.MIG:
                try:
                    m = g.gpu_model
                except CatalogError:  # unknown model: the per-node reason says so
                    continue
                top = max(m.profiles, key=lambda p: p.memory_mib, default=None)
                cand = (top.memory_mib, f"{m.name} {top.name}") if top else (g.memory_mib, m.name)
            else:
                cand = (g.memory_mib, f"{g.model} (hami-core)")
            if best is None or cand[0] > best[0]:
                best = cand
    if best is None:
        return None
    c = max(need, key=lambda c: c.memory_mib or 0)
    if (c.memory_mib or 0) <= best[0]:
        return None
    scope = "any GPU the pod may use" if filtered else "any GPU in the cluster"
    return f"needs {describe_request(c)}: larger than {scope}: the largest is {best[1]}, {best[0]:,} MiB"
