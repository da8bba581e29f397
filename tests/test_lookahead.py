"""Lookahead (solver.lookahead): queue order, answers from a batch plan re-validated against the live
state, soft reservations for the queue, and reasons for deferred pods."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from plangen import clusters, pods
from test_planner import mig_node, pod

from models.config import builtin_device_config
from models.plan import apply_plan
from models.requests import PodRequest
from models.types import ClusterState
from models.validate import validate
from solver import PlannerConfig, plan
from solver.lookahead import (
    QueuedPod,
    answer_from,
    deferred_reason,
    queue_order,
    reserved_for_queue,
    solve_queue,
)

TEMPLATES = builtin_device_config()
CFG = PlannerConfig(time_budget_ms=2000)


def test_queue_order_priority_then_age_then_limit() -> None:
    a, b, c = pod("a", 1000), pod("b", 1000), pod("c", 1000)
    q = [QueuedPod(a, 0, "2026-01-01T00:00:02Z"), QueuedPod(b, 5, "2026-01-01T00:00:03Z"),
         QueuedPod(c, 0, "2026-01-01T00:00:01Z")]
    assert [p.name for p in queue_order(q, 10)] == ["b", "c", "a"]
    assert [p.name for p in queue_order(q, 2)] == ["b", "c"]
    assert queue_order(q, 0) == ()


def test_pods_filtered_one_by_one_get_the_queue_plan() -> None:
    # One A100-40GB: alone, the 8 GB pod would take its first-match template; planned with the queue,
    # the GPU is cut to 3g.20gb x2 and both pods fit.
    state = ClusterState((mig_node("n"),))
    a, b = pod("a", 8000), pod("b", 15000)
    batch = solve_queue(plan, CFG, state, [a, b], revision=7, now=100.0)
    assert batch is not None and set(batch.placed) == {"t/a", "t/b"}
    live = state
    for req in (a, b):
        got = answer_from(batch, req, live, TEMPLATES, ["n"])
        assert got is not None and got.placed
        assert validate(live, got, {req.key: req}, TEMPLATES) == []
        live = apply_plan(live, got)
    # the second answer did not re-cut the GPU the first one already re-cut
    assert sum(1 for g in live.nodes[0].gpus for i in g.instances if i.holder) == 2


def test_a_stale_batch_plan_is_not_used() -> None:
    state = ClusterState((mig_node("n"),))
    a, b = pod("a", 8000), pod("b", 15000)
    batch = solve_queue(plan, CFG, state, [a, b], 1, 0.0)
    other = pod("intruder", 39000)
    taken = apply_plan(state, plan(state, other))
    assert answer_from(batch, a, taken, TEMPLATES) is None
    assert answer_from(batch, pod("unknown", 1000), state, TEMPLATES) is None
    assert answer_from(batch, a, state, TEMPLATES, ["elsewhere"]) is None


def test_reserved_for_queue_keeps_capacity_for_queued_pods() -> None:
    state = ClusterState((mig_node("n1"), mig_node("n2")))
    big1, big2 = pod("big1", 39000), pod("big2", 39000)
    batch = solve_queue(plan, CFG, state, [big1, big2], 1, 0.0)
    assert batch is not None and len(batch.placed) == 2
    reqs = {p.key: p for p in (big1, big2)}
    small = pod("small", 3000)
    soft = reserved_for_queue(batch, state, reqs, TEMPLATES, small.key)
    assert not plan(soft, small).placed  # both GPUs are the queue's
    assert plan(state, small).placed  # the live state still has room: the reservation is soft
    keep = reserved_for_queue(batch, state, reqs, TEMPLATES, big1.key)
    assert plan(keep, big1).placed  # a queued pod does not block itself


def test_deferred_reason_names_the_queue_and_the_cause() -> None:
    state = ClusterState((mig_node("n"),))
    first, second = pod("first", 39000), pod("second", 39000)
    batch = solve_queue(plan, CFG, state, [first, second], 1, 0.0)
    assert batch is not None and batch.placed == ("t/first",)
    why = deferred_reason(batch, second.key, state)
    assert why is not None
    assert "queued #2 of 2" in why and "1 of them ahead" in why and "re-cut to 7g.40gb x1" in why
    assert deferred_reason(batch, first.key, state) is None
    assert deferred_reason(None, first.key, state) is None


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_answers_in_queue_order_always_validate(data: Any) -> None:
    state = data.draw(clusters())
    queue: list[PodRequest] = [data.draw(pods(f"q{i}")) for i in range(data.draw(st.integers(1, 4)))]
    batch = solve_queue(plan, PlannerConfig(time_budget_ms=500), state, queue, 1, 0.0)
    assert batch is not None
    live = state
    reqs = {q.key: q for q in queue}
    for req in queue:
        got = answer_from(batch, req, live, TEMPLATES)
        if req.key in batch.placed:
            assert got is not None, f"{req.key} placed by the batch plan but not answerable"
        if got is not None:
            assert validate(live, got, {req.key: req}, TEMPLATES) == []
            live = apply_plan(live, got, reqs)
    # soft reservations never produce an invalid state
    soft = reserved_for_queue(batch, state, reqs, TEMPLATES, "t/none")
    assert sum(1 for n in soft.nodes for g in n.gpus for i in g.instances if i.holder) >= \
        sum(1 for n in state.nodes for g in n.gpus for i in g.instances if i.holder)
