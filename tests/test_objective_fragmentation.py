"""The fragmentation level: cutting-stock prices (hami-core and MIG), the share-pairing loss, the
host stranding and CPU-pressure node terms, and what they make the planner choose."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.catalog import model
from models.requests import ContainerRequest, PodRequest
from models.types import ClusterState, Gpu, HostUsage, MigInstance, Node, NodeMode, ShareUsage, gpu_uuid
from models.validate import validate
from solver import PlannerConfig, Workload, plan
from solver.planner.context import context_for
from solver.planner.objective import fragmentation
from solver.planner.objective.pricing import knapsack, mig_prices, share_prices

#: the openb default trace's most frequent share sizes (milli) with their counts
OPENB_MIX = {810: 1078, 470: 750, 320: 328, 650: 253, 230: 140, 460: 128, 160: 74}


def share_workload(mix: dict[int, int]) -> Workload:
    return Workload(tuple(((None, s // 10, s // 10), float(c)) for s, c in sorted(mix.items())))


def test_share_prices_are_the_cutting_stock_duals() -> None:
    prices = share_prices({float(k): float(v) for k, v in OPENB_MIX.items()})  # type: ignore[misc]
    assert prices[810] == pytest.approx(1.0)
    assert prices[470] == pytest.approx(0.5)
    assert prices[320] == pytest.approx(1 / 3)
    assert prices[650] == pytest.approx(2 / 3)
    k = knapsack(prices)
    assert max(k) <= 1.0 + 1e-9  # no pattern is worth more than one GPU (dual feasibility)


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.integers(50, 1000), st.floats(0.1, 100.0), min_size=1, max_size=6))
def test_share_prices_are_dual_feasible_and_the_loss_is_never_negative(mix: dict[int, float]) -> None:
    prices = share_prices(mix)
    k = knapsack(prices)
    assert k[1000] <= 1.0 + 1e-6
    for f in (200, 530, 1000):
        for s in mix:
            if s <= f:
                assert k[f] - k[s] - k[f - s] >= -1e-9  # K is superadditive


def test_mig_prices_for_small_requests_make_the_finest_layout_worth_a_gpu() -> None:
    m = model("A100-SXM4-80GB")
    profs = {p.name: p for p in m.profiles}
    serves = {P: frozenset(q for q in profs if profs[P].memory_mib >= profs[q].memory_mib) for P in profs}
    layouts = [{"1g.10gb": 7}, {"7g.80gb": 1}, {"3g.40gb": 2}]
    prices = mig_prices({"1g.10gb": 10.0}, layouts, serves)
    assert prices["1g.10gb"] == pytest.approx(1 / 7)


def _share_gpu(node: str, j: int, used_milli: int) -> Gpu:
    m = model("A100-SXM4-80GB")
    shares = (ShareUsage(f"x/u{j}/0/0", m.memory_mib * used_milli // 1000, used_milli // 10),) if used_milli else ()
    return Gpu(gpu_uuid(node, j), j, m.name, NodeMode.HAMI_CORE, m.memory_mib, split=20, shares=shares)


def _share_pod(milli: int, cpu: int = 0, mem: int = 0, name: str = "p") -> PodRequest:
    return PodRequest("t", name, containers=(ContainerRequest("c", 0, 1, None, milli // 10, milli // 10),),
                      cpu_milli=cpu, host_memory_mib=mem)


def test_share_goes_where_it_pairs_best() -> None:
    """A 320 share next to a 650 (leaves 30) keeps the packing value; next to a 470 it strands 210."""
    state = ClusterState((Node("n0", NodeMode.HAMI_CORE, (_share_gpu("n0", 0, 470), _share_gpu("n0", 1, 650))),))
    cfg = PlannerConfig(workload=share_workload(OPENB_MIX))
    p = plan(state, _share_pod(320), cfg)
    assert validate(state, p, {"t/p": _share_pod(320)}) == []
    assert p.placements[0].units[0].gpu_index == 1
    frag = {s.name: s.value for s in p.stages}["fragmentation"]
    assert frag == pytest.approx(0, abs=2)  # K(350) - K(320) - K(30) = 0: no packing value lost


def test_loss_is_k_f_minus_k_s_minus_k_rest() -> None:
    cfg = PlannerConfig(workload=share_workload(OPENB_MIX))
    ctx = context_for(cfg, False)
    state = ClusterState((Node("n0", NodeMode.HAMI_CORE, (_share_gpu("n0", 0, 470),)),))
    p = plan(state, _share_pod(320), cfg)
    k = ctx.share_values(model("A100-SXM4-80GB").memory_mib)
    want = k.value(530) - k.value(320) - k.value(210)
    assert {s.name: s.value for s in p.stages}["fragmentation"] == pytest.approx(want, abs=1)
    assert want > 100  # 1/2 - 1/3 of a GPU


def _host_node(name: str, cpu: int, used_cpu: int) -> Node:
    gpus = tuple(_share_gpu(name, j, 0) for j in range(2))
    return Node(name, NodeMode.HAMI_CORE, gpus, cpu, 262144, host=(HostUsage("x/used", used_cpu, 0),))


def test_stranding_sends_cpu_heavy_gpu_pods_to_cpu_rich_nodes() -> None:
    """Both nodes fit the pod; on the CPU-poor one its CPU would strand the other free GPU."""
    state = ClusterState((_host_node("a-poor", 16000, 4000), _host_node("b-rich", 96000, 0)))
    w = replace(share_workload(OPENB_MIX), cpu_per_gpu_milli=8.0, mem_per_gpu_milli=0.0)
    pod = _share_pod(1000 - 10, cpu=10000)
    assert plan(state, pod, PlannerConfig(workload=w)).placements[0].node == "b-rich"
    light = _share_pod(990, cpu=500, name="light")
    assert plan(state, light, PlannerConfig(workload=w)).placements[0].node == "a-poor"


def test_node_term_counts_the_change_of_stranded_gpu_capacity() -> None:
    w = Workload((((None, 50, 50), 1.0),), cpu_per_gpu_milli=10.0)
    ctx = context_for(PlannerConfig(workload=w), False)
    n = _host_node("n", 16000, 6000)  # 10000 CPU free, 2000 GPU free: 1000 stranded
    c = (ContainerRequest("c", 0, 1, None, 50, 50),)
    # after: 500 GPU per-mille for the pod, 4000 CPU: 1500 - 600 = 900 stranded
    assert fragmentation.node(ctx, n, 2000, c, 4000, 0) == (900 - 1000)


def test_cpu_pressure_term_weighs_gpus_left_without_cpu() -> None:
    base = Workload((((None, 50, 50), 1.0),), cpu_per_gpu_milli=0.001)
    hot = replace(base, cpu_pressure=1.0, cpu_tail=((4000, 0.5), (9000, 0.0)))
    n = _host_node("n", 16000, 6000)
    c = (ContainerRequest("c", 0, 1, None, 50, 50),)
    off = fragmentation.node(context_for(PlannerConfig(workload=base), False), n, 2000, c, 7000, 0)
    on = fragmentation.node(context_for(PlannerConfig(workload=hot), False), n, 2000, c, 7000, 0)
    assert on - off == round(1500 * 0.5 - 2000 * 0.0)  # C 10000 -> 3000: P(cpu > C) 0 -> 0.5


def test_mig_value_of_a_busy_gpu_is_its_free_instances() -> None:
    m = model("A100-SXM4-80GB")
    cfg = PlannerConfig()
    ctx = context_for(cfg, False)
    mi = ctx.model_info(m.name)
    assert mi is not None
    vals = ctx.mig_values(mi)
    assert 0 < vals.idle <= 1000
    lay = {"1g.10gb": 7}
    # a busy GPU keeps only its free instances' worth; a re-cuttable one the best layout's
    assert fragmentation.mig_frag(ctx, mi, lay, {"1g.10gb": 1}, False) == 1000 - 6 * vals.instance["1g.10gb"]
    assert fragmentation.mig_frag(ctx, mi, lay, {}, True) == 1000 - vals.idle
    # worths are rounded down: no layout's free instances are worth more than an idle GPU
    assert 7 * vals.instance["1g.10gb"] <= vals.idle
    assert fragmentation.mig_frag(ctx, mi, lay, {}, False) == 1000 - 7 * vals.instance["1g.10gb"]


def test_default_order_keeps_hami_first_match_even_with_a_learned_mix() -> None:
    """template_order sits above fragmentation: one unit on an empty GPU takes the first template
    that serves it whatever the workload estimate says."""
    m = model("A100-SXM4-40GB")
    state = ClusterState((Node("n0", NodeMode.MIG, (Gpu(gpu_uuid("n0", 0), 0, m.name, NodeMode.MIG, m.memory_mib),)),))
    pod = PodRequest("t", "p", containers=(ContainerRequest("c", 0, 1, 4000, None, 0),))
    big = Workload((((None, None, 0), 1.0),))
    a = plan(state, pod)
    b = plan(state, pod, PlannerConfig(workload=big))
    assert a.layout_changes[0].template_index == b.layout_changes[0].template_index
    hami = plan(state, pod, PlannerConfig(policy="hami-legacy"))
    assert a.layout_changes[0].template_index == hami.layout_changes[0].template_index


def test_busy_mig_gpu_with_held_instance_is_never_recut() -> None:
    m = model("A100-SXM4-40GB")
    g = Gpu(gpu_uuid("n0", 0), 0, m.name, NodeMode.MIG, m.memory_mib,
            instances=(MigInstance(__import__("models.layouts", fromlist=["Slot"]).Slot("7g.40gb", 0), "x/h/0/0"),))
    state = ClusterState((Node("n0", NodeMode.MIG, (g,)),))
    pod = PodRequest("t", "p", containers=(ContainerRequest("c", 0, 1, 4000, None, 0),))
    p = plan(state, pod)
    assert not p.placed and p.layout_changes == ()
