from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from plangen import TEMPLATES, clusters, legal_plan, pods

from models.catalog import model
from models.layouts import Slot, make_layout
from models.plan import LayoutChange, Plan, PodPlacement, UnitAssignment, apply_plan, release_pod
from models.requests import parse_pod
from models.types import ClusterState, Gpu, Node, NodeMode, UnitKind
from models.validate import validate

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(st.data())
def test_plans_built_from_legal_steps_validate(data: Any) -> None:
    state = data.draw(clusters())
    requests = {}
    for i in range(data.draw(st.integers(1, 6))):
        pod = data.draw(pods(f"p{i}"))
        requests[pod.key] = pod
        plan = legal_plan(state, pod, data.draw)
        assert validate(state, plan, requests, TEMPLATES) == []
        state = apply_plan(state, plan)
        if data.draw(st.booleans()) and i:
            state = release_pod(state, f"t/p{data.draw(st.integers(0, i - 1))}")


@SETTINGS
@given(st.data())
def test_each_illegal_mutation_is_caught(data: Any) -> None:
    state = data.draw(clusters())
    requests = {}
    plans = []
    for i in range(4):
        pod = data.draw(pods(f"p{i}"))
        requests[pod.key] = pod
        plan = legal_plan(state, pod, data.draw)
        if plan.placed:
            plans.append((state, plan))
        state = apply_plan(state, plan)
    for before, plan in plans:
        pl = plan.placements[0]
        # a unit dropped
        dropped = replace(plan, placements=(replace(pl, units=pl.units[1:]),))
        assert "unit-count" in {v.kind for v in validate(before, dropped, requests, TEMPLATES)}
        # the same plan again on the state it produced: every MIG instance is now held / shares overflow or ok
        after = apply_plan(before, plan)
        again = validate(after, plan, requests, TEMPLATES)
        if any(u.kind is UnitKind.MIG for u in pl.units):
            kinds = {v.kind for v in again}
            assert kinds & {"instance-held", "layout-busy", "instance-missing"}, again
        # a unit moved to a GPU that does not exist
        ghost = replace(pl.units[0], gpu="GPU-ghost")
        bad = replace(plan, placements=(replace(pl, units=(ghost, *pl.units[1:])),))
        assert "gpu" in {v.kind for v in validate(before, bad, requests, TEMPLATES)}


def _mig_state(held: bool) -> ClusterState:
    m = model("A100-SXM4-40GB")
    g = Gpu("GPU-a", 0, m.name, NodeMode.MIG, m.memory_mib).with_layout(
        TEMPLATES.template_layouts(m)[0].layout)  # 7x 1g.5gb
    if held:
        insts = list(g.instances)
        insts[0] = replace(insts[0], holder="t/old/0/0")
        g = replace(g, instances=tuple(insts))
    share = Gpu("GPU-s", 0, "A100-SXM4-80GB", NodeMode.HAMI_CORE, 81920, split=2)
    return ClusterState((Node("mig", NodeMode.MIG, (g,)), Node("share", NodeMode.HAMI_CORE, (share,))))


def _pod(name: str, limits: dict[str, str], ann: dict[str, str] | None = None) -> Any:
    return parse_pod({"metadata": {"name": name, "namespace": "t", "annotations": ann or {}},
                      "spec": {"containers": [{"name": "c", "resources": {"limits": limits}}]}})


def _unit(pod: str, slot: Slot | None, gpu: str = "GPU-a", node: str = "mig", kind: UnitKind = UnitKind.MIG,
          mem: int = 4864, cores: int = 14, reconf: bool = False, unit: int = 0) -> UnitAssignment:
    return UnitAssignment(f"t/{pod}", "c", 0, unit, node, gpu, 0, kind, mem, cores, slot, reconf)


def test_catches_double_hold_within_one_plan() -> None:
    state = _mig_state(held=False)
    pod = _pod("p", {"nvidia.com/gpu": "2", "nvidia.com/gpumem": "1000"})
    s = Slot("1g.5gb", 1)
    plan = Plan((PodPlacement("t/p", True, "mig", (_unit("p", s), _unit("p", s, unit=1))),))
    assert "double-held" in {v.kind for v in validate(state, plan, {"t/p": pod}, TEMPLATES)}


def test_catches_held_instance_and_busy_repartition_and_invalid_layout() -> None:
    state = _mig_state(held=True)
    pod = _pod("p", {"nvidia.com/gpumem": "1000"})
    plan = Plan((PodPlacement("t/p", True, "mig", (_unit("p", Slot("1g.5gb", 0)),)),))
    assert [v.kind for v in validate(state, plan, {"t/p": pod}, TEMPLATES)] == ["instance-held"]
    seven = make_layout([Slot("7g.40gb", 0)])
    plan2 = Plan((PodPlacement("t/p", True, "mig", (_unit("p", Slot("7g.40gb", 0), mem=40192, cores=100,
                                                          reconf=True),)),),
                 (LayoutChange("mig", "GPU-a", seven, 3),))
    assert "layout-busy" in {v.kind for v in validate(state, plan2, {"t/p": pod}, TEMPLATES)}
    broken = make_layout([Slot("4g.20gb", 0), Slot("3g.20gb", 0)])
    plan3 = Plan((PodPlacement("t/p", True, "mig", (_unit("p", Slot("4g.20gb", 0), mem=19968, cores=57,
                                                          reconf=True),)),),
                 (LayoutChange("mig", "GPU-a", broken),))
    kinds = {v.kind for v in validate(_mig_state(held=False), plan3, {"t/p": pod}, TEMPLATES)}
    assert {"layout-invalid", "layout-not-template"} <= kinds


def test_catches_fit_mode_annotation_and_share_limits() -> None:
    state = _mig_state(held=False)
    big = _pod("big", {"nvidia.com/gpumem": "9000"})
    plan = Plan((PodPlacement("t/big", True, "mig", (_unit("big", Slot("1g.5gb", 1)),)),))
    assert [v.kind for v in validate(state, plan, {"t/big": big}, TEMPLATES)] == ["fit"]
    mig_only = _pod("m", {"nvidia.com/gpumem": "1000"}, {"nvidia.com/vgpu-mode": "mig"})
    share_unit = _unit("m", None, gpu="GPU-s", node="share", kind=UnitKind.SHARE, mem=1000, cores=0)
    plan2 = Plan((PodPlacement("t/m", True, "share", (share_unit,)),))
    assert "annotation" in {v.kind for v in validate(state, plan2, {"t/m": mig_only}, TEMPLATES)}
    mig_on_share = Plan((PodPlacement("t/m", True, "share", (replace(share_unit, kind=UnitKind.MIG,
                                                                     slot=Slot("1g.5gb", 0)),)),))
    assert "mode" in {v.kind for v in validate(state, mig_on_share, {"t/m": mig_only}, TEMPLATES)}
    huge = _pod("h", {"nvidia.com/gpumem": "90000"})
    plan3 = Plan((PodPlacement("t/h", True, "share", (replace(share_unit, pod="t/h", memory_mib=90000),)),))
    assert "share-limit" in {v.kind for v in validate(state, plan3, {"t/h": huge}, TEMPLATES)}


def test_layout_any_allows_non_template_layouts() -> None:
    state = _mig_state(held=False)
    pod = _pod("p", {"nvidia.com/gpumem": "15000"})
    lay = make_layout([Slot("4g.20gb", 0), Slot("3g.20gb", 4)])
    plan = Plan((PodPlacement("t/p", True, "mig", (_unit("p", Slot("3g.20gb", 4), mem=19968, cores=42,
                                                         reconf=True),)),),
                (LayoutChange("mig", "GPU-a", lay),))
    assert {v.kind for v in validate(state, plan, {"t/p": pod}, TEMPLATES)} == {"layout-not-template"}
    anyst = ClusterState(state.nodes, layouts_any=True)
    assert validate(anyst, plan, {"t/p": pod}, TEMPLATES) == []
