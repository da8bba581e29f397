"""Planner properties on small random clusters: every plan validates, its stage values are its
objective, it is lexicographically optimal (brute force), the single-unit template is HAMi's
first match, and the CP-SAT model agrees with the per-node decomposition."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.catalog import model
from models.config import builtin_device_config
from models.layouts import Slot
from models.plan import LayoutChange, Plan, PodPlacement, UnitAssignment, apply_plan
from models.requests import PodRequest, gpu_allowed, parse_pod, profile_serves, share_fit_problem
from models.types import ClusterState, Gpu, MigInstance, Node, NodeMode, ShareUsage, UnitKind, gpu_uuid
from models.validate import validate
from solver import PlannerConfig, evaluate, plan
from solver.planner.unitcost import share_fits

TEMPLATES = builtin_device_config()
MIG_MODELS = ["A30", "A100-SXM4-40GB", "A100-SXM4-80GB", "H100-80GB"]
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def gpus_for(draw: Any, name: str, mode: NodeMode, n: int) -> tuple[Gpu, ...]:
    out = []
    for j in range(n):
        m = model(draw(st.sampled_from(MIG_MODELS)))
        g = Gpu(gpu_uuid(name, j), j, m.name, mode, m.memory_mib, split=draw(st.integers(1, 4)))
        if mode is NodeMode.MIG:
            state = draw(st.sampled_from(["empty", "idle", "busy"]))
            if state != "empty":
                lay = draw(st.sampled_from(TEMPLATES.template_layouts(m))).layout
                held = set()
                if state == "busy":
                    held = set(draw(st.sets(st.integers(0, len(lay) - 1), min_size=1)))
                g = replace(g, instances=tuple(MigInstance(s, f"x/h{j}/0/{i}" if i in held else None)
                                               for i, s in enumerate(lay)))
        else:
            shares = []
            for i in range(draw(st.integers(0, 2))):
                shares.append(ShareUsage(f"x/s{j}/0/{i}", draw(st.sampled_from([2000, 8000, 16000])),
                                         draw(st.sampled_from([0, 10, 50]))))
            g = replace(g, shares=tuple(shares))
        out.append(g)
    return tuple(out)


@st.composite
def clusters(draw: Any, max_nodes: int = 2, max_gpus: int = 2) -> ClusterState:
    nodes = []
    for i in range(draw(st.integers(1, max_nodes))):
        mode = draw(st.sampled_from([NodeMode.MIG, NodeMode.MIG, NodeMode.HAMI_CORE]))
        name = f"n{i}"
        nodes.append(Node(name, mode, draw(gpus_for(name, mode, draw(st.integers(1, max_gpus))))))
    return ClusterState(tuple(nodes))


@st.composite
def pods(draw: Any, name: str = "p", max_units: int = 2, containers: int = 1) -> PodRequest:
    cs = []
    for ci in range(draw(st.integers(1, containers))):
        limits: dict[str, Any] = {"nvidia.com/gpu": draw(st.integers(1, max_units))}
        kind = draw(st.sampled_from(["mem", "mem", "pct", "whole"]))
        if kind == "mem":
            limits["nvidia.com/gpumem"] = draw(st.sampled_from([1000, 4000, 5000, 9000, 15000, 20000, 30000,
                                                                 45000, 70000]))
        elif kind == "pct":
            limits["nvidia.com/gpumem-percentage"] = draw(st.sampled_from([10, 25, 50]))
        if kind != "whole" and draw(st.booleans()):
            limits["nvidia.com/gpucores"] = draw(st.sampled_from([10, 30, 60]))
        cs.append({"name": f"c{ci}", "resources": {"limits": limits}})
    ann: dict[str, str] = {}
    mode = draw(st.sampled_from(["", "", "mig", "hami-core"]))
    if mode:
        ann["nvidia.com/vgpu-mode"] = mode
    ann["hami.io/node-scheduler-policy"] = draw(st.sampled_from(["binpack", "spread"]))
    ann["hami.io/gpu-scheduler-policy"] = draw(st.sampled_from(["binpack", "spread"]))
    return parse_pod({"metadata": {"name": name, "namespace": "t", "annotations": ann},
                      "spec": {"containers": cs}})


def vector(state: ClusterState, p: Plan, reqs: dict[str, PodRequest], cfg: PlannerConfig) -> tuple[int, ...]:
    v = evaluate(state, p, reqs, cfg)
    return tuple(-v[o] if o == "placed" else v[o] for o in cfg.objective)


# --------------------------------------------------------------------------- brute force


def brute_force(state: ClusterState, pod: PodRequest, cfg: PlannerConfig) -> tuple[int, ...] | None:
    """The lexicographic optimum over every valid single-pod plan, by enumeration."""
    reqs = {pod.key: pod}
    best: tuple[int, ...] | None = None
    units = pod.unit_ids()
    for node in state.nodes:
        per_gpu: list[list[tuple[Any, ...]]] = []
        for g in node.gpus:
            opts: list[tuple[Any, ...]] = [("keep",)]
            if g.mode is NodeMode.MIG and not g.busy:
                for t in TEMPLATES.template_layouts(g.gpu_model):
                    if t.layout != g.layout:
                        opts.append(("tpl", t))
            per_gpu.append(opts)
        for choice in itertools.product(*per_gpu):
            for p in _assignments(node, pod, units, choice):
                if validate(state, p, reqs, TEMPLATES):
                    continue
                v = vector(state, p, reqs, cfg)
                if best is None or v < best:
                    best = v
    return best


def _assignments(node: Node, pod: PodRequest, units: list[Any], choice: tuple[tuple[Any, ...], ...]) -> Any:
    changes = {}
    slots: list[list[Slot]] = []
    for g, opt in zip(node.gpus, choice, strict=True):
        if opt[0] == "tpl":
            changes[g.uuid] = LayoutChange(node.name, g.uuid, opt[1].layout, opt[1].index)
            slots.append(list(opt[1].layout))
        else:
            slots.append([i.slot for i in g.instances if i.free])
    gpus = list(node.gpus)

    def options(c: Any) -> list[tuple[int, Slot | None]]:
        out: list[tuple[int, Slot | None]] = []
        for gi, g in enumerate(gpus):
            if gpu_allowed(pod, g):
                continue
            if g.mode is NodeMode.MIG:
                m = g.gpu_model
                out.extend((gi, s) for s in slots[gi] if profile_serves(m, m.profile(s.profile), c))
            else:
                out.append((gi, None))
        return out

    def rec(i: int, picked: list[tuple[int, Slot | None]]) -> Any:
        if i == len(units):
            yield _plan(node, pod, units, picked, changes)
            return
        c, _ = units[i]
        prev = picked[-1] if i and units[i - 1][0] is c else None
        for o in options(c):
            if prev is not None and (o[0], o[1] or Slot("", -1)) <= (prev[0], prev[1] or Slot("", -1)):
                continue  # units of one container are interchangeable: increasing order only
            if o[1] is not None and any(o == q for q in picked):
                continue
            if o[1] is None:
                g = gpus[o[0]]
                if any(q[0] == o[0] and units[k][0] is c for k, q in enumerate(picked)):
                    continue
                extra = tuple((units[k][0].memory_for(g.memory_mib), units[k][0].cores)
                              for k, q in enumerate(picked) if q[0] == o[0])
                if share_fit_problem(g, c.memory_for(g.memory_mib), c.cores, extra):
                    continue
            yield from rec(i + 1, [*picked, o])

    yield from rec(0, [])


def _plan(node: Node, pod: PodRequest, units: list[Any], picked: list[Any], changes: dict[str, LayoutChange]
          ) -> Plan:
    used = {node.gpus[gi].uuid for gi, _ in picked}
    out = []
    for (c, u), (gi, s) in zip(units, picked, strict=True):
        g = node.gpus[gi]
        if s is None:
            out.append(UnitAssignment(pod.key, c.name, c.index, u, node.name, g.uuid, g.index, UnitKind.SHARE,
                                      c.memory_for(g.memory_mib), c.cores))
        else:
            m = g.gpu_model
            p = m.profile(s.profile)
            ch = changes.get(g.uuid)
            out.append(UnitAssignment(pod.key, c.name, c.index, u, node.name, g.uuid, g.index, UnitKind.MIG,
                                      p.memory_mib, m.core_percent(p), s, ch is not None,
                                      ch.template_index if ch else None))
    return Plan((PodPlacement(pod.key, True, node.name, tuple(out)),),
                tuple(ch for k, ch in changes.items() if k in used))


# --------------------------------------------------------------------------- properties


@SETTINGS
@given(st.data())
def test_plans_validate_and_report_their_objective(data: Any) -> None:
    state = data.draw(clusters(3, 3))
    cfg = PlannerConfig()
    for i in range(3):
        pod = data.draw(pods(f"p{i}", 3, 2))
        p = plan(state, pod, cfg)  # plan() raises PlannerError on an invalid plan
        reqs = {pod.key: pod}
        assert validate(state, p, reqs, TEMPLATES) == []
        if p.placed:
            assert p.status == "optimal"
            vals = evaluate(state, p, reqs, cfg)
            assert {s.name: s.value for s in p.stages} == {k: float(vals[k]) for k in cfg.objective}
            state = apply_plan(state, p)
        else:
            assert {n for n, _ in p.reasons} == {n.name for n in state.nodes}
            assert all(r for _, r in p.reasons)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters(2, 2), pods("p", 2, 2), st.sampled_from([
    PlannerConfig(),
    PlannerConfig(objective=("placed", "fragmentation", "reconfigurations", "template_order", "waste", "policy")),
    PlannerConfig(objective=("placed", "waste", "policy", "reconfigurations")),
]))
def test_plan_is_lexicographically_optimal(state: ClusterState, pod: PodRequest, cfg: PlannerConfig) -> None:
    if pod.units > 3:
        return
    p = plan(state, pod, cfg)
    best = brute_force(state, pod, cfg)
    if best is None:
        assert not p.placed
        return
    assert p.placed, p.reasons
    assert vector(state, p, {pod.key: pod}, cfg) == best


def _first_match(g: Gpu, pod: PodRequest) -> int | None:
    m = g.gpu_model
    c = pod.containers[0]
    for t in TEMPLATES.template_layouts(m):
        if any(profile_serves(m, m.profile(s.profile), c) for s in t.layout):
            return t.index
    return None


@SETTINGS
@given(clusters(3, 3), pods("p", 1, 1))
def test_single_unit_repartition_takes_the_first_matching_template(state: ClusterState, pod: PodRequest) -> None:
    p = plan(state, pod)
    for ch in p.layout_changes:
        g = state.gpu(ch.node, ch.gpu)
        assert ch.template_index == _first_match(g, pod)


@SETTINGS
@given(st.lists(st.sampled_from(MIG_MODELS), min_size=1, max_size=4), pods("p", 1, 1))
def test_single_unit_on_fresh_gpus_matches_hami_legacy(models_: list[str], pod: PodRequest) -> None:
    gpus = tuple(Gpu(gpu_uuid("n0", j), j, model(m).name, NodeMode.MIG, model(m).memory_mib)
                 for j, m in enumerate(models_))
    state = ClusterState((Node("n0", NodeMode.MIG, gpus),))
    ours = plan(state, pod)
    hami = plan(state, pod, PlannerConfig(policy="hami-legacy"))
    assert ours.placed == hami.placed
    if ours.placed:
        mine = {u.template_index for u in ours.placements[0].units}
        theirs = {u.template_index for u in hami.placements[0].units}
        if len({m for m in models_}) == 1:  # same model everywhere: the same geometry
            assert mine == theirs


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters(2, 3), pods("p", 3, 2))
def test_cpsat_model_agrees_with_the_decomposition(state: ClusterState, pod: PodRequest) -> None:
    dp = plan(state, pod)
    cp = plan(state, pod, PlannerConfig(engine="cpsat", time_budget_ms=5000))
    assert dp.placed == cp.placed
    if dp.placed:
        reqs = {pod.key: pod}
        cfg = PlannerConfig()
        assert cp.status == "optimal"
        assert vector(state, cp, reqs, cfg) == vector(state, dp, reqs, cfg)
        assert [s.value for s in cp.stages] == [s.value for s in dp.stages]


@SETTINGS
@given(clusters(2, 3), st.integers(0, 8000), st.integers(0, 100))
def test_fast_share_fit_matches_the_model(state: ClusterState, mem: int, cores: int) -> None:
    for n in state.nodes:
        for g in n.gpus:
            if g.mode is NodeMode.HAMI_CORE:
                assert share_fits(g, mem, cores) == (share_fit_problem(g, mem, cores) is None)
