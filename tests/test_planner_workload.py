"""The planner's explicit inputs and knobs: the workload estimate (frozen, learned online), the tie
rule, and the one re-layout rule (models.relayout) shared with the validator."""

from __future__ import annotations

import pytest

from models.catalog import model
from models.layouts import Slot, make_layout
from models.plan import LayoutChange, Plan
from models.relayout import layout_change_problem, may_change_layout
from models.requests import ContainerRequest, PodRequest
from models.types import ClusterState, Gpu, MigInstance, Node, NodeMode, gpu_uuid
from models.validate import validate
from solver import PRIOR, OnlineWorkload, PlannerConfig, Workload, plan


def _pod(name: str, pct: int, cpu: int = 0) -> PodRequest:
    return PodRequest("t", name, containers=(ContainerRequest("c", 0, 1, None, pct, pct),), cpu_milli=cpu)


def test_workload_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="at least one demand"):
        Workload(())
    with pytest.raises(ValueError, match="weights must be positive"):
        Workload((((None, 10, 0), 0.0),))
    with pytest.raises(ValueError, match="bad demand"):
        Workload((((None, 150, 0), 1.0),))
    with pytest.raises(ValueError, match="cpu_pressure"):
        Workload((((None, 10, 0), 1.0),), cpu_pressure=2.0)
    with pytest.raises(ValueError, match="Workload"):
        PlannerConfig(workload=((125, 4),))  # type: ignore[arg-type]


def test_online_estimate_is_the_prior_until_enough_pods_then_learned_on_schedule() -> None:
    ow = OnlineWorkload(min_pods=64, prior_pods=16, cluster_cpu_milli=100_000, cluster_gpu_milli=10_000)
    for i in range(63):
        ow.observe(_pod(f"p{i}", 30, cpu=2000))
    assert ow.estimate() is PRIOR
    ow.observe(_pod("p63", 30, cpu=2000))
    w = ow.estimate()
    assert w is not PRIOR and w.pods == 64
    weights = dict(w.mix)
    assert weights[(None, 30, 30)] == pytest.approx(64 / 80, rel=5e-3)  # 64 seen (slightly decayed) + 16 prior
    assert w.cpu_per_gpu_milli == pytest.approx(2000 / 300)
    # 64 x 2000 CPU of 100000 vs 64 x 300 GPU milli of 10000: pressure 1.28/1.92 < 1: term off
    assert w.cpu_pressure == 0.0
    ow.observe(_pod("p64", 50))
    assert ow.estimate() is w  # unchanged until the next refresh point (256)


def test_online_counts_decay() -> None:
    ow = OnlineWorkload(min_pods=1, prior_pods=0.0, half_life=10)
    for i in range(200):
        ow.observe(_pod(f"a{i}", 10))
    for i in range(56):
        ow.observe(_pod(f"b{i}", 90))
    w = dict(ow.estimate().mix)  # refreshed at 256: the recent 90s dominate though fewer
    assert w[(None, 90, 90)] > 0.95


def test_workload_argument_overrides_the_config() -> None:
    m = model("A100-SXM4-80GB")
    g0 = Gpu(gpu_uuid("n", 0), 0, m.name, NodeMode.HAMI_CORE, m.memory_mib, split=20)
    state = ClusterState((Node("n", NodeMode.HAMI_CORE, (g0,)),))
    a = plan(state, _pod("p", 30))
    b = plan(state, _pod("p", 30), workload=Workload((((None, 70, 70), 1.0),)))
    fa = {s.name: s.value for s in a.stages}["fragmentation"]
    fb = {s.name: s.value for s in b.stages}["fragmentation"]
    assert fa != fb


def _two_nodes() -> ClusterState:
    m = model("A100-SXM4-80GB")
    nodes = []
    for name in ("a", "b"):
        nodes.append(Node(name, NodeMode.HAMI_CORE,
                          (Gpu(gpu_uuid(name, 0), 0, m.name, NodeMode.HAMI_CORE, m.memory_mib),)))
    return ClusterState(tuple(nodes))


def test_tie_rule_name_or_given_order() -> None:
    state = _two_nodes()
    assert plan(state, _pod("p", 30), nodes=["b", "a"]).placements[0].node == "a"
    cfg = PlannerConfig(tie="order")
    assert plan(state, _pod("p", 30), cfg, nodes=["b", "a"]).placements[0].node == "b"
    assert plan(state, _pod("p", 30), cfg).placements[0].node == "a"  # the state's order
    with pytest.raises(ValueError, match="tie rule"):
        PlannerConfig(tie="random")
    with pytest.raises(ValueError, match="tie_quantum"):
        PlannerConfig(tie_quantum=0)


def _mig_gpu(held: bool) -> Gpu:
    m = model("A100-SXM4-40GB")
    lay = make_layout([("3g.20gb", 4), ("4g.20gb", 0)])
    return Gpu(gpu_uuid("n", 0), 0, m.name, NodeMode.MIG, m.memory_mib,
               instances=tuple(MigInstance(s, "t/x/0/0" if held and s.start == 4 else None) for s in lay))


def test_one_relayout_rule() -> None:
    idle, busy = _mig_gpu(False), _mig_gpu(True)
    other = make_layout([("7g.40gb", 0)])
    assert may_change_layout(idle) and may_change_layout(idle, other)
    assert not may_change_layout(busy) and "held by t/x/0/0" in (layout_change_problem(busy, other) or "")
    keep = make_layout([("3g.20gb", 4), ("2g.10gb", 0)])
    assert may_change_layout(busy, keep, incremental=True)
    assert not may_change_layout(busy, other, incremental=True)
    share = Gpu("GPU-s", 0, "A100-SXM4-40GB", NodeMode.HAMI_CORE, 40960)
    assert layout_change_problem(share) == "layout change on a hami-core GPU"


def test_validator_uses_the_rule() -> None:
    busy = _mig_gpu(True)
    state = ClusterState((Node("n", NodeMode.MIG, (busy,)),))
    ch = LayoutChange("n", busy.uuid, make_layout([Slot("7g.40gb", 0)]), 0)
    problems = validate(state, Plan((), (ch,)), {})
    want = layout_change_problem(busy, ch.layout)
    assert want is not None and [v.message for v in problems if v.kind == "layout-busy"] == [
        f"node n GPU {busy.uuid}: {want}"]
