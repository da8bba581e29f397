"""Planner behaviour: first-match templates, reuse before re-partitioning, batch lookahead, reasons,
bad input, time budget, candidate nodes, layouts-any."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from models.catalog import model
from models.config import builtin_device_config
from models.plan import apply_plan
from models.requests import PodRequest, parse_pod
from models.types import ClusterState, Gpu, MigInstance, Node, NodeMode, ShareUsage, gpu_uuid
from models.validate import validate
from solver import PlannerConfig, evaluate, plan

TEMPLATES = builtin_device_config()


def pod(name: str, mem: int | None = None, n: int = 1, mode: str = "", pct: int | None = None,
        cores: int | None = None, priority: int = 0, ann: dict[str, str] | None = None) -> PodRequest:
    limits: dict[str, Any] = {"nvidia.com/gpu": n}
    if mem is not None:
        limits["nvidia.com/gpumem"] = mem
    if pct is not None:
        limits["nvidia.com/gpumem-percentage"] = pct
    if cores is not None:
        limits["nvidia.com/gpucores"] = cores
    annotations = dict(ann or {})
    if mode:
        annotations["nvidia.com/vgpu-mode"] = mode
    return parse_pod({"metadata": {"name": name, "namespace": "t", "annotations": annotations},
                      "spec": {"priority": priority, "containers": [{"name": "c", "resources": {"limits": limits}}]}})


def mig_node(name: str, model_name: str = "A100-SXM4-40GB", n: int = 1) -> Node:
    m = model(model_name)
    return Node(name, NodeMode.MIG, tuple(Gpu(gpu_uuid(name, j), j, m.name, NodeMode.MIG, m.memory_mib)
                                          for j in range(n)))


def share_node(name: str, model_name: str = "A100-SXM4-80GB", n: int = 1) -> Node:
    m = model(model_name)
    return Node(name, NodeMode.HAMI_CORE, tuple(Gpu(gpu_uuid(name, j), j, m.name, NodeMode.HAMI_CORE,
                                                    m.memory_mib) for j in range(n)))


def held(node: Node, idx: int, template: int, held_slots: int) -> Node:
    g = node.gpus[idx]
    lay = TEMPLATES.template_layouts(g.gpu_model)[template].layout
    inst = tuple(MigInstance(s, f"x/old{i}/0/0" if i < held_slots else None) for i, s in enumerate(lay))
    gpus = list(node.gpus)
    gpus[idx] = replace(g, instances=inst)
    return replace(node, gpus=tuple(gpus))


def check(state: ClusterState, p: Any, *pods: PodRequest) -> None:
    assert validate(state, p, {x.key: x for x in pods}, TEMPLATES) == []


@pytest.mark.parametrize(("mem", "template", "profile"), [
    (3000, 0, "1g.5gb"), (8000, 1, "2g.10gb"), (15000, 2, "3g.20gb"), (None, 3, "7g.40gb"),
])
def test_hami_worked_example_first_match(mem: int | None, template: int, profile: str) -> None:
    state = ClusterState((mig_node("n"),))
    p = plan(state, pod("a", mem))
    check(state, p, pod("a", mem))
    (u,) = p.placements[0].units
    assert (u.template_index, u.slot.profile if u.slot else None, u.reconfigure) == (template, profile, True)
    assert [s.name for s in p.stages] == list(PlannerConfig().objective)
    assert p.status == "optimal"


def test_free_instances_are_reused_before_repartitioning() -> None:
    node = held(mig_node("busy", n=1), 0, 0, 3)  # 1g.5gb x7, 3 held
    state = ClusterState((node, mig_node("fresh")))
    p = plan(state, pod("a", 3000))
    (u,) = p.placements[0].units
    assert p.placements[0].node == "busy" and not u.reconfigure and not p.layout_changes
    assert p.stages[1].value == 0


def test_real_instance_memory_not_nominal() -> None:
    # 1g.5gb is 4864 MiB: a 5000 MiB request needs a 2g (HAMi #1054 took the 1g.5gb)
    state = ClusterState((mig_node("n"),))
    p = plan(state, pod("a", 5000))
    assert p.placements[0].units[0].slot.profile == "2g.10gb"  # type: ignore[union-attr]


def test_several_units_share_one_mig_gpu() -> None:
    state = ClusterState((mig_node("n", n=1),))
    p = plan(state, pod("a", 3000, n=2))  # HAMi #2403: gpu: 2 on a 1-GPU MIG node stayed pending
    check(state, p, pod("a", 3000, n=2))
    units = p.placements[0].units
    assert len(units) == 2 and len({u.gpu for u in units}) == 1


def test_share_units_of_a_container_on_distinct_gpus() -> None:
    state = ClusterState((share_node("s", n=2),))
    p = plan(state, pod("a", 4000, n=2))
    assert len({u.gpu for u in p.placements[0].units}) == 2
    p3 = plan(state, pod("b", 4000, n=3))
    assert not p3.placed and "distinct GPUs" in p3.reasons[0][1]


def test_batch_places_what_greedy_first_match_leaves_pending() -> None:
    state = ClusterState((mig_node("n"),))
    a, b = pod("a", 8000), pod("b", 15000)
    legacy = plan(state, a, PlannerConfig(policy="hami-legacy"), pending=[b])
    assert legacy.placements[0].placed and not legacy.placements[1].placed
    ours = plan(state, a, pending=[b])
    check(state, ours, a, b)
    assert all(p.placed for p in ours.placements)
    assert ours.layout_changes[0].template_index == 2  # 3g.20gb x2 serves both
    assert ours.status == "optimal" and ours.stages[0].value == 2


def test_batch_priority_and_the_pod_itself_first() -> None:
    state = ClusterState((mig_node("n"),))
    me = pod("me", 30000)
    low, high = pod("low", 30000, priority=0), pod("high", 3000, priority=10)
    p = plan(state, me, pending=[low, high])
    check(state, p, me, low, high)
    placed = {x.pod for x in p.placements if x.placed}
    assert "t/me" in placed and "t/low" not in placed  # only one 7g/3g-size slot... the pod is hard
    assert p.placements[0].pod == "t/me"


def test_batch_stage_values_are_the_plan_objective() -> None:
    state = ClusterState((mig_node("a", n=2), mig_node("b", "H100-80GB", 2), share_node("s", n=2)))
    pods_ = [pod(f"p{i}", m, n) for i, (m, n) in enumerate([(3000, 1), (9000, 2), (20000, 1), (4000, 1)])]
    p = plan(state, pods_[0], PlannerConfig(time_budget_ms=5000), pending=pods_[1:])
    reqs = {x.key: x for x in pods_}
    check(state, p, *pods_)
    assert p.status == "optimal"
    vals = evaluate(state, p, reqs)
    assert {s.name: s.value for s in p.stages} == {k: float(v) for k, v in vals.items()}


def test_bad_input_gives_reasons_per_node() -> None:
    state = ClusterState((mig_node("m"), share_node("s")))
    nogpu = parse_pod({"metadata": {"name": "cpu", "namespace": "t"},
                       "spec": {"containers": [{"name": "c", "resources": {"limits": {"cpu": "1"}}}]}})
    p = plan(state, nogpu)
    assert not p.placed and p.status == "infeasible"
    assert dict(p.reasons).keys() == {"m", "s"} and "no GPU" in p.reasons[0][1]
    huge = plan(state, pod("h", 500000))
    assert not huge.placed and dict(huge.reasons).keys() == {"m", "s"}
    assert "500000 MiB" in dict(huge.reasons)["m"]
    mode = plan(state, pod("x", 1000, mode="hami-core"), nodes=["m"])
    assert dict(mode.reasons)["m"].startswith("no GPU matches vgpu-mode hami-core")
    ghost = plan(state, pod("g", 1000), nodes=["m", "nowhere"])
    assert ghost.placed and "unknown node" in dict(ghost.reasons)["nowhere"]
    weird = ClusterState((Node("w", NodeMode.MIG, (Gpu("GPU-w", 0, "Frobnicator-9000", NodeMode.MIG, 1000),)),))
    unk = plan(weird, pod("u", 1000))
    assert not unk.placed and "unknown GPU model" in unk.reasons[0][1]


def test_busy_gpu_reason_names_the_largest_free_instance() -> None:
    node = held(mig_node("busy"), 0, 0, 5)  # 1g.5gb x7, 5 held, 2 free
    state = ClusterState((node,))
    p = plan(state, pod("a", 20000))
    (why,) = dict(p.reasons).values()
    assert "needs 1x 20000 MiB" in why and "largest free MIG instance is 4864 MiB" in why
    assert "GPU busy, cannot re-partition" in why and node.gpus[0].uuid in why


def test_nodes_restrict_candidates() -> None:
    state = ClusterState((mig_node("a"), mig_node("b")))
    p = plan(state, pod("x", 3000), nodes=["b"])
    assert p.placements[0].node == "b"


def test_time_budget_expiry_returns_a_validated_flagged_plan() -> None:
    state = ClusterState(tuple(mig_node(f"n{i}", n=2) for i in range(6)))
    x = pod("x", 3000)
    p = plan(state, x, PlannerConfig(time_budget_ms=0.0))
    check(state, p, x)
    assert p.placed and p.status in ("feasible", "fallback")
    assert any(s.status != "optimal" for s in p.stages[1:])
    ys = [pod(f"y{i}", 3000) for i in range(3)]
    b = plan(state, x, PlannerConfig(time_budget_ms=0.0), pending=ys)
    check(state, b, x, *ys)
    assert b.placed and b.status == "fallback"


def test_layouts_any_only_after_templates() -> None:
    from models.templates import DeviceConfig, Geometry, MigTemplate, ModelGeometries

    only_1g = DeviceConfig((ModelGeometries(("A100-SXM4-40GB",), (Geometry((MigTemplate("1g.5gb", 4864, 7),)),)),))
    state = ClusterState((mig_node("n"),))
    small, big = pod("s", 3000), pod("b", 8000)
    assert plan(state, small, PlannerConfig(templates=only_1g)).layout_changes[0].template_index == 0
    assert not plan(state, big, PlannerConfig(templates=only_1g)).placed
    cfg = PlannerConfig(templates=only_1g, layouts_any=True)
    p = plan(state, big, cfg)
    assert p.placed and p.layout_changes[0].template_index is None
    assert p.placements[0].units[0].slot.profile == "2g.10gb"  # type: ignore[union-attr]
    q = plan(state, small, cfg)  # a template still wins when one serves
    assert q.layout_changes[0].template_index == 0


def test_sequential_plans_keep_the_cluster_valid() -> None:
    state = ClusterState((mig_node("a", n=2), mig_node("b", "H200", 2), share_node("s", n=2)))
    for i, (mem, n) in enumerate([(3000, 1), (3000, 3), (30000, 1), (9000, 2), (60000, 1), (1000, 2)] * 2):
        x = pod(f"p{i}", mem, n)
        p = plan(state, x)
        check(state, p, x)
        if p.placed:
            state = apply_plan(state, p)


def test_unknown_config_values_are_rejected() -> None:
    with pytest.raises(ValueError):
        PlannerConfig(objective=("placed", "happiness"))
    with pytest.raises(ValueError):
        PlannerConfig(policy="magic")


def test_shares_with_exclusive_and_percent_requests() -> None:
    node = share_node("s", n=2)
    g0 = replace(node.gpus[0], shares=(ShareUsage("x/y/0/0", 1000, 100),))
    state = ClusterState((replace(node, gpus=(g0, node.gpus[1])),))
    p = plan(state, pod("e", None, n=1))  # whole GPU (100 % cores)
    assert p.placed and p.placements[0].units[0].gpu_index == 1
    q = plan(state, pod("q", pct=50, n=2))
    assert not q.placed


def test_uuid_annotations_are_honoured() -> None:
    node = mig_node("n", n=3)
    state = ClusterState((node,))
    target = node.gpus[2].uuid
    x = pod("x", 3000, ann={"nvidia.com/use-gpuuuid": target})
    for cfg in (PlannerConfig(), PlannerConfig(engine="cpsat", time_budget_ms=5000)):
        p = plan(state, x, cfg)
        check(state, p, x)
        assert p.placements[0].units[0].gpu == target and p.status == "optimal"
    y = pod("y", 3000, n=3, ann={"nvidia.com/nouse-gpuuuid": node.gpus[0].uuid})
    q = plan(state, y)
    check(state, q, y)
    assert node.gpus[0].uuid not in {u.gpu for u in q.placements[0].units}


def test_multi_container_pods() -> None:
    state = ClusterState((mig_node("a", n=2), share_node("s", n=3)))
    x = parse_pod({"metadata": {"name": "mc", "namespace": "t"}, "spec": {
        "initContainers": [{"name": "init", "resources": {"limits": {"nvidia.com/gpu": 1, "nvidia.com/gpumem": 3000}}}],
        "containers": [{"name": "a", "resources": {"limits": {"nvidia.com/gpu": 2, "nvidia.com/gpumem": 9000}}},
                       {"name": "b", "resources": {"limits": {"nvidia.com/gpu": 1, "nvidia.com/gpumem": 15000}}}]}})
    for engine in ("dp", "cpsat"):
        p = plan(state, x, PlannerConfig(engine=engine, time_budget_ms=5000))
        check(state, p, x)
        assert p.placed and len(p.placements[0].units) == 4
    dp, cp = plan(state, x), plan(state, x, PlannerConfig(engine="cpsat", time_budget_ms=5000))
    assert [s.value for s in dp.stages] == [s.value for s in cp.stages]
