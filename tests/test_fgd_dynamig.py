"""The ``dynamig`` policy on the FGD protocol (solver.fgd.dynamig_policy): cutting-stock prices,
GPU and node choice on hand-made clusters, cases where it beats FGD and why, runs, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import OPENB, needs_openb
from hypothesis import given, settings
from hypothesis import strategies as st

from dynamig import cli
from solver.fgd import (
    ClusterState,
    SharePricingPolicy,
    SimNode,
    SimPod,
    TypicalPods,
    make_policy,
    policy_names,
    run_loaded,
)
from solver.fgd.dynamig_policy import ShareValues, cutting_stock_duals, knapsack_values
from solver.fgd.policy import Policy
from solver.openb import load_nodes, load_pods

DATA = OPENB
needs_data = needs_openb

WHOLE_4C = TypicalPods.from_specs([((4000, 1000, 1, ()), 3), ((1000, 0, 0, ()), 1)])


def share(name: str, cpu: int, milli: int, mem: int = 1024) -> SimPod:
    return SimPod(name, cpu, mem, 1, milli)


def whole(name: str, cpu: int, n: int = 1, mem: int = 1024) -> SimPod:
    return SimPod(name, cpu, mem, n, 1000)


def prepared(policy: Policy, state: ClusterState, typical: TypicalPods) -> Policy:
    policy.prepare(state, typical, np.random.default_rng(0))
    return policy


def feed(policy_name: str, nodes: list[SimNode], typical: TypicalPods, pods: list[SimPod]) -> ClusterState:
    """Place ``pods`` in the given order (no shuffle, no tuning) and return the final state."""
    state = ClusterState(nodes)
    pol = prepared(make_policy(policy_name), state, typical)
    for pod in pods:
        placement = pol.select(state, pod)
        if placement is not None:
            state.allocate(placement[0], placement[1], pod)
        pol.observe(state, pod, placement)
    return state


# ------------------------------------------------------------------------ prices
def test_cutting_stock_prices_by_hand() -> None:
    assert cutting_stock_duals({500: 4}) == pytest.approx({500: 0.5})
    assert cutting_stock_duals({300: 9}) == pytest.approx({300: 1 / 3})
    # 810 + 160 fill a GPU: optimal prices are any split of 1 that keeps six 160s within one GPU
    # (the LP is degenerate; GLOP's vertex is taken as it comes)
    pi = cutting_stock_duals({810: 5, 160: 5})
    assert pi[810] + pi[160] == pytest.approx(1.0) and 6 * pi[160] <= 1 + 1e-9
    assert cutting_stock_duals({}) == {}
    k = knapsack_values({500: 0.5, 300: 0.3})
    assert k[299] == 0 and k[300] == pytest.approx(0.3) and k[600] == pytest.approx(0.6)
    assert k[800] == pytest.approx(0.8) and k[1000] == pytest.approx(1.0)


def test_split_loss_prefers_the_gap_a_partner_left() -> None:
    values = ShareValues({650: 10, 470: 10, 320: 10})
    assert values.prices == pytest.approx({650: 2 / 3, 470: 0.5, 320: 1 / 3})
    free = np.array([350, 530, 1000], dtype=np.int64)
    loss = values.split_loss(free, 320)
    # 650 + 320 and a fresh GPU (650 fits in the 680 left) lose nothing; 470 + 320 strands 210
    assert loss[0] == pytest.approx(0.0) and loss[2] == pytest.approx(0.0)
    assert loss[1] == pytest.approx(0.5 - 1 / 3)
    assert np.all(values.split_loss(np.arange(320, 1001, dtype=np.int64), 320) >= 0)


def test_share_goes_to_the_tightest_lossless_gpu() -> None:
    state = ClusterState([SimNode("n0", 64_000, 262_144, 4, "T4")])
    state.allocate(0, (0,), share("a", 4000, 650))
    state.allocate(0, (1,), share("b", 4000, 470))
    typical = TypicalPods.from_specs(
        [((4000, 650, 1, ()), 10), ((4000, 470, 1, ()), 10), ((4000, 320, 1, ()), 10), ((4000, 1000, 1, ()), 10)]
    )
    pol = prepared(SharePricingPolicy(), state, typical)
    assert pol.select(state, share("c", 4000, 320)) == (0, (0,))  # beside the 650, not the 470
    assert pol.select(state, share("d", 4000, 470)) == (0, (1,))  # its partner's gap
    assert pol.select(state, whole("e", 4000, 2)) == (0, (2, 3))


# ------------------------------------------------------------------ beats FGD, and why
@pytest.mark.parametrize(
    ("first", "cpu_only", "why"),
    [
        # FGD ignores host memory: the CPU-only pod takes node a's memory and strands its two GPUs
        (SimNode("a", 64_000, 16_384, 2, "T4"), SimPod("c", 1000, 15_000), "memory"),
        # FGD checks one typical pod's CPU (8 cores still fit); node a needs 16 for its two GPUs
        (SimNode("a", 16_000, 262_144, 2, "P100"), SimPod("c", 6000, 1024), "cpu"),
    ],
)
def test_beats_fgd_by_keeping_cpu_and_memory_for_free_gpus(first: SimNode, cpu_only: SimPod, why: str) -> None:
    nodes = [first, SimNode("b", 104_000, 524_288, 2, first.model)]
    typical = TypicalPods.from_specs([((8000, 1000, 1, ()), 3), ((1000, 0, 0, ()), 1)])
    pods = [cpu_only] + [whole(f"w{i}", 8000, mem=4096) for i in range(4)]
    used = {p: feed(p, nodes, typical, pods).used_gpu_milli for p in ("fgd", "share-pricing")}
    assert used == {"fgd": 3000 if why == "cpu" else 2000, "share-pricing": 4000}, why
    state = feed("share-pricing", nodes, typical, pods[:1])
    assert state.pods_on_node.tolist() == [0, 1]  # the CPU-only pod went to the roomy node


def test_cpu_only_pods_avoid_cpu_poor_nodes_and_whole_gpus_fill_them() -> None:
    nodes = [SimNode("poor", 16_000, 131_072, 2, "P100"), SimNode("rich", 104_000, 524_288, 2, "T4")]
    state = ClusterState(nodes)
    pol = prepared(SharePricingPolicy(), state, WHOLE_4C)
    assert pol.select(state, SimPod("c", 12_000, 1024)) == (1, ())
    # a whole GPU with little CPU: both nodes are fine, the first in order wins
    assert pol.select(state, whole("w", 4000)) == (0, (0,))


# ------------------------------------------------------------------ validity
def small_cluster() -> list[SimNode]:
    nodes = []
    for i in range(4):
        nodes.append(SimNode(f"g2-{i}", 96_000, 393_216, 8, "G2"))
        nodes.append(SimNode(f"t4-{i}", 104_000, 524_288, 2, "T4"))
        nodes.append(SimNode(f"p100-{i}", 16_000, 122_880, 2, "P100"))
    return nodes


def small_workload(n: int = 150, seed: int = 5) -> list[SimPod]:
    rng = np.random.default_rng(seed)
    kinds = [
        lambda i: share(f"p{i:04d}", 3152, 810),
        lambda i: share(f"p{i:04d}", 8000, 470),
        lambda i: share(f"p{i:04d}", 4000, 320, mem=8192),
        lambda i: share(f"p{i:04d}", 11_908, 650),
        lambda i: whole(f"p{i:04d}", 11_300),
        lambda i: whole(f"p{i:04d}", 40_000, 4),
        lambda i: SimPod(f"p{i:04d}", 12_500, 16_384),
        lambda i: SimPod(f"p{i:04d}", 4000, 4096, 1, 230, ("T4", "P100")),
    ]
    return [kinds[int(rng.integers(len(kinds)))](i) for i in range(n)]


@pytest.mark.parametrize("tie_break", ["first", "random"])
def test_run_on_small_cluster_is_valid_and_reproducible(tie_break: str) -> None:
    nodes, pods = small_cluster(), small_workload()
    res = run_loaded(nodes, pods, "share-pricing", seed=3, tie_break=tie_break)
    steps = res.steps
    assert steps is not None
    assert res.policy == "share-pricing" and res.placed + res.failed == res.pods
    assert res.used_milli <= res.capacity_milli == 4 * 12 * 1000
    assert np.all(steps.used_milli <= steps.arrived_milli)
    un = res.unallocated_gpu_pct_at_100
    assert un is not None and 0 <= un <= 30
    again = run_loaded(nodes, pods, "share-pricing", seed=3, tie_break=tie_break)
    assert again.buckets == res.buckets and again.placed == res.placed


@settings(max_examples=40, deadline=None)
@given(
    free=st.lists(
        st.lists(st.sampled_from([0, 50, 190, 350, 530, 1000]), min_size=1, max_size=4), min_size=1, max_size=4
    ),
    cpu=st.lists(st.integers(0, 40_000), min_size=4, max_size=4),
    pod=st.sampled_from(
        [
            share("s", 4000, 320),
            share("t", 3152, 810),
            whole("w", 8000),
            whole("x", 8000, 2),
            SimPod("c", 12_000, 2048),
            SimPod("m", 1000, 300_000),
        ]
    ),
)
def test_places_exactly_when_some_node_fits(free: list[list[int]], cpu: list[int], pod: SimPod) -> None:
    nodes = [SimNode(f"n{i}", 40_000, 262_144, len(g), "T4") for i, g in enumerate(free)]
    state = ClusterState(nodes)
    for i, gpus in enumerate(free):
        state.cpu_free[i] = cpu[i]
        for j, f in enumerate(gpus):
            state.gpu_free[i, j] = f
        state.gpu_free_sum[i] = state.gpu_free[i].sum()
        state.gpu_max_free[i] = state.gpu_free[i].max()
        state.full_free[i] = int((state.gpu_free[i] == 1000).sum())
    pol = prepared(SharePricingPolicy(), state, WHOLE_4C)
    placement = pol.select(state, pod)
    assert (placement is not None) == bool(state.feasible(pod).any())
    if placement is not None:
        state.check(placement[0], placement[1], pod)  # raises if invalid


def test_learns_only_from_arrived_pods() -> None:
    state = ClusterState(small_cluster())
    pol = prepared(SharePricingPolicy(learn_shares=True), state, WHOLE_4C)
    assert pol.values is not None and pol.values.prices == {}  # the typical pods have no share
    for i in range(64):
        pod = share(f"s{i}", 4000, 500, mem=40_000)
        pol.observe(state, pod, None)
    assert pol.values.prices == pytest.approx({500: 0.5})  # refreshed after 64 arrivals
    assert pol.mem_per_milli == pytest.approx(
        (64 * 40_000 + pol._prior[0] * pol._cluster_mem_per_cpu) / (64 * 500 + pol._prior[1])
    )


def test_registered_and_parameters_checked() -> None:
    assert "share-pricing" in policy_names()
    assert isinstance(make_policy("share-pricing"), SharePricingPolicy)
    with pytest.raises(ValueError):
        SharePricingPolicy(quantum=0)
    with pytest.raises(RuntimeError):
        SharePricingPolicy().select(ClusterState(small_cluster()), whole("w", 1000))


# ------------------------------------------------------------------ real data, CLI
@needs_data
def test_default_trace_slice_runs_and_metrics_are_in_range() -> None:
    nodes = load_nodes(DATA / "openb_node_list_gpu_node.csv")[:200]
    pods = load_pods(DATA / "openb_pod_list_default.csv")[:1200]
    res = run_loaded(nodes, pods, "share-pricing", seed=42, keep_steps=False)
    fgd = run_loaded(nodes, pods, "fgd", seed=42, keep_steps=False)
    un, un_fgd = res.unallocated_gpu_pct_at_100, fgd.unallocated_gpu_pct_at_100
    assert un is not None and un_fgd is not None
    assert 0 <= un <= 15 and res.placed > 0 and res.steps is None
    assert res.arrived_milli >= 1.3 * res.capacity_milli - 1000
    assert un <= un_fgd + 1.0  # no worse than FGD beyond slice noise
    assert res.buckets.unallocated_gpu_pct[50] == pytest.approx(50, abs=0.5)  # all placed below saturation


def write_csvs(tmp_path: Path) -> tuple[Path, Path]:
    nodes = tmp_path / "nodes.csv"
    nodes.write_text(
        "sn,cpu_milli,memory_mib,gpu,model\n"
        + "".join(f"{n.name},{n.cpu},{n.mem},{n.gpus},{n.model}\n" for n in small_cluster())
    )
    pods = tmp_path / "pods.csv"
    pods.write_text(
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli\n"
        + "".join(f"{p.name},{p.cpu},{p.mem},{p.num_gpu},{p.milli}\n" for p in small_workload(120))
    )
    return nodes, pods


def test_cli_simulate_policy_dynamig(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nodes, pods = write_csvs(tmp_path)
    argv = ["simulate", "--nodes", str(nodes), "--pods", str(pods), "--policy", "share-pricing"]
    assert cli.main([*argv, "--seeds", "1-2", "--processes", "1", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["policy"] == "share-pricing" and doc["seeds"] == [1, 2]
    assert 0 <= doc["mean_unallocated_gpu_pct_at_100"] <= 30
    assert cli.main([*argv, "--seeds", "3", "--processes", "1"]) == 0
    assert "policy share-pricing" in capsys.readouterr().out
