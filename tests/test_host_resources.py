"""Host CPU and memory as cluster state: parsing, apply/release, the validator, the planner paths
(single pod, batch, baselines) and the rebuild from API objects."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubernetes.utils import parse_quantity as kube_parse_quantity

from models.catalog import model
from models.cluster import state_from_objects
from models.codecs import NODE_GPUS, NodeRegistration, encode_node
from models.config import builtin_device_config
from models.errors import RequestError
from models.plan import apply_plan, release_pod
from models.quantity import QuantityError, cpu_milli, memory_mib, parse_quantity
from models.requests import PodRequest, parse_pod
from models.types import ClusterState, Gpu, HostUsage, Node, NodeMode, gpu_uuid
from models.validate import validate
from solver import PlannerConfig, plan

TEMPLATES = builtin_device_config()

QUANTITIES = ["1", "0", "500m", "1.5", "2k", "4Gi", "512Mi", "1Ki", "1e3", "1E3", "0.1", "100M", "3T", ".5",
              "1.25Gi", "7n", "12u", "+2", "1Ei"]


@pytest.mark.parametrize("q", QUANTITIES)
def test_quantity_agrees_with_the_kubernetes_client(q: str) -> None:
    assert parse_quantity(q) == Decimal(kube_parse_quantity(q))


@pytest.mark.parametrize("bad", ["lots", "1Gb", "", "1..2", "Gi", "1 Gi", "--1"])
def test_bad_quantity_is_an_error(bad: str) -> None:
    with pytest.raises(QuantityError):
        parse_quantity(bad)


@given(st.integers(min_value=0, max_value=10**7), st.sampled_from(["m", "", "k"]))
def test_cpu_milli_rounds_up(n: int, suffix: str) -> None:
    scale = {"m": Decimal("0.001"), "": Decimal(1), "k": Decimal(1000)}[suffix]
    got = cpu_milli(f"{n}{suffix}")
    assert Decimal(got) >= Decimal(n) * scale * 1000 > Decimal(got) - 1


def gpu_pod(name: str, cpu: str | None = None, mem: str | None = None, init_cpu: str | None = None) -> PodRequest:
    res: dict[str, Any] = {"limits": {"nvidia.com/gpu": 1, "nvidia.com/gpumem": 4000}, "requests": {}}
    if cpu:
        res["requests"]["cpu"] = cpu
    if mem:
        res["requests"]["memory"] = mem
    spec: dict[str, Any] = {"containers": [{"name": "c", "resources": res},
                                           {"name": "side", "resources": {"requests": {"cpu": "250m"}}}]}
    if init_cpu:
        spec["initContainers"] = [{"name": "i", "resources": {"requests": {"cpu": init_cpu}}}]
    return parse_pod({"metadata": {"name": name, "namespace": "t"}, "spec": spec})


def test_pod_host_request_is_kubes_effective_request() -> None:
    p = gpu_pod("a", cpu="1500m", mem="2Gi")
    assert (p.cpu_milli, p.host_memory_mib) == (1750, 2048)
    assert gpu_pod("b", cpu="1", init_cpu="4").cpu_milli == 4000  # the largest init container wins
    with pytest.raises(RequestError, match=r"containers\[0\]\.resources\.cpu"):
        gpu_pod("c", cpu="lots")


def node(name: str, cpu: int | None, mem: int | None = None, n: int = 2) -> Node:
    m = model("A100-SXM4-80GB")
    gpus = tuple(Gpu(gpu_uuid(name, j), j, m.name, NodeMode.MIG, m.memory_mib) for j in range(n))
    return Node(name, NodeMode.MIG, gpus, cpu, mem)


def test_apply_and_release_track_host_usage() -> None:
    state = ClusterState((node("a", 4000, 8192),))
    p = gpu_pod("x", cpu="3", mem="1Gi")
    got = plan(state, p, PlannerConfig(templates=TEMPLATES))
    assert got.placed
    after = apply_plan(state, got, {p.key: p})
    assert after.node("a").host == (HostUsage("t/x", 3250, 1024),)
    assert apply_plan(state, got).node("a").host == ()  # without requests: GPU state only
    assert release_pod(after, p.key).node("a").host == ()


def test_validator_rejects_host_overcommit() -> None:
    state = ClusterState((node("a", 4000),))
    p = gpu_pod("x", cpu="3")
    got = plan(state, p, PlannerConfig(templates=TEMPLATES))
    full = state.with_nodes((replace(state.node("a"), host=(HostUsage("t/other", 1000, 0),)),))
    kinds = {v.kind for v in validate(full, got, {p.key: p}, TEMPLATES)}
    assert "host" in kinds
    assert not validate(state, got, {p.key: p}, TEMPLATES)


@pytest.mark.parametrize("policy", ["dynamig", "hami-legacy", "hami-v210", "bestfit"])
def test_planner_skips_nodes_without_host_room(policy: str) -> None:
    busy = replace(node("a", 4000), host=(HostUsage("t/other", 3000, 0),))
    state = ClusterState((busy, node("b", 4000)))
    p = gpu_pod("x", cpu="2")
    got = plan(state, p, PlannerConfig(templates=TEMPLATES, policy=policy))
    assert got.placed and got.primary is not None and got.primary.node == "b"
    if policy == "dynamig":
        assert any(n == "a" and "host CPU" in why for n, why in got.reasons)
    only_a = plan(ClusterState((busy,)), p, PlannerConfig(templates=TEMPLATES, policy=policy))
    assert not only_a.placed


def test_batch_respects_host_capacity() -> None:
    state = ClusterState((node("a", 5000, n=8), node("b", 5000, n=8)))
    pods = [gpu_pod(f"p{i}", cpu="2") for i in range(5)]  # 2250m each: two per node fit
    got = plan(state, pods[0], PlannerConfig(templates=TEMPLATES, time_budget_ms=3000), pending=pods[1:])
    assert not validate(state, got, {p.key: p for p in pods}, TEMPLATES)
    per_node: dict[str, int] = {}
    for pl in got.placements:
        if pl.placed and pl.node:
            per_node[pl.node] = per_node.get(pl.node, 0) + 1
    assert sum(per_node.values()) == 4 and max(per_node.values()) == 2


def test_state_from_objects_counts_host_requests_of_live_pods() -> None:
    n = node("a", None)
    reg = encode_node(NodeRegistration(n.mode, n.gpus))
    node_obj = {"metadata": {"name": "a", "annotations": {NODE_GPUS: reg}},
                "status": {"allocatable": {"cpu": "7500m", "memory": "16Gi"}}}
    cpu_pod = {"metadata": {"name": "web", "namespace": "t"},
               "spec": {"nodeName": "a", "containers": [{"name": "c", "resources": {"requests": {"cpu": "2"}}}]},
               "status": {"phase": "Running"}}
    done = {**cpu_pod, "metadata": {"name": "old", "namespace": "t"}, "status": {"phase": "Succeeded"}}
    state, problems = state_from_objects([node_obj], [cpu_pod, done])
    assert not problems
    got = state.node("a")
    assert (got.cpu_milli, got.memory_mib) == (7500, 16384)
    assert got.host == (HostUsage("t/web", 2000, 0),)
    assert cpu_milli("7500m") == 7500 and memory_mib("16Gi") == 16384
