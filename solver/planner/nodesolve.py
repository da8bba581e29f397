"""The per-node subproblem, solved exactly.

For one node and one pod: choose, for each GPU class of the node, how many of its GPUs take each
pattern (see :mod:`.patterns`) so that every unit of every container is placed, minimising the
lexicographic cost. This is a small integer program (class counts x patterns); it is solved by
dynamic programming over unit-count vectors (min-plus convolution over classes), which is exact and
costs microseconds, where a CP-SAT call costs a millisecond or more. The same model, over all nodes
at once, is what :mod:`.batch` gives CP-SAT.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from models.requests import ContainerRequest, PodRequest, gpu_allowed
from models.types import Node

from .context import NODE_POLICY_MULT, Context
from .costs import PERMILLE
from .objective import fragmentation
from .patterns import Pattern, PatternTable, Radix, copies, radix, table
from .reasons import explain
from .shapes import Shape
from .unitcost import best_unit
from .views import GpuGroup, NodeView, build_view


@dataclass(frozen=True)
class NodeResult:
    node: str
    cost: int | None  # encoded lexicographic cost; None = the pod cannot go here
    comps: tuple[int, ...] = ()
    choice: tuple[tuple[GpuGroup, tuple[Pattern, ...]], ...] = ()  # per group: one pattern per GPU used
    reason: str | None = None


def node_cost(shape: Shape, view: NodeView) -> int:
    return PERMILLE - view.usage if shape.node_policy == "binpack" else view.usage


#: Per-node answers shared across nodes with identical GPU classes, at most this many.
SHARED_LIMIT = 50_000


def node_frag(ctx: Context, view: NodeView, q: Query) -> int:
    """The fragmentation level's node term (host stranding, CPU pressure) of the pod on this node."""
    if not ctx.host_terms:
        return 0
    return fragmentation.node(ctx, view.node, view.free_gpu(ctx), q.containers, q.pod.cpu_milli,
                              q.pod.host_memory_mib)


@dataclass(frozen=True)
class Query:
    """One pod's request with its interned cache keys."""

    pod: PodRequest
    shape: Shape
    containers: tuple[ContainerRequest, ...]
    rkey: int  # per-node result key (shape without node policy)
    fkey: int  # class eligibility key (mode and type filters)
    ckey: int  # pattern-table key (the containers' requests)
    n: tuple[int, ...] = ()  # units per container (``shape.counts``, computed once)
    units: dict[int, Pattern | None] = field(default_factory=dict, compare=False, hash=False)  # per class
    caps: dict[int, int] = field(default_factory=dict, compare=False, hash=False)  # per class: units per GPU
    #: per class: its pattern table for this pod, or None where the class may not serve it
    tables: dict[int, PatternTable | None] = field(default_factory=dict, compare=False, hash=False)
    #: per (class, GPU count): see :func:`lower_bound`
    ratios: dict[tuple[int, int], tuple[int, int, int, bool] | None] = field(default_factory=dict,
                                                                             compare=False, hash=False)


def make_query(ctx: Context, pod: PodRequest) -> Query:
    from .shapes import gpu_containers, shape_of

    shape = shape_of(pod)
    return Query(pod, shape, gpu_containers(pod), ctx.intern(shape.node_free), ctx.intern(shape.filter_key),
                 ctx.intern(shape.containers), shape.counts)


def _allowed(ctx: Context, group: GpuGroup, q: Query) -> str | None:
    key = ("allowed", group.info.uid, q.fkey)
    hit = ctx.cache.get(key, False)
    if hit is False:
        hit = gpu_allowed(q.pod, group.gpus[0])
        ctx.cache[key] = hit
    return hit  # type: ignore[no-any-return]


def _base(ctx: Context, view: NodeView, q: Query) -> NodeResult:
    """The node's answer without the node policy term, bound to its GPUs (kept per view)."""
    res = view.results.get(q.rkey)
    if res is None:
        if q.shape.uuid_filtered:
            pod = q.pod
            v = build_view(ctx, view.node, split=lambda g: gpu_allowed(pod, g) is None)
            res = _solve(ctx, v, view.node, q, per_gpu=True)
        else:
            res = _shared(ctx, view, q)
        view.results[q.rkey] = res
    return res  # type: ignore[no-any-return]


def solve_node(ctx: Context, view: NodeView, q: Query) -> NodeResult:
    """The node's best placement of the pod (cost and components include the node policy term)."""
    res = _base(ctx, view, q)
    if res.cost is None:
        return res
    extra = node_cost(q.shape, view) * NODE_POLICY_MULT
    fextra = node_frag(ctx, view, q) if ctx.host_terms else 0
    if not extra and not fextra:
        return res
    comps = _plus(res.comps, extra, fextra)
    return NodeResult(res.node, res.cost + extra * ctx.weights[3] + fextra * ctx.weights[2], comps, res.choice)


def node_score(ctx: Context, view: NodeView, q: Query) -> tuple[int, int] | None:
    """``(cost, fragmentation component)`` of :func:`solve_node`'s answer, or None where the pod
    cannot go, without binding a shared answer to this node's GPUs: a query over 1,000 nodes ranks
    every node but needs the placement of one (``solve_node`` on the winner gives exactly it)."""
    res = view.results.get(q.rkey)
    if res is not None:
        if res.cost is None:
            return None
        cost, f = res.cost, res.comps[2]
    elif q.n == (1,) and not q.shape.uuid_filtered:
        # one unit: the first cheapest class pattern, as ``_solve`` takes it (no answer object built)
        memo = q.units
        best: Pattern | None = None
        for gr in view.groups:
            uid = gr.info.uid
            pat = memo[uid] if uid in memo else _unit_pattern(ctx, gr, q)
            if pat is not None and (best is None or pat.cost < best.cost):
                best = pat
        if best is None:
            return None
        cost, f = best.cost, best.comps[2]
    else:
        got = None if q.shape.uuid_filtered else ctx.shared.get((view.signature, q.rkey))
        res = got[0] if got is not None else _base(ctx, view, q)
        if res.cost is None:
            return None
        cost, f = res.cost, res.comps[2]
    extra = node_cost(q.shape, view) * NODE_POLICY_MULT
    fextra = node_frag(ctx, view, q) if ctx.host_terms else 0
    return cost + extra * ctx.weights[3] + fextra * ctx.weights[2], f + fextra


def _unit_pattern(ctx: Context, gr: GpuGroup, q: Query) -> Pattern | None:
    """The class's best pattern for one unit of the pod (None: it may not or cannot serve it); kept
    per query and class."""
    pat = None
    if _allowed(ctx, gr, q) is None:
        got = best_unit(ctx, gr.info, q.containers[0], q.shape.gpu_policy)
        pat = got[0] if got is not None else None
    q.units[gr.info.uid] = pat
    return pat


def lower_bound(ctx: Context, view: NodeView, q: Query) -> tuple[int, int] | None:
    """For a one-container pod of ``k`` units without UUID filters: ``(num, den)`` such that the
    node's :func:`node_score` cost is at least ``num / den``, when the node is sure to be feasible
    (so it needs no reason); None otherwise.

    The per-node answer is ``min sum_g copies_g[k_g]`` over the groups (``sum k_g = k``, each
    ``k_g`` 0 or a count ``copies_g`` has), and ``copies_g[a] >= a * r_g`` with
    ``r_g = min_a copies_g[a] / a``, so the answer is at least ``k * min_g r_g``. Feasible for sure:
    one group alone hosts all ``k``, or every group hosts every count up to its most and those
    add up to ``k``. A few lookups per node, where the exact per-node solve costs tens of
    microseconds: :func:`solve_single` skips the solve where the bound cannot beat the best so far.
    """
    k = q.n[0]
    ratios = q.ratios
    best: tuple[int, int] | None = None
    alone = False
    closed = True
    total = 0
    for i, key in enumerate(view.signature):  # (class id, GPU count) per group
        if key in ratios:
            got = ratios[key]
        else:
            got = ratios[key] = _ratio(ctx, view.groups[i], q, k, key[1])
        if got is None:
            continue
        num, den, most, contiguous = got
        alone = alone or most >= k
        closed = closed and contiguous
        total += most
        if best is None or num * best[1] < best[0] * den:
            best = (num, den)
    if best is None or not (alone or (closed and total >= k)):
        return None
    extra = node_cost(q.shape, view) * NODE_POLICY_MULT * ctx.weights[3]
    if ctx.host_terms:
        extra += node_frag(ctx, view, q) * ctx.weights[2]
    return k * best[0] + extra * best[1], best[1]


def _ratio(ctx: Context, gr: GpuGroup, q: Query, k: int, m: int) -> tuple[int, int, int, bool] | None:
    """The class's least cost per unit over ``copies`` with ``m`` GPUs (numerator, units), the most
    units it hosts, and whether it hosts every count from 1 to that (None: it hosts none)."""
    memo_t = q.tables
    uid = gr.info.uid
    if uid in memo_t:
        t = memo_t[uid]
    else:
        t = None if _allowed(ctx, gr, q) is not None else \
            table(ctx, gr.info, q.containers, q.n, q.shape.gpu_policy, q.ckey)
        memo_t[uid] = t
    if t is None or not t.patterns:
        return None
    cp = t.copies.get(m)
    if cp is None:
        cp = copies(t, m, radix(ctx, q.n))
    best: tuple[int, int] | None = None
    hosted = 0
    for a in range(1, k + 1):
        cell = cp[a]
        if cell is not None:
            hosted += 1
            most = a
            if best is None or cell[0] * best[1] < best[0] * a:
                best = (cell[0], a)
    if best is None:
        return None
    return best[0], best[1], most, hosted == most


def _shared(ctx: Context, view: NodeView, q: Query) -> NodeResult:
    """The node's answer, shared by every node with the same GPU classes and counts (identical
    nodes are solved once per pod shape; the answer is re-bound to this node's GPUs)."""
    key = (view.signature, q.rkey)
    shared = ctx.shared
    got = shared.get(key)
    if got is None:
        res = _solve(ctx, view, view.node, q, per_gpu=False)
        if len(shared) >= SHARED_LIMIT:  # bounded on its own: never forces a trim of the other tables
            shared.clear()
        shared[key] = (res, view.groups)  # re-bound lazily, on the first hit
        return res
    res, groups = got
    pos = {id(gr): i for i, gr in enumerate(groups)}
    return NodeResult(view.node.name, res.cost, res.comps,
                      tuple((view.groups[pos[id(gr)]], pats) for gr, pats in res.choice))


def _solve(ctx: Context, view: NodeView, node: Node, q: Query, per_gpu: bool) -> NodeResult:
    pod, shape, containers = q.pod, q.shape, q.containers
    n = q.n
    if n == (1,):  # one unit: the best single pattern over the node's classes
        best1: tuple[int, GpuGroup, Pattern] | None = None
        memo = q.units
        for gr in view.groups:
            if per_gpu:
                if gr.info.key[-1] is False or gpu_allowed(pod, gr.gpus[0]) is not None:
                    continue
                got = best_unit(ctx, gr.info, containers[0], shape.gpu_policy)
                pat = got[0] if got is not None else None
            else:
                uid = gr.info.uid
                pat = memo[uid] if uid in memo else _unit_pattern(ctx, gr, q)
            if pat is not None and (best1 is None or pat.cost < best1[0]):
                best1 = (pat.cost, gr, pat)
        if best1 is None:
            return NodeResult(node.name, None)
        return NodeResult(node.name, best1[2].cost, best1[2].comps, ((best1[1], (best1[2],)),))
    rdx = radix(ctx, n)
    usable: list[tuple[GpuGroup, Any]] = []
    memo_t = q.tables
    for gr in view.groups:
        if per_gpu:
            if gr.info.key[-1] is False:
                continue
            if gpu_allowed(pod, gr.gpus[0]) is not None:
                continue
            t: PatternTable | None = table(ctx, gr.info, containers, n, shape.gpu_policy, q.ckey)
        else:
            uid = gr.info.uid
            if uid in memo_t:
                t = memo_t[uid]
            else:
                t = None if _allowed(ctx, gr, q) is not None else \
                    table(ctx, gr.info, containers, n, shape.gpu_policy, q.ckey)
                memo_t[uid] = t
        if t is not None and t.patterns:
            usable.append((gr, t))
    cur: list[tuple[int, tuple[tuple[int, tuple[int, ...]], ...]] | None] = [None] * rdx.size
    cur[0] = (0, ())
    for gi, (gr, t) in enumerate(usable):
        m = len(gr.gpus)
        cp = t.copies.get(m)
        if cp is None:
            cp = copies(t, m, rdx)
        cur = _convolve(cur, cp, gi, rdx)
    final = cur[rdx.full]
    if final is None:
        return NodeResult(node.name, None)
    choice = []
    comps: tuple[int, ...] = (0, 0, 0, 0, 0)
    for gi, pids in final[1]:
        gr, t = usable[gi]
        pats = tuple(t.patterns[i] for i in pids)
        for p in pats:
            comps = _add(comps, p.comps)
        choice.append((gr, pats))
    return NodeResult(node.name, final[0], comps, tuple(choice))


def unit_capacity(ctx: Context, view: NodeView, q: Query) -> int:
    """For a one-container pod without UUID filters: an upper bound on how many of its units the
    node can host (per class, the most one GPU takes, times the class's GPUs). Fewer than the pod
    asks: the node cannot take it, and the exact solve is skipped."""
    caps = q.caps
    c0 = q.containers[0]
    policy = q.shape.gpu_policy
    total = 0
    for gr in view.groups:
        uid = gr.info.uid
        c = caps.get(uid)
        if c is None:
            c = 0
            if _allowed(ctx, gr, q) is None:
                got = best_unit(ctx, gr.info, c0, policy)
                c = got[1] if got is not None else 0
            caps[uid] = c
        total += c * len(gr.gpus)
    return total


def reason_for(ctx: Context, view: NodeView, q: Query) -> str:
    """Why the pod cannot go on this node (cached with the node's answers)."""
    key = ("why", q.rkey)
    why = view.results.get(key)
    if why is None:
        why = explain(ctx, view, view.node, q.pod, q.containers, q.shape.uuid_filtered)
        view.results[key] = why
    return why  # type: ignore[no-any-return]


def quick_costs(ctx: Context, views: list[NodeView], q: Query) -> list[tuple[int, int] | None]:
    """Per node, for a one-container pod without UUID filters: (cost of the node's best GPU for one
    unit, how many units the node's GPUs can host). For a one-unit pod the cost is exactly what
    :func:`solve_node` gives (computed per class instead of per node); for more units it ranks nodes
    cheaply before the exact per-node solve."""
    per_class: dict[int, tuple[int, int] | None] = {}
    weight = ctx.weights[3] * NODE_POLICY_MULT
    c0 = q.containers[0]
    policy = q.shape.gpu_policy
    out: list[tuple[int, int] | None] = []
    for view in views:
        best: int | None = None
        cap = 0
        for gr in view.groups:
            uid = gr.info.uid
            if uid in per_class:
                c = per_class[uid]
            else:
                c = None
                if _allowed(ctx, gr, q) is None:
                    got = best_unit(ctx, gr.info, c0, policy)
                    if got is not None:
                        c = (got[0].cost, got[1])
                per_class[uid] = c
            if c is not None:
                cap += c[1] * len(gr.gpus)
                if best is None or c[0] < best:
                    best = c[0]
        out.append(None if best is None else
                   (best + node_cost(q.shape, view) * weight + node_frag(ctx, view, q) * ctx.weights[2], cap))
    return out


def _convolve(cur: list[tuple[int, tuple[tuple[int, tuple[int, ...]], ...]] | None],
              cp: list[tuple[int, tuple[int, ...]] | None], gi: int, rdx: Radix
              ) -> list[tuple[int, tuple[tuple[int, tuple[int, ...]], ...]] | None]:
    out = list(cur)
    for i, a in enumerate(cur):
        if a is None:
            continue
        row = rdx.add[i] if rdx.add else None
        for j in range(1, len(cp)):
            b = cp[j]
            if b is None:
                continue
            k = row[j] if row is not None else rdx._add(i, j)
            if k < 0:
                continue
            c = a[0] + b[0]
            old = out[k]
            if old is None or c < old[0]:
                out[k] = (c, (*a[1], (gi, b[1])))
    return out


def _plus(comps: tuple[int, ...], policy_extra: int, frag_extra: int = 0) -> tuple[int, ...]:
    return (comps[0], comps[1], comps[2] + frag_extra, comps[3] + policy_extra, comps[4])


def _add(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(x + y for x, y in zip(a, b, strict=True))


__all__ = ["NodeResult", "Query", "Radix", "lower_bound", "make_query", "node_cost", "node_frag", "node_score",
           "quick_costs", "reason_for", "solve_node", "unit_capacity"]
