"""Batch mode: the pod plus pending pods in one CP-SAT model (DESIGN §4, lookahead and what-if).

Shape of the model (all integer counts, no per-GPU variables for identical GPUs):

* pods collapse into *types* (same shape and priority; the pod asked about is a type of its own)
  with counts; ``z[n, k]`` = how many pods of type ``k`` go to node ``n``;
* the GPUs of a node collapse into classes; ``w[G, o, h]`` = how many GPUs of class ``G`` take
  option ``o`` (keep the layout, or re-partition an idle GPU to an allowed layout) and newly hold
  ``h`` (instances by profile; for hami-core: units by container type, checked against memory,
  cores, split and exclusivity when the pattern is enumerated);
* ``x[G, k, j, p]`` = units of container ``j`` of type ``k`` on instances of profile ``p`` of
  class ``G`` (pooled: a pod's MIG units only need the same node); every held instance is used and
  each pod gets exactly its units on its node. A hami-core container's units go to distinct GPUs:
  a GPU never holds more units of one container type than there are pods of that type on its node.

Every level is linear in these counts and exact: the same numbers as :mod:`.evaluate`. Candidate
nodes per type are the best ones by the exact single-pod answers (count + ``batch_candidates``),
plus the nodes the greedy plan uses, so the greedy plan (each pod in turn, priority first, placed
by the exact single-pod planner) is always a complete, feasible hint and the fallback.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from models.plan import LayoutChange, Plan, PodPlacement, StageResult, apply_plan
from models.requests import PodRequest
from models.types import ClusterState, Gpu

from .assemble import Workspace, mig_unit, place_result, repartition, share_unit
from .batch_model import BatchModel, PodType, SharePattern
from .context import Context
from .evaluate import components, placed_weights
from .levels import solve_levels
from .nodesolve import Query, make_query, quick_costs, solve_node
from .objective.reconfigurations import PARTIAL_BASE
from .patterns import KEEP
from .shapes import gpu_containers, shape_of
from .single import solve_single
from .views import NodeView, node_view


def pod_types(pod: PodRequest, pending: Sequence[PodRequest], weights: dict[str, int]) -> list[PodType]:
    out = [PodType(0, shape_of(pod), pod.priority, [pod], weights[pod.key], gpu_containers(pod), True)]
    by: dict[tuple[Any, int], PodType] = {}
    for p in pending:
        if not p.wants_gpu:
            continue
        key = (shape_of(p), p.priority)
        t = by.get(key)
        if t is None:
            t = PodType(len(out), key[0], p.priority, [], weights[p.key], gpu_containers(p))
            by[key] = t
            out.append(t)
        t.pods.append(p)
    return out


def greedy(ctx: Context, state: ClusterState, order: list[PodRequest], names: list[str]
           ) -> tuple[list[PodPlacement], tuple[LayoutChange, ...]]:
    """Each pod in turn, placed by the exact single-pod planner on the state the previous ones left."""
    cur = state
    placements: list[PodPlacement] = []
    changes: dict[str, LayoutChange] = {}
    for p in order:
        got = solve_single(ctx, cur, p, names, float("inf"), explain=False)
        if got.best is None:
            placements.append(PodPlacement(p.key, False))
            continue
        ws = Workspace()
        pl = place_result(ws, ctx, p, gpu_containers(p), got.best)
        step = Plan((pl,), ws.layout_changes())
        changes.update({c.gpu: c for c in step.layout_changes})
        placements.append(pl)
        cur = apply_plan(cur, step, {p.key: p})
    # relative to the starting state, a GPU an earlier pod re-partitioned is re-partitioned for the
    # later pods on it too
    fixed = []
    for pl in placements:
        units = tuple(replace(u, reconfigure=True, template_index=changes[u.gpu].template_index)
                      if u.gpu in changes and u.slot is not None else u for u in pl.units)
        fixed.append(replace(pl, units=units))
    return fixed, tuple(sorted(changes.values(), key=lambda c: (c.node, c.gpu)))


def candidates(ctx: Context, views: list[NodeView], q: Query, keep: int) -> list[str]:
    """The ``keep`` best nodes for a pod type by exact per-node cost (ranked cheaply first)."""
    if len(q.containers) == 1 and not q.shape.uuid_filtered:
        quick = quick_costs(ctx, views, q)
        need = q.shape.counts[0]
        ranked = sorted((c[0], i) for i, c in enumerate(quick) if c is not None and c[1] >= need)
        if need == 1 and q.shape.host == (0, 0):
            return [views[i].node.name for _, i in ranked[:keep]]
        short = [i for _, i in ranked[:3 * keep + 8]]
    else:
        short = list(range(len(views)))
    exact = []
    cpu, mem = q.shape.host
    for i in short:
        if views[i].node.host_fit_problem(cpu, mem) is not None:
            continue
        res = solve_node(ctx, views[i], q)
        if res.cost is not None:
            exact.append((res.cost, views[i].node.name))
    exact.sort()
    return [n for _, n in exact[:keep]]


def solve_batch(ctx: Context, state: ClusterState, pod: PodRequest, pending: Sequence[PodRequest],
                names: list[str], reasons: list[tuple[str, str]], t0: float, deadline: float) -> Plan:
    from .api import not_placed

    cfg = ctx.config
    all_pods = [pod, *pending]
    weights = placed_weights(all_pods)
    requests = {p.key: p for p in all_pods}
    first = solve_single(ctx, state, pod, names, float("inf"))
    reasons = reasons + first.reasons
    if first.best is None:
        return not_placed(pod, pending, reasons, cfg.policy, cfg, t0)
    types = pod_types(pod, pending, weights)
    views = [node_view(ctx, state.node(n)) for n in names]
    for t in types:
        t.nodes = set(candidates(ctx, views, make_query(ctx, t.pods[0]), len(t.pods) + cfg.batch_candidates))
    chosen = set().union(*(t.nodes for t in types))
    pool = [n for n in names if n in chosen] if cfg.tie == "order" else sorted(chosen)
    order = [pod, *sorted((p for p in pending if p.wants_gpu), key=lambda p: -p.priority)]
    g_pl, g_changes = greedy(ctx, state, order, pool)
    by_key = {p.pod: p for p in g_pl}
    g_plan = Plan(tuple(by_key.get(p.key, PodPlacement(p.key, False)) for p in all_pods), g_changes)
    type_of = {p.key: t for t in types for p in t.pods}
    for pl in g_plan.placements:
        if pl.placed and pl.node is not None and pl.pod in type_of:
            type_of[pl.pod].nodes.add(pl.node)
    if time.perf_counter() >= deadline:
        return _finish(ctx, state, g_plan, requests, weights, reasons, t0, "fallback", [])
    bm = BatchModel(ctx, state, types, _share_patterns_of(g_plan, types)).build()
    hint = _hint(bm, g_plan, types)
    out = solve_levels(bm, list(cfg.objective), hint, deadline, cfg.workers, cfg.seed)
    status = "optimal" if all(s.status == "optimal" for s in out.stages) else "feasible"
    if out.from_hint:
        return _finish(ctx, state, g_plan, requests, weights, reasons, t0, status, out.stages)
    plan_cp = _extract(bm, all_pods, out.values)
    return _finish(ctx, state, plan_cp, requests, weights, reasons, t0, status, out.stages)


def _share_patterns_of(plan: Plan, types: list[PodType]) -> dict[str, SharePattern]:
    type_of = {p.key: t for t in types for p in t.pods}
    per: dict[str, dict[tuple[int, int], int]] = defaultdict(lambda: defaultdict(int))
    for pl in plan.placements:
        t = type_of.get(pl.pod)
        if t is None or not pl.placed:
            continue
        jpos = {c.index: j for j, c in enumerate(t.containers)}
        for u in pl.units:
            if u.slot is None:
                per[u.gpu][(t.index, jpos[u.container_index])] += 1
    return {g: tuple(sorted(d.items())) for g, d in per.items()}


def _hint(bm: BatchModel, plan: Plan, types: list[PodType]) -> dict[int, int]:
    """The greedy plan as a complete assignment of the model's variables."""
    type_of = {p.key: t for t in types for p in t.pods}
    changes = {c.gpu: c for c in plan.layout_changes}
    held_by: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    mig_units: dict[tuple[str, int, int, str], int] = defaultdict(int)
    share_units: dict[str, dict[tuple[int, int], int]] = defaultdict(lambda: defaultdict(int))
    z: dict[tuple[str, int], int] = defaultdict(int)
    for pl in plan.placements:
        t = type_of.get(pl.pod)
        if not pl.placed or pl.node is None or t is None:
            continue
        z[(pl.node, t.index)] += 1
        jpos = {c.index: j for j, c in enumerate(t.containers)}
        for u in pl.units:
            j = jpos[u.container_index]
            if u.slot is not None:
                held_by[u.gpu][u.slot.profile] += 1
                mig_units[(u.gpu, t.index, j, u.slot.profile)] += 1
            else:
                share_units[u.gpu][(t.index, j)] += 1
    out: dict[int, int] = {}
    for key, v in bm.z.items():
        out[v.index] = z.get(key, 0)
    for k, pv in bm.placed.items():
        out[pv.index] = sum(c for (_, kk), c in z.items() if kk == k)
    for g in bm.groups:
        counts: dict[tuple[int, tuple[Any, ...]], int] = defaultdict(int)
        xs: dict[tuple[int, int, str], int] = defaultdict(int)
        for gpu in g.gpus:
            if g.info.kind == "mig":
                opt = KEEP
                ch = changes.get(gpu.uuid)
                if ch is not None:
                    mi = g.info.model_info
                    assert mi is not None
                    if ch.incremental:
                        opt = next((PARTIAL_BASE + j for j, (lay, _) in enumerate(g.info.partial)
                                    if lay == ch.layout), KEEP)
                    else:
                        opt = next((i for i, o in enumerate(mi.options) if o.layout == ch.layout), KEEP)
                h = tuple(sorted((p, c) for p, c in held_by.get(gpu.uuid, {}).items() if c))
                counts[(opt, h)] += 1
                for (gu, k, j, p), c in mig_units.items():
                    if gu == gpu.uuid:
                        xs[(k, j, p)] += c
            else:
                b = tuple(sorted((kj, c) for kj, c in share_units.get(gpu.uuid, {}).items() if c))
                counts[(KEEP, b)] += 1
                for kj, c in b:
                    xs[(kj[0], kj[1], "")] += c
        for opt, h, v in g.patterns:
            out[v.index] = counts.get((opt, h), 0)
        for key3, v in g.x.items():
            out[v.index] = xs.get(key3, 0)
    for b, v in bm.links:
        out[b.index] = 1 if out.get(v.index, 0) > 0 else 0
    return out


def _extract(bm: BatchModel, all_pods: list[PodRequest], val: dict[int, int]) -> Plan:
    ctx = bm.ctx
    ws = Workspace()
    pools: dict[tuple[str, int, int], list[tuple[Gpu, Any]]] = defaultdict(list)
    for g in bm.groups:
        gpus = list(g.gpus)
        gi = 0
        if g.info.kind == "mig":
            mi = g.info.model_info
            assert mi is not None
            by_profile: dict[str, list[tuple[Gpu, Any]]] = defaultdict(list)
            for opt, h, var in g.patterns:
                for _ in range(val[var.index]):
                    gpu = gpus[gi]
                    gi += 1
                    if opt != KEEP:
                        repartition(ws, ctx, g.node, gpu, opt)
                    for p, c in h:
                        for s in ws.free_slots(gpu, p)[:c]:
                            ws.taken.add((gpu.uuid, s))
                            by_profile[p].append((gpu, s))
            for (k, j, p), x in sorted(g.x.items()):
                for _ in range(val[x.index]):
                    pools[(g.node, k, j)].append(by_profile[p].pop(0))
        else:
            for _, b, var in g.patterns:
                for _ in range(val[var.index]):
                    gpu = gpus[gi]
                    gi += 1
                    for kj, c in b:
                        pools[(g.node, kj[0], kj[1])].extend([(gpu, None)] * c)
    placements: dict[str, PodPlacement] = {}
    for t in bm.types:
        queue = list(t.pods)
        for name in sorted({n for (n, k) in bm.z if k == t.index}):
            zc = val[bm.z[(name, t.index)].index]
            if not zc:
                continue
            chosen, queue = queue[:zc], queue[zc:]
            units: dict[str, list[Any]] = defaultdict(list)
            for j, c in enumerate(t.containers):
                # round robin over GPU-sorted entries: each GPU holds <= zc units of this container,
                # so every pod gets its units on distinct GPUs (what hami-core needs)
                pool = sorted(pools[(name, t.index, j)], key=lambda e: (e[0].index, e[1].start if e[1] else -1))
                for i, p in enumerate(chosen):
                    for u, (gpu, slot) in enumerate(pool[i::zc]):
                        if slot is None:
                            units[p.key].append(share_unit(p, c, u, name, gpu))
                        else:
                            units[p.key].append(mig_unit(ws, ctx, p, c, u, name, gpu, slot))
            for p in chosen:
                placements[p.key] = PodPlacement(p.key, True, name, tuple(units[p.key]))
    out = tuple(placements.get(p.key, PodPlacement(p.key, False)) for p in all_pods)
    return Plan(out, ws.layout_changes())


def _finish(ctx: Context, state: ClusterState, plan: Plan, requests: dict[str, PodRequest],
            weights: dict[str, int], reasons: list[tuple[str, str]], t0: float, status: str,
            stages: list[StageResult]) -> Plan:
    wall = (time.perf_counter() - t0) * 1000
    if not stages:
        vals = components(ctx, state, plan, requests)
        placed = float(sum(weights[p.pod] for p in plan.placements if p.placed))
        stages = [StageResult(o, placed if o == "placed" else float(vals[o]),
                              placed if o == "placed" else float(vals[o]), status, wall if i == 0 else 0.0)
                  for i, o in enumerate(ctx.config.objective)]
    return Plan(plan.placements, plan.layout_changes, tuple(stages), status, wall, tuple(sorted(reasons)),
                ctx.config.policy)
