"""One owner per objective level: for each level, the exact per-node cost the DP adds up, the
solver-independent evaluation, and the CP-SAT expression of the batch model give the same number
on random small instances; and per level, CP-SAT finds the DP's optimum feasible and anything
better infeasible (with the higher levels fixed)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ortools.sat.python import cp_model
from test_planner_props import TEMPLATES, clusters, pods

from models.plan import Plan
from models.requests import PodRequest
from models.types import ClusterState, HostUsage, Node
from models.validate import validate
from solver import PlannerConfig, Workload, evaluate, plan
from solver.planner.batch import _hint, _share_patterns_of, pod_types
from solver.planner.batch_model import BatchModel
from solver.planner.context import context_for
from solver.planner.evaluate import placed_weights
from solver.planner.levels import _expr, level_value
from solver.planner.objective import LEVELS

LEVEL_NAMES = ("reconfigurations", "template_order", "fragmentation", "policy", "waste")
#: a workload with host ratios and CPU pressure, so the fragmentation level's node terms count
HOST_WORKLOAD = Workload((((None, 25, 0), 3.0), ((None, 50, 0), 2.0), ((4000, None, 0), 2.0), ((None, None, 0), 1.0)),
                         cpu_per_gpu_milli=8.0, mem_per_gpu_milli=32.0, cpu_pressure=0.5,
                         cpu_tail=((2000, 0.6), (8000, 0.2), (16000, 0.0)))
CONFIGS = [PlannerConfig(), PlannerConfig(workload=HOST_WORKLOAD)]
SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def with_hosts(draw: Any, state: ClusterState) -> ClusterState:
    nodes = []
    for n in state.nodes:
        if draw(st.booleans()):
            cpu = draw(st.sampled_from([8000, 32000, 64000]))
            mem = draw(st.sampled_from([32768, 131072]))
            used = HostUsage("x/used", draw(st.integers(0, cpu // 2)), draw(st.integers(0, mem // 2)))
            n = replace(n, cpu_milli=cpu, memory_mib=mem, host=(used,))
        nodes.append(n)
    return ClusterState(tuple(nodes))


@st.composite
def host_pods(draw: Any) -> PodRequest:
    p = draw(pods("p", 3, 2))
    return replace(p, cpu_milli=draw(st.sampled_from([0, 1000, 6000])),
                   host_memory_mib=draw(st.sampled_from([0, 4096, 16384])))


def batch_model_of(state: ClusterState, pod: PodRequest, cfg: PlannerConfig, p: Plan) -> tuple[BatchModel, Any]:
    ctx = context_for(cfg, state.layouts_any)
    types = pod_types(pod, (), placed_weights([pod]))
    for t in types:
        t.nodes = {n.name for n in state.nodes if n.host_fit_problem(pod.cpu_milli, pod.host_memory_mib) is None}
    bm = BatchModel(ctx, state, types, _share_patterns_of(p, types)).build()
    return bm, _hint(bm, p, types)


def test_every_level_has_one_module() -> None:
    assert set(LEVELS) == set(PlannerConfig().objective)
    for name, mod in LEVELS.items():
        assert name == mod.NAME
        assert callable(mod.cpsat_terms)


@pytest.mark.parametrize("level", LEVEL_NAMES)
@SETTINGS
@given(data=st.data())
def test_dp_cost_evaluation_and_cpsat_expression_agree(level: str, data: Any) -> None:
    cfg = data.draw(st.sampled_from(CONFIGS))
    state = data.draw(with_hosts(data.draw(clusters(2, 3))))
    pod = data.draw(host_pods())
    p = plan(state, pod, cfg)
    reqs = {pod.key: pod}
    assert validate(state, p, reqs, TEMPLATES) == []
    if not p.placed:
        return
    dp = {s.name: s.value for s in p.stages}[level]  # the DP's own sum of per-node costs
    assert float(evaluate(state, p, reqs, cfg)[level]) == dp
    bm, hint = batch_model_of(state, pod, cfg, p)
    assert float(level_value(bm, level, hint)) == dp


def _solve_with(bm: BatchModel, fixed: dict[str, int], level: str, limit: int) -> Any:
    m = bm.m.clone()
    for lv, v in fixed.items():
        m.add(_expr(bm, lv) == v)
    m.add(_expr(bm, level) <= limit)
    s = cp_model.CpSolver()
    s.parameters.num_workers = 1
    s.parameters.max_time_in_seconds = 10
    return s.solve(m)


@pytest.mark.parametrize("level", LEVEL_NAMES)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_dp_optimum_is_feasible_and_anything_better_infeasible(level: str, data: Any) -> None:
    cfg = data.draw(st.sampled_from(CONFIGS))
    state = data.draw(with_hosts(data.draw(clusters(2, 2))))
    pod = data.draw(host_pods())
    p = plan(state, pod, cfg)
    if not p.placed:
        return
    values = {s.name: int(s.value) for s in p.stages}
    order = [o for o in cfg.objective if o != "placed"]
    fixed = {lv: values[lv] for lv in order[:order.index(level)]}
    bm, _ = batch_model_of(state, pod, cfg, p)
    assert _solve_with(bm, fixed, level, values[level]) in (cp_model.OPTIMAL, cp_model.FEASIBLE)
    assert _solve_with(bm, fixed, level, values[level] - 1) == cp_model.INFEASIBLE


def test_placed_level_counts_priority_weighted_pods() -> None:
    from solver.planner.objective import placed

    a = PodRequest("t", "a", priority=0)
    b = PodRequest("t", "b", priority=100)
    c = PodRequest("t", "c", priority=100)
    assert placed.weights([a, b, c]) == {"t/a": 1, "t/b": 2, "t/c": 2}
    terms: list[tuple[Any, int]] = []
    placed.cpsat_terms(terms, "v", 2)
    assert terms == [("v", 2)]


def test_node_term_is_zero_without_host_data() -> None:
    from solver.planner.objective import fragmentation

    ctx = context_for(PlannerConfig(workload=HOST_WORKLOAD), False)
    n = Node("n", clusters_example().nodes[0].mode, clusters_example().nodes[0].gpus)
    assert fragmentation.node(ctx, n, 1000, (), 1000, 1000) == 0


def clusters_example() -> ClusterState:
    from solver.bench import build_cluster

    return build_cluster(1, 2)
