"""Baselines behind plan(): HAMi legacy first-match, HAMi v2.10 smallest-fit (incremental layout
changes), best-fit. Every plan goes through the validator."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_planner import held, mig_node, pod, share_node
from test_planner_props import TEMPLATES, clusters, pods

from models.codecs import allocation_from_plan, decode_allocation, encode_allocation
from models.layouts import Slot
from models.plan import LayoutChange, Plan, PodPlacement, apply_plan
from models.types import ClusterState
from models.validate import validate
from solver import PlannerConfig, plan

POLICIES = ("hami-legacy", "hami-v210", "bestfit")


@pytest.mark.parametrize(("mem", "template", "slot"), [
    (3000, 0, "1g.5gb"), (8000, 1, "2g.10gb"), (15000, 2, "3g.20gb"), (None, 3, "7g.40gb"),
])
def test_legacy_worked_example(mem: int | None, template: int, slot: str) -> None:
    state = ClusterState((mig_node("n"),))
    p = plan(state, pod("a", mem), PlannerConfig(policy="hami-legacy"))
    (u,) = p.placements[0].units
    assert (u.template_index, u.slot.profile if u.slot else None) == (template, slot)
    assert p.policy == "hami-legacy" and p.status == "feasible"


def test_legacy_resets_an_idle_gpu_and_uses_free_slots_of_a_busy_one() -> None:
    idle = held(mig_node("n"), 0, 2, 0)  # 3g.20gb x2, nothing held
    state = ClusterState((idle,))
    p = plan(state, pod("a", 3000), PlannerConfig(policy="hami-legacy"))
    assert p.layout_changes and p.layout_changes[0].template_index == 0  # HAMi resets to the first match
    ours = plan(state, pod("a", 3000))
    # dynamig too: an idle GPU's re-cut costs no reconfiguration and keeping its layout pays that
    # layout's template rank, so a 1g-sized pod does not sit in an idle GPU's free 3g (issue 12)
    assert ours.layout_changes and ours.layout_changes[0].template_index == 0
    a = pod("a", 3000)
    assert validate(state, ours, {a.key: a}) == []
    busy = held(mig_node("n"), 0, 2, 1)
    q = plan(ClusterState((busy,)), pod("b", 3000), PlannerConfig(policy="hami-legacy"))
    assert not q.layout_changes and q.placements[0].units[0].slot == Slot("3g.20gb", 4)


def test_v210_grows_a_busy_gpu_incrementally() -> None:
    cfg = PlannerConfig(policy="hami-v210")
    state = ClusterState((mig_node("n"),))
    a, b, c = pod("a", 3000), pod("b", 8000), pod("c", 3000)
    seen = {}
    for x in (a, b, c):
        p = plan(state, x, cfg)
        assert p.placed and p.layout_changes and p.layout_changes[0].incremental
        assert validate(state, p, {x.key: x}, TEMPLATES) == []
        seen[x.name] = p.placements[0].units[0].slot
        state = apply_plan(state, p)
    # 1g at the highest free start, 2g at the lowest (HAMi's orderedMigPlacements)
    assert seen == {"a": Slot("1g.5gb", 6), "b": Slot("2g.10gb", 0), "c": Slot("1g.5gb", 5)}
    g = state.nodes[0].gpus[0]
    assert sum(1 for i in g.instances if not i.free) == 3  # earlier holders kept
    # ... and the fragmentation that causes: no 3g start (0 or 4) is free any more
    assert not plan(state, pod("d", 15000), cfg).placed


def test_incremental_change_may_not_drop_a_held_instance() -> None:
    node = held(mig_node("n"), 0, 0, 1)
    g = node.gpus[0]
    state = ClusterState((node,))
    bad = LayoutChange("n", g.uuid, (Slot("7g.40gb", 0),), None, incremental=True)
    x = pod("x", 30000)
    p = Plan((PodPlacement(x.key, False),), (bad,))
    assert {v.kind for v in validate(state, p, {x.key: x}, TEMPLATES)} == {"layout-busy"}


def test_incremental_flag_survives_the_annotation_codec() -> None:
    state = ClusterState((held(mig_node("n"), 0, 0, 1),))
    p = plan(state, pod("a", 8000), PlannerConfig(policy="hami-v210"))
    back = decode_allocation(encode_allocation(allocation_from_plan(p)))
    assert back.layouts and all(c.incremental for c in back.layouts)


def test_bestfit_picks_the_smallest_serving_instance() -> None:
    node = held(mig_node("n", n=2), 0, 2, 0)  # GPU 0: 3g.20gb x2 idle; GPU 1: empty
    state = ClusterState((node,))
    p = plan(state, pod("a", 3000), PlannerConfig(policy="bestfit"))
    assert p.placements[0].units[0].slot.profile == "1g.5gb"  # type: ignore[union-attr]


def test_baselines_on_shares() -> None:
    state = ClusterState((share_node("s", n=2),))
    for pol in POLICIES:
        p = plan(state, pod("a", 4000, n=2), PlannerConfig(policy=pol))
        assert p.placed and len({u.gpu for u in p.placements[0].units}) == 2


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_baseline_plans_validate(data: Any) -> None:
    state = data.draw(clusters(2, 3))
    pol = data.draw(st.sampled_from(POLICIES))
    cfg = PlannerConfig(policy=pol)
    for i in range(3):
        x = data.draw(pods(f"p{i}", 2, 2))
        extra = [data.draw(pods(f"q{i}", 2, 1))]
        p = plan(state, x, cfg, pending=extra)  # plan() validates: an invalid plan raises
        assert validate(state, p, {y.key: y for y in (x, *extra)}, TEMPLATES) == []
        if p.placed:
            state = apply_plan(state, replace(p, placements=p.placements[:1]))
