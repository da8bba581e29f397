from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from plangen import clusters, legal_plan, pods

from models.cluster import state_from_objects
from models.codecs import (
    NODE_GPUS,
    POD_ALLOCATION,
    AllocatedUnit,
    NodeLock,
    allocation_from_plan,
    decode_allocated,
    decode_allocation,
    decode_lock,
    decode_node,
    encode_allocated,
    encode_allocation,
    encode_node,
    registration_of,
)
from models.errors import CodecError
from models.plan import apply_plan
from models.store import node_objects


@settings(max_examples=50, deadline=None)
@given(st.data())
def test_node_and_allocation_codecs_round_trip(data: Any) -> None:
    state = data.draw(clusters())
    for n in state.nodes:
        reg = registration_of(n)
        assert decode_node(encode_node(reg)).gpus == reg.gpus
    pod = data.draw(pods("p0"))
    plan = legal_plan(state, pod, data.draw)
    if plan.placed:
        a = allocation_from_plan(plan)
        assert decode_allocation(encode_allocation(a)) == a


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_state_rebuilt_from_annotations_equals_applied_state(data: Any) -> None:
    """What the extender does after a restart: node registrations + pod allocations = the state."""
    state = data.draw(clusters())
    nodes = node_objects(state)
    pod_objs = []
    for i in range(3):
        pod = data.draw(pods(f"p{i}"))
        plan = legal_plan(state, pod, data.draw)
        state = apply_plan(state, plan)
        if plan.placed:
            pod_objs.append({"metadata": {"name": f"p{i}", "namespace": "t",
                                          "annotations": {POD_ALLOCATION: encode_allocation(allocation_from_plan(plan)),
                                                          "dynamig.io/plan-time": str(i)}},
                             "status": {"phase": "Pending"}})
    rebuilt, problems = state_from_objects(nodes, pod_objs)
    assert problems == []
    assert rebuilt.nodes == tuple(sorted(state.nodes, key=lambda n: n.name))
    # finished pods free their instances
    for p in pod_objs:
        p["status"]["phase"] = "Succeeded"
    empty, _ = state_from_objects(nodes, pod_objs)
    assert not any(g.busy for n in empty.nodes for g in n.gpus)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("not json", "not JSON"),
        ("[]", "expected a JSON object"),
        ('{"v": 9}', "unsupported version 9"),
        ('{"v": 1, "mode": "mig"}', "'gpus' missing"),
        ('{"v": 1, "mode": "mps", "gpus": []}', "unknown mode"),
    ],
)
def test_node_decode_errors_name_the_key(raw: str, message: str) -> None:
    with pytest.raises(CodecError, match=message) as e:
        decode_node(raw)
    assert NODE_GPUS in str(e.value)


def test_allocation_decode_errors() -> None:
    with pytest.raises(CodecError, match="unknown unit kind"):
        decode_allocation('{"v":1,"pod":"a/b","node":"n","units":[{"kind":"x"}]}')
    with pytest.raises(CodecError, match="slot must be"):
        decode_allocation('{"v":1,"pod":"a/b","node":"n","units":[],"layouts":[{"gpu":"g","slots":[[1,2]]}]}')


def test_allocated_and_lock_codecs() -> None:
    units = (AllocatedUnit(0, 0, "MIG-1"), AllocatedUnit(1, 0, "GPU-2"))
    assert decode_allocated(encode_allocated(units)) == units
    lock = NodeLock(1700000000.5, "ml/train", "extender-a")
    assert decode_lock(lock.encode()) == lock
    with pytest.raises(CodecError):
        decode_lock("2024-01-01T00:00:00Z")
