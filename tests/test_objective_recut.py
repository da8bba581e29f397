"""Idle GPUs are free to re-cut (issue 12): ``reconfigurations`` counts no re-cut of an idle GPU,
and an idle GPU that keeps its layout pays that layout's ``template_order`` rank (HAMi's reset), so
a small unit is not put into an idle GPU's free 7g or 3g."""

from __future__ import annotations

import pytest
from test_planner import check, held, mig_node, pod

from models.types import ClusterState
from solver import evaluate, plan
from solver.planner.objective import reconfigurations, template_order
from solver.planner.objective.reconfigurations import KEEP


def test_level_costs() -> None:
    assert reconfigurations.pattern(KEEP) == 0 and reconfigurations.pattern(KEEP, True) == 0
    assert reconfigurations.pattern(0) == reconfigurations.WHOLE  # a whole change of a GPU that holds instances
    assert reconfigurations.pattern(reconfigurations.PARTIAL_BASE) == reconfigurations.PARTIAL  # nvml, busy
    assert reconfigurations.PARTIAL > 0  # a busy GPU's partial change costs more than an idle re-cut
    assert reconfigurations.pattern(0, idle=True) == 0
    assert template_order.keep_order((), {"7g.40gb": 1}, False, [("7g.40gb", 1)]) == 0  # busy: kept for free


@pytest.mark.parametrize(("template", "mem", "first"),
                         [(3, 3000, "1g.5gb"), (2, 3000, "1g.5gb"), (3, 15000, "3g.20gb")])
def test_an_idle_gpu_is_recut_to_the_first_match_not_reused(template: int, mem: int, first: str) -> None:
    node = held(mig_node("n"), 0, template, 0)  # idle: a layout, nothing held
    state = ClusterState((node,))
    p = plan(state, pod("a", mem))
    check(state, p, pod("a", mem))
    (u,) = p.placements[0].units
    assert u.slot is not None and u.slot.profile == first and u.reconfigure
    values = {s.name: s.value for s in p.stages}
    assert values["reconfigurations"] == 0
    ev = evaluate(state, p, {"t/a": pod("a", mem)})
    assert all(float(ev[k]) == values[k] for k in ("reconfigurations", "template_order", "fragmentation"))


def test_an_idle_gpu_already_cut_right_is_kept() -> None:
    state = ClusterState((held(mig_node("n"), 0, 0, 0),))  # idle 7 x 1g.5gb
    p = plan(state, pod("a", 3000))
    check(state, p, pod("a", 3000))
    assert not p.layout_changes and p.placements[0].units[0].slot is not None


def test_a_busy_gpus_matching_free_instance_beats_an_idle_recut() -> None:
    busy = held(mig_node("busy"), 0, 0, 3)  # 7 x 1g.5gb, 3 held
    state = ClusterState((busy, held(mig_node("idle"), 0, 3, 0)))  # the other: an idle 7g
    p = plan(state, pod("a", 3000))
    check(state, p, pod("a", 3000))
    assert p.placements[0].node == "busy" and not p.layout_changes


def test_a_busy_gpus_too_big_instance_loses_to_an_idle_recut() -> None:
    busy = held(mig_node("busy"), 0, 2, 1)  # 2 x 3g.20gb, one held: a free 3g
    state = ClusterState((busy, held(mig_node("idle"), 0, 3, 0)))
    p = plan(state, pod("a", 3000))
    check(state, p, pod("a", 3000))
    (u,) = p.placements[0].units
    assert p.placements[0].node == "idle" and u.slot is not None and u.slot.profile == "1g.5gb"
