"""The batch CP-SAT model (see :mod:`.batch` for its shape). Building only; solving is in
:mod:`.levels`."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from ortools.sat.python import cp_model

from models.requests import ContainerRequest, PodRequest, gpu_allowed, share_fit_problem
from models.types import ClusterState, Gpu

from .context import COMPONENTS, ClassInfo, Context
from .objective import fragmentation, placed, policy, reconfigurations, template_order, waste
from .objective.reconfigurations import is_partial
from .patterns import KEEP, gpu_unit_cost, mig_split_left, partial_options
from .shapes import Shape, mig_demand, serving, share_demand
from .views import build_view, node_view

#: At most this many hami-core patterns per GPU class (fewest units first; the greedy plan's own
#: patterns are always added). The cap only drops denser packings: every pattern is valid.
SHARE_PATTERN_CAP = 24

SharePattern = tuple[tuple[tuple[int, int], int], ...]  # ((type, container), units) ...


@dataclass
class PodType:
    index: int
    shape: Shape
    priority: int
    pods: list[PodRequest]
    weight: int
    containers: tuple[ContainerRequest, ...]
    primary: bool = False
    nodes: set[str] = field(default_factory=set)


@dataclass
class Group:
    """One GPU class on one node, with its pattern-count and unit variables."""

    node: str
    info: ClassInfo
    gpus: tuple[Gpu, ...]
    types: list[int]
    patterns: list[tuple[int, tuple[Any, ...], Any]] = field(default_factory=list)  # (option, h, var)
    x: dict[tuple[int, int, str], Any] = field(default_factory=dict)  # (type, container, profile) -> var


class BatchModel:
    def __init__(self, ctx: Context, state: ClusterState, types: list[PodType],
                 share_hints: dict[str, SharePattern] | None = None) -> None:
        self.ctx = ctx
        self.state = state
        self.types = types
        self.share_hints = share_hints or {}
        self.m = cp_model.CpModel()
        self.groups: list[Group] = []
        self.z: dict[tuple[str, int], Any] = {}
        self.placed: dict[int, Any] = {}
        self.links: list[tuple[Any, Any]] = []  # (bool, pattern var): bool = pattern used
        self.terms: dict[str, list[tuple[Any, int]]] = {c: [] for c in ("placed", *COMPONENTS)}

    # ---- building
    def build(self) -> BatchModel:
        m = self.m
        nodes: dict[str, list[int]] = defaultdict(list)
        for t in self.types:
            for n in t.nodes:
                nodes[n].append(t.index)
        for name in sorted(nodes):
            self._node(name, sorted(nodes[name]))
        for t in self.types:
            zs = [v for (_, k), v in self.z.items() if k == t.index]
            pv = m.new_int_var(0, len(t.pods), f"placed_{t.index}")
            m.add(pv == sum(zs))
            self.placed[t.index] = pv
            placed.cpsat_terms(self.terms["placed"], pv, t.weight)
            if t.primary:
                m.add(pv == 1)
        return self

    def _node(self, name: str, tks: list[int]) -> None:
        m = self.m
        node = self.state.node(name)
        filtered = [self.types[k].pods[0] for k in tks if self.types[k].shape.uuid_filtered]
        if filtered:  # UUID annotations: split classes so that a class is allowed or not as a whole
            view = build_view(self.ctx, node, split=lambda g: tuple(gpu_allowed(p, g) is None for p in filtered))
        else:
            view = node_view(self.ctx, node)
        for k in tks:
            t = self.types[k]
            z = m.new_int_var(0, len(t.pods), f"z_{name}_{k}")
            self.z[(name, k)] = z
            policy.cpsat_terms(self.terms["policy"], z, policy.node(view.usage, t.shape.node_policy))
            if self.ctx.workload.cpu_per_gpu_milli or self.ctx.workload.mem_per_gpu_milli:
                p0 = t.pods[0]
                fragmentation.cpsat_terms(self.terms["fragmentation"], z, fragmentation.node(
                    self.ctx, node, view.free_gpu(self.ctx), t.containers, p0.cpu_milli, p0.host_memory_mib))
        units: dict[tuple[int, int], list[Any]] = defaultdict(list)
        for gr in view.groups:
            if gr.info.kind == "unknown":
                continue
            allowed = [k for k in tks if gpu_allowed(self.types[k].pods[0], gr.gpus[0]) is None]
            if not allowed:
                continue
            g = Group(name, gr.info, gr.gpus, allowed)
            if gr.info.kind == "mig":
                self._mig_group(g, units)
            else:
                self._share_group(g, units)
            self.groups.append(g)
        for k in tks:
            for j, c in enumerate(self.types[k].containers):
                us = units.get((k, j), [])
                m.add(sum(us) == self.z[(name, k)] * c.count) if us else m.add(self.z[(name, k)] == 0)
        for axis, cap, used in ((0, node.cpu_milli, node.cpu_used_milli), (1, node.memory_mib, node.memory_used_mib)):
            demand = [(self.z[(name, k)], self.types[k].shape.host[axis]) for k in tks
                      if self.types[k].shape.host[axis]]
            if cap is not None and demand:  # host CPU / memory (NodeResourcesFit)
                m.add(sum(z * d for z, d in demand) <= max(0, cap - used))

    def _mig_group(self, g: Group, units: dict[tuple[int, int], list[Any]]) -> None:
        m = self.m
        info = g.info
        mi = info.model_info
        assert mi is not None
        model = mi.gpu_model
        serve: dict[tuple[int, int], frozenset[str]] = {}
        reqs: dict[tuple[int, int], int] = {}
        for k in g.types:
            for j, c in enumerate(self.types[k].containers):
                serve[(k, j)] = serving(model, c)
                reqs[(k, j)] = mig_demand(c, model)[0]
        useful: set[str] = set().union(*serve.values()) if serve else set()
        max_units = sum(len(self.types[k].pods) * sum(c.count for c in self.types[k].containers) for k in g.types)
        options: list[tuple[int, dict[str, int], dict[str, int], int]] = []
        if info.free:
            options.append((KEEP, info.layout, info.held, 0))
        if info.idle:
            for i, o in enumerate(mi.options):
                lay = dict(o.counts)
                if lay != info.layout:
                    options.append((i, lay, {}, o.rank))
        options.extend((opt, lay, held, rank) for opt, lay, held, _, rank in partial_options(info))
        count = len(g.gpus)
        cap: dict[str, list[tuple[Any, int]]] = defaultdict(list)
        ws = []
        split_left = mig_split_left(info)  # deviceSplitCount caps units per GPU (HAMi)
        for opt, layout, held0, _rank in options:
            free = {p: n - held0.get(p, 0) for p, n in layout.items() if p in useful and n - held0.get(p, 0) > 0}
            for h in vectors(sorted(free), free, min(max_units, split_left)):
                if not h:
                    continue  # an untouched GPU (the slack of sum(w) <= count); a re-cut placing nothing
                after = dict(held0)
                for p, n in h:
                    after[p] = after.get(p, 0) + n
                v = m.new_int_var(0, count, "")
                ws.append(v)
                g.patterns.append((opt, h, v))
                for p, n in h:
                    cap[p].append((v, n))
                reconfigurations.cpsat_terms(self.terms["reconfigurations"], v, opt, info.idle)
                template_order.cpsat_terms(self.terms["template_order"], v, opt,
                                           template_order.keep_order(mi.options, layout, info.idle, h)
                                           if opt == KEEP else 0 if is_partial(opt) else mi.options[opt].order(h))
                fragmentation.cpsat_terms(self.terms["fragmentation"], v,
                                          fragmentation.mig_pattern(self.ctx, info, layout, after))
        if ws:
            m.add(sum(ws) <= count)
        mem = {p.name: p.memory_mib for p in model.profiles}
        for (k, j), ps in serve.items():
            t = self.types[k]
            top = len(t.pods) * t.containers[j].count
            gcost = gpu_unit_cost(info, t.shape.gpu_policy)
            for p in sorted(ps):
                if not cap.get(p):
                    continue
                x = m.new_int_var(0, top, "")
                g.x[(k, j, p)] = x
                units[(k, j)].append(x)
                policy.cpsat_terms(self.terms["policy"], x, gcost)
                waste.cpsat_terms(self.terms["waste"], x, mem[p], reqs[(k, j)])
                fragmentation.cpsat_terms(self.terms["fragmentation"], x,
                                          fragmentation.unit(self.ctx, info, t.containers[j]))
        for p, vs in cap.items():
            xs = [x for (_, _, q), x in g.x.items() if q == p]
            m.add(sum(xs) == sum(v * c for v, c in vs))

    def _share_group(self, g: Group, units: dict[tuple[int, int], list[Any]]) -> None:
        m = self.m
        info = g.info
        rep = g.gpus[0]
        keys = [(k, j) for k in g.types for j in range(len(self.types[k].containers))]
        dem = {(k, j): share_demand(self.types[k].containers[j], rep) for k, j in keys}
        limit = {(k, j): len(self.types[k].pods) for k, j in keys}
        pats = share_vectors(rep, keys, dem, limit)
        for gpu in g.gpus:
            b = self.share_hints.get(gpu.uuid)
            if b and b not in pats and all(kj in dem for kj, _ in b):
                pats.append(b)
        count = len(g.gpus)
        per_key: dict[tuple[int, int], list[tuple[Any, int]]] = defaultdict(list)
        ws = []
        for b in pats:
            extra = [dem[kj] for kj, c in b for _ in range(c)]
            v = m.new_int_var(0, count, "")
            ws.append(v)
            g.patterns.append((KEEP, b, v))
            fragmentation.cpsat_terms(self.terms["fragmentation"], v,
                                      fragmentation.share_pattern(self.ctx, info, extra))
            for kj, c in b:
                per_key[kj].append((v, c))
                if c >= 2:  # distinct GPUs per container: a GPU holds <= z units of one container type
                    used_b = m.new_bool_var("")
                    m.add(v <= count * used_b)
                    m.add(self.z[(g.node, kj[0])] >= c).only_enforce_if(used_b)
                    self.links.append((used_b, v))
        if ws:
            m.add(sum(ws) <= count)
        for kj, vs in per_key.items():
            k, j = kj
            t = self.types[k]
            x = m.new_int_var(0, len(t.pods) * t.containers[j].count, "")
            g.x[(k, j, "")] = x
            units[kj].append(x)
            m.add(x == sum(v * c for v, c in vs))
            policy.cpsat_terms(self.terms["policy"], x, gpu_unit_cost(info, t.shape.gpu_policy))
            credit = fragmentation.unit(self.ctx, info, t.containers[j])
            fragmentation.cpsat_terms(self.terms["fragmentation"], x, credit)

    # ---- access
    def variables(self) -> list[Any]:
        out = list(self.z.values()) + list(self.placed.values())
        for g in self.groups:
            out.extend(v for _, _, v in g.patterns)
            out.extend(g.x.values())
        out.extend(b for b, _ in self.links)
        return out

    def upper(self, var: Any) -> int:
        dom = self.m.proto.variables[var.index].domain
        return int(dom[len(dom) - 1])  # (the proto's repeated field takes no negative index)


def vectors(profiles: list[str], free: dict[str, int], max_units: int) -> list[tuple[tuple[str, int], ...]]:
    """Every ``h`` (profile -> newly held count) with ``0 <= h <= free`` and total <= ``max_units``."""
    out: list[tuple[tuple[str, int], ...]] = []

    def rec(i: int, left: int, cur: list[tuple[str, int]]) -> None:
        if i == len(profiles):
            out.append(tuple(cur))
            return
        p = profiles[i]
        for c in range(min(free[p], left) + 1):
            if c:
                cur.append((p, c))
            rec(i + 1, left - c, cur)
            if c:
                cur.pop()

    rec(0, max_units, [])
    return out


def share_vectors(g: Gpu, keys: list[tuple[int, int]], dem: dict[tuple[int, int], tuple[int, int]],
                  limit: dict[tuple[int, int], int]) -> list[SharePattern]:
    """Multisets of container types one hami-core GPU can take together, fewest units first, at most
    :data:`SHARE_PATTERN_CAP` of them."""
    out: list[SharePattern] = []
    level: list[tuple[int, list[tuple[int, int]], dict[tuple[int, int], int]]] = [(0, [], {})]
    while level and len(out) < SHARE_PATTERN_CAP:
        nxt = []
        for last, extra, cnt in level:
            for i in range(last, len(keys)):
                kj = keys[i]
                if cnt.get(kj, 0) >= limit[kj]:
                    continue
                if share_fit_problem(g, dem[kj][0], dem[kj][1], tuple(extra)) is not None:
                    continue
                c2 = dict(cnt)
                c2[kj] = c2.get(kj, 0) + 1
                out.append(tuple(sorted(c2.items())))
                nxt.append((i, [*extra, dem[kj]], c2))
                if len(out) >= SHARE_PATTERN_CAP:
                    break
            if len(out) >= SHARE_PATTERN_CAP:
                break
        level = nxt
    return out
