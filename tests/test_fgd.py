"""The FGD evaluation protocol (solver.fgd): workload tuning, typical pods, the six policies'
node scores and GPU choices on hand-made nodes, the fragmentation measure, bucketing, runs,
and the ``dynamig simulate`` subcommand."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import OPENB, needs_openb
from hypothesis import given, settings
from hypothesis import strategies as st

from dynamig.commands import simulate as simulate_cmd
from solver.fgd import (
    BestFitPolicy,
    ClusteringPolicy,
    ClusterState,
    DotProdPolicy,
    FGDPolicy,
    FragModel,
    FragTracker,
    PackingPolicy,
    PlacementError,
    Policy,
    RandomPolicy,
    SimNode,
    SimPod,
    StepLog,
    TypicalPods,
    bucketize,
    classify,
    fragment,
    make_policy,
    pick_best,
    policy_names,
    run,
    run_loaded,
    shuffle_and_tune,
    simulate,
    typical_pods,
)
from solver.fgd.fgdscore import fgd_score
from solver.fgd.policy import Placement, best_fit_gpus, register_policy
from solver.openb import load_nodes, load_pods

DATA = OPENB
needs_data = needs_openb

SIX = ("random", "dotprod", "clustering", "packing", "fgd-bestfit", "fgd")


def share(name: str, cpu: int, milli: int, mem: int = 1024) -> SimPod:
    return SimPod(name, cpu, mem, 1, milli)


def whole(name: str, cpu: int, n: int, mem: int = 1024) -> SimPod:
    return SimPod(name, cpu, mem, n, 1000)


def cpu_pod(name: str, cpu: int, mem: int = 1024) -> SimPod:
    return SimPod(name, cpu, mem)


def one_node(gpus: int = 2, cpu: int = 64_000, model: str = "T4", mem: int = 262_144) -> ClusterState:
    return ClusterState([SimNode("n0", cpu, mem, gpus, model)])


def prepared(policy: Policy, state: ClusterState, typical: TypicalPods | None = None) -> Policy:
    policy.prepare(state, typical or TypicalPods.from_specs([((1000, 500, 1, ()), 1)]), np.random.default_rng(0))
    return policy


# ------------------------------------------------------------------------------ SimPod
def test_simpod_from_openb_clamps_and_normalises() -> None:
    from solver.openb import OpenbPod

    assert SimPod.from_openb(OpenbPod("a", 1, 2, 1, 1500)).milli == 1000
    cpu = SimPod.from_openb(OpenbPod("b", 1, 2, 1, 0, ("T4",)))
    assert (cpu.num_gpu, cpu.milli, cpu.gpu_types) == (0, 0, ())
    p = SimPod.from_openb(OpenbPod("c", 1, 2, 1, 470, ("T4", "P100")))
    assert p.is_share and p.gpu_class == 0 and p.demand == 470 and p.gpu_types == ("T4", "P100")
    assert whole("d", 1, 4).gpu_class == 4 and cpu_pod("e", 1).gpu_class == -1
    with pytest.raises(ValueError, match="whole GPUs"):
        SimPod("x", 1, 1, 2, 500)


# ---------------------------------------------------------------------------- tuning
def test_tune_up_stop_quirk_adds_full_demand_but_tests_per_gpu_milli() -> None:
    pods = [whole("p8", 1000, 8)]  # demand 8000, per-GPU milli 1000
    out = shuffle_and_tune(pods, capacity_milli=10_000, ratio=1.3, rng=np.random.default_rng(1))
    # 8000 + 1000 <= 13000: a copy is added (total 16000 > target); 16000 + 1000 > 13000: stop
    assert [p.name for p in out] == ["p8", "p8-tuned-0"]
    assert sum(p.demand for p in out) == 16_000


def test_tune_up_samples_originals_including_cpu_pods_and_appends_after_shuffle() -> None:
    pods = [share(f"s{i}", 1000, 500) for i in range(5)] + [cpu_pod("c", 1000)]
    seed = 7
    out = shuffle_and_tune(pods, capacity_milli=2000, ratio=2.0, rng=np.random.default_rng(seed))
    originals = sorted(pods, key=lambda p: p.name)
    # replay the RNG: permutation first, then one integers(n) draw per tuning step
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(originals))
    assert out[: len(pods)] == [originals[i] for i in order]
    total = 2500
    expected: list[str] = []
    while True:
        src = originals[int(rng.integers(len(originals)))]
        if total + src.milli > 4000:
            break
        total += src.demand
        expected.append(f"{src.name}-tuned-{len(expected)}")
    assert [p.name for p in out[len(pods) :]] == expected
    assert sum(p.demand for p in out) == total <= 4000


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.sampled_from([0, 50, 470, 810, 1000]), min_size=1, max_size=30),
    st.integers(0, 2**32 - 1),
    st.sampled_from([0.3, 0.8, 1.3]),
)
def test_tune_totals(millis: list[int], seed: int, ratio: float) -> None:
    pods = [share(f"p{i:02d}", 100, m) if m else cpu_pod(f"p{i:02d}", 100) for i, m in enumerate(millis)]
    capacity = 4000
    target = ratio * capacity
    before = sum(millis)
    if before == 0:
        with pytest.raises(ValueError, match="without GPU demand"):
            shuffle_and_tune(pods, capacity, ratio, np.random.default_rng(seed))
        return
    out = shuffle_and_tune(pods, capacity, ratio, np.random.default_rng(seed))
    total = sum(p.demand for p in out)
    if before < target:  # tune-up: single-GPU pods only, so the total never passes the target
        assert sorted(p.name for p in out[: len(pods)]) == sorted(p.name for p in pods)
        assert total <= target
        assert all("-tuned-" in p.name for p in out[len(pods) :])
    elif before > target:  # tune-down: stop at the first total <= target
        assert total <= target
        assert total > target - max(millis)
        assert {p.name for p in out} <= {p.name for p in pods}
    else:
        assert total == before


def test_tune_disabled_only_shuffles() -> None:
    pods = [share(f"p{i}", 1, 100) for i in range(10)]
    out = shuffle_and_tune(pods, 100, 0.0, np.random.default_rng(3))
    assert sorted(p.name for p in out) == [p.name for p in pods] and len(out) == 10


# ---------------------------------------------------------------------------- typical pods
def test_typical_pods_take_specs_until_95_percent() -> None:
    pods = (
        [share(f"a{i}", 4000, 500) for i in range(50)]
        + [whole(f"b{i}", 8000, 1) for i in range(30)]
        + [cpu_pod(f"c{i}", 2000) for i in range(15)]
        + [whole(f"d{i}", 64000, 8) for i in range(5)]
    )
    typ = typical_pods(pods)
    assert typ.specs() == [(4000, 500, 1, ()), (8000, 1000, 1, ()), (2000, 0, 0, ())]
    assert typ.count.tolist() == [50, 30, 15]
    assert typ.total == 95
    assert np.allclose(typ.prob, [50 / 95, 30 / 95, 15 / 95])


def test_typical_pods_threshold_crossing_and_tie_order() -> None:
    # 40 / 40 / 20: after two specs 80 % < 95 % so the third is taken too; equal counts put the
    # larger CPU request first (upstream sort.Reverse order)
    pods = (
        [share(f"a{i}", 1000, 500) for i in range(40)]
        + [share(f"b{i}", 9000, 500) for i in range(40)]
        + [share(f"c{i}", 5000, 300, mem=1) for i in range(20)]
    )
    typ = typical_pods(pods)
    assert [s[0] for s in typ.specs()] == [9000, 1000, 5000]
    assert typical_pods(pods, popularity_pct=40).specs() == [(9000, 500, 1, ())]
    assert len(typical_pods(pods, popularity_pct=41).specs()) == 2
    with pytest.raises(ValueError):
        typical_pods([])


# ----------------------------------------------------------------------- fragmentation
TYP = TypicalPods.from_specs([((4000, 500, 1, ()), 3), ((8000, 0, 0, ()), 1)])


@pytest.mark.parametrize(
    ("cpu_free", "free", "model", "spec", "cls", "frag"),
    [
        (16000, [1000, 300], "T4", (4000, 500, 1, ()), "Q3", 300),
        (2000, [1000, 300], "T4", (4000, 500, 1, ()), "Q4", 1300),
        (16000, [300, 300], "T4", (4000, 500, 1, ()), "Q2", 600),
        (2000, [300, 300], "T4", (4000, 500, 1, ()), "Q1", 600),
        (16000, [1000, 1000], "T4", (4000, 1000, 2, ()), "Q3", 0),
        (16000, [1000, 400], "T4", (4000, 1000, 2, ()), "Q2", 1400),
        (16000, [1000, 300], "T4", (8000, 0, 0, ()), "XL", 1300),
        (2000, [1000, 300], "T4", (8000, 0, 0, ()), "XR", 1300),
        (16000, [1000, 300], "T4", (4000, 500, 1, ("V100M16", "P100")), "no_access", 1300),
        (16000, [1000, 300], "P100", (4000, 500, 1, ("V100M16", "P100")), "Q3", 300),
    ],
)
def test_fragmentation_classes(
    cpu_free: int, free: list[int], model: str, spec: tuple[int, int, int, tuple[str, ...]], cls: str, frag: int
) -> None:
    c, m, k, t = spec
    assert classify(cpu_free, free, model, c, m, k, t) == cls
    assert fragment(cpu_free, free, model, c, m, k, t) == frag


def test_frag_model_node_value_by_hand() -> None:
    fm = FragModel(TYP, ["T4"])
    # Q3 with fragment 300 (weight 3) + XL with all 1300 free (weight 1) → 2200 / 4 = 550
    num = fm.numerators(np.array([16000]), np.array([[300, 1000]]), np.array([0]))
    assert num.tolist() == [3 * 300 + 1300]


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 40_000),
            st.lists(st.sampled_from([0, 30, 150, 300, 500, 810, 1000]), min_size=1, max_size=8),
            st.sampled_from(["T4", "P100", "G2"]),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_frag_model_matches_reference(nodes: list[tuple[int, list[int], str]]) -> None:
    typ = TypicalPods.from_specs(
        [
            ((4000, 500, 1, ()), 5),
            ((12000, 1000, 1, ()), 4),
            ((3000, 150, 1, ("T4",)), 3),
            ((30000, 1000, 4, ()), 2),
            ((8000, 0, 0, ()), 2),
        ]
    )
    models = ["G2", "P100", "T4"]
    fm = FragModel(typ, models)
    gmax = max(len(f) for _, f, _ in nodes)
    cpu = np.array([c for c, _, _ in nodes], dtype=np.int64)
    gpu = np.array([f + [0] * (gmax - len(f)) for _, f, _ in nodes], dtype=np.int64)
    mdl = np.array([models.index(m) for _, _, m in nodes], dtype=np.int64)
    ref = [
        sum(int(w) * fragment(c, f, m, *spec) for spec, w in zip(typ.specs(), typ.count, strict=True))
        for c, f, m in nodes
    ]
    assert fm.numerators(cpu, gpu, mdl).tolist() == ref
    assert fm.numerators_dedup(np.tile(cpu, 5), np.tile(gpu, (5, 1)), np.tile(mdl, 5)).tolist() == ref * 5


def test_frag_tracker_follows_allocations() -> None:
    state = ClusterState([SimNode("a", 16000, 10**6, 2, "T4"), SimNode("b", 16000, 10**6, 2, "T4")])
    tracker = FragTracker(FragModel(TYP, state.models), state)
    assert tracker.frag_milli == 2 * 2000 / 4  # each empty node: Q3 (0) ×3 + XL (2000) ×1
    state.allocate(0, (1,), share("p", 0, 700))
    tracker.update(0)
    assert tracker.frag_milli == (2000 + 3 * 300 + 1300) / 4


# ------------------------------------------------------------------------------ state
def test_feasibility_filters_cpu_memory_model_and_gpus() -> None:
    state = ClusterState(
        [
            SimNode("t4", 16000, 10_000, 2, "T4"),
            SimNode("p100", 16000, 10_000, 2, "P100"),
            SimNode("small", 1000, 10_000, 1, "T4"),
        ]
    )
    assert state.feasible(share("a", 2000, 500)).tolist() == [True, True, False]
    assert state.feasible(share("a", 2000, 500, mem=20_000)).tolist() == [False, False, False]
    assert state.feasible(SimPod("a", 1000, 10, 1, 500, ("P100",))).tolist() == [False, True, False]
    assert state.feasible(whole("a", 1000, 2)).tolist() == [True, True, False]
    state.allocate(0, (0,), share("b", 0, 100, mem=0))
    assert state.feasible(whole("a", 1000, 2)).tolist() == [False, True, False]
    assert state.feasible(share("a", 1000, 900)).tolist() == [True, True, True]
    assert state.feasible(share("a", 1000, 1000)).tolist() == [True, True, True]
    with pytest.raises(PlacementError, match="too little free milli"):
        state.allocate(0, (0,), share("c", 0, 950))
    with pytest.raises(PlacementError, match="needs 2 distinct GPU"):
        state.allocate(1, (0, 0), whole("c", 0, 2))
    with pytest.raises(PlacementError, match="no GPU of model"):
        state.allocate(0, (1,), SimPod("c", 0, 0, 1, 100, ("P100",)))
    assert state.used_gpu_milli == 100 and state.capacity_milli == 5000


# ------------------------------------------------------------------ node scores by hand
def test_dotprod_score_by_hand() -> None:
    state = one_node(gpus=2, cpu=64_000)
    pol = prepared(DotProdPolicy(), state)
    assert isinstance(pol, DotProdPolicy)
    pod = share("p", 8000, 500)
    # dot = 64000/128000 · 8000/128000 + 2000/8000 · 500/8000 = 0.046875 → int(100·(1 − 0.0234375))
    assert pol.scores(state, pod, state.feasible(pod)).tolist() == [97]
    assert pol.scores(state, share("q", 70_000, 500), np.array([False])).tolist() == [0]


def test_clustering_score_by_hand() -> None:
    state = ClusterState([SimNode("a", 96_000, 10**6, 8, "G2"), SimNode("b", 96_000, 10**6, 8, "G2")])
    pol = prepared(ClusteringPolicy(), state)
    assert isinstance(pol, ClusteringPolicy)
    feas = np.array([True, True])
    assert pol.scores(state, share("s", 1000, 500), feas).tolist() == [25, 25]  # empty: base 0 + 25
    state.allocate(0, (0,), share("s0", 1000, 500))  # node a: L = 7500 → base 25·500//8000 = 1
    assert pol.scores(state, share("s", 1000, 500), feas).tolist() == [1 + 75, 25]
    assert pol.scores(state, whole("w", 1000, 1), feas).tolist() == [1, 25]  # only other classes
    state.allocate(0, (1, 2), whole("w2", 1000, 2))  # L = 5500 → base 25·2500//8000 = 7
    assert pol.scores(state, share("s", 1000, 500), feas).tolist() == [7 + 50, 25]
    assert pol.scores(state, cpu_pod("c", 1000), feas).tolist() == [0, 0]


def test_packing_score_by_hand() -> None:
    state = ClusterState(
        [
            SimNode("idle2", 64_000, 10**6, 2, "T4"),
            SimNode("idle8", 96_000, 10**6, 8, "G2"),
            SimNode("shared", 64_000, 10**6, 2, "T4"),
            SimNode("full1", 64_000, 10**6, 2, "T4"),
        ]
    )
    state.allocate(2, (0,), share("x", 0, 700))  # GPU0 has 300 free, GPU1 1000
    state.allocate(3, (0,), whole("y", 0, 1))  # GPU0 used up, GPU1 fully free
    pol = prepared(PackingPolicy(), state)
    assert isinstance(pol, PackingPolicy)
    feas = np.ones(4, dtype=bool)
    # idle: max(33 − k, k); shared GPU with 300 free: 100 − (300·100/1000)/10 = 97; needs a fully
    # free GPU on a used node: max(50 − 1, 33)
    assert pol.scores(state, share("p", 0, 200), feas).tolist() == [31, 25, 97, 49]
    assert pol.scores(state, share("p", 0, 500), feas)[2:].tolist() == [49, 49]
    assert pol.scores(state, whole("w", 0, 2), feas).tolist() == [31, 25, 48, 48]
    assert pol.scores(state, cpu_pod("c", 1), feas).tolist() == [0, 0, 0, 0]


def test_bestfit_score_by_hand_and_normalisation() -> None:
    state = ClusterState([SimNode("a", 64_000, 10**6, 2, "T4"), SimNode("b", 96_000, 10**6, 8, "G2")])
    pod = share("p", 8000, 1000)
    # a: s = 0.5·56000/128000 + 0.5·1000/8000 = 0.28125 → 71; b: 0.5·88000/128000 + 0.5·7000/8000
    assert BestFitPolicy.raw_scores(state, pod).tolist() == [71, int(100 * (1 - (0.34375 + 0.4375)))]
    pol = prepared(BestFitPolicy(), state)
    assert isinstance(pol, BestFitPolicy)
    assert pol.scores(state, pod, np.array([True, True])).tolist() == [100, 0]
    assert pol.scores(state, pod, np.array([True, False])).tolist() == [0, -1]  # all equal → 0


def test_fgd_score_by_hand() -> None:
    state = one_node(gpus=2, cpu=16_000)
    pol = prepared(FGDPolicy(), state, TYP)
    assert isinstance(pol, FGDPolicy)
    idx = np.array([0])
    # empty node: F = (3·0 + 1·2000)/4 = 500; either GPU: F = 1500/4 = 375, Δ = 125 → first GPU
    score, gpu = pol.node_scores(state, share("p", 2000, 500), idx)
    assert (score.tolist(), gpu.tolist()) == ([int(100 / (1 + math.exp(-0.125)))], [0])
    assert score.tolist() == [53]
    # a CPU pod that starves the node's CPU: F after = (3·2000 + 2000)/4 = 2000, Δ = −1500
    score, _ = pol.node_scores(state, cpu_pod("c", 14_000), idx)
    assert score.tolist() == [int(100 / (1 + math.exp(1.5)))] == [18]
    state.allocate(0, (0,), share("x", 0, 700))  # free [300, 1000], F = (3·300 + 1300)/4 = 550
    # 200 on GPU0 → [100, 1000]: F = (300 + 1100)/4 = 350, Δ = 200 → 54; on GPU1 → Δ = 50 → 51
    score, gpu = pol.node_scores(state, share("p", 2000, 200), idx)
    assert (score.tolist(), gpu.tolist()) == ([54], [0])
    assert fgd_score(2200, 1400, 4).tolist() == 54
    assert pol.select(state, share("p", 2000, 200)) == (0, (0,))


# --------------------------------------------------------------------------- GPU choice
def test_gpu_choice_rules() -> None:
    state = one_node(gpus=4, cpu=64_000)
    state.allocate(0, (1,), share("a", 0, 600))  # [1000, 400, 1000, 1000]
    state.allocate(0, (3,), share("b", 0, 600))  # [1000, 400, 1000, 400]
    assert best_fit_gpus(state, 0, share("p", 0, 300)) == (1,)  # least free that fits, first index
    assert best_fit_gpus(state, 0, share("p", 0, 500)) == (0,)
    assert best_fit_gpus(state, 0, whole("w", 0, 2)) == (0, 2)  # lowest-index fully free
    assert best_fit_gpus(state, 0, cpu_pod("c", 1)) == ()
    for name in ("dotprod", "clustering", "packing", "fgd-bestfit"):
        pol = prepared(make_policy(name), state)
        assert pol.select(state, share("p", 0, 300)) == (0, (1,))
        assert pol.select(state, whole("w", 0, 2)) == (0, (0, 2))
    rnd = prepared(RandomPolicy(), state)
    picks = {rnd.select(state, share("p", 0, 300)) for _ in range(60)}
    assert picks == {(0, (g,)) for g in range(4)}  # uniform among the GPUs that fit
    assert rnd.select(state, share("p", 0, 500)) in {(0, (0,)), (0, (2,))}
    assert rnd.select(state, whole("w", 0, 2)) == (0, (0, 2))


def test_tie_break_first_node_in_order_or_random() -> None:
    feas = np.array([False, True, True, True])
    scores = np.array([9, 5, 7, 7])
    assert pick_best(scores, feas) == 2
    rng = np.random.default_rng(0)
    assert {pick_best(scores, feas, rng) for _ in range(40)} == {2, 3}
    assert pick_best(scores, np.zeros(4, dtype=bool)) is None


# ------------------------------------------------------------------------------ buckets
def test_bucketing() -> None:
    log = StepLog(
        arrived_milli=np.array([500, 1000, 1004, 1005, 1006]),
        used_milli=np.array([500, 900, 900, 920, 950]),
        frag_milli=np.array([100.0, 50.0, 50.0, 50.0, 20.0]),
        idle_milli=np.array([500, 100, 100, 80, 50]),
        placed=np.ones(5, dtype=bool),
    )
    b = bucketize(log, total_gpus=1)  # 1 GPU: arrived 1005 → 100.5 % → 100 (half to even)
    un = b.unallocated_gpu_pct
    assert un[50] == 50.0
    assert un[100] == round(100 - (90 + 90 + 92) / 3, 2)
    assert un[101] == 5.0
    assert un[99] == un[100]  # no row at 99: mean over [98, 100]
    assert un[102] == 5.0  # no row at 102: mean over [101, 103]
    assert 103 not in un and 0 not in un
    assert b.fragmentation_pct[101] == 2.0  # 100 · 20 / 1000 / 1
    assert b.frag_rate_pct[101] == 40.0  # 100 · 20 / 50


# --------------------------------------------------------------------------------- runs
def small_cluster() -> list[SimNode]:
    nodes = []
    for i in range(6):
        nodes.append(SimNode(f"g2-{i}", 96_000, 393_216, 8, "G2"))
        nodes.append(SimNode(f"t4-{i}", 104_000, 524_288, 2, "T4"))
        nodes.append(SimNode(f"p100-{i}", 16_000, 122_880, 2, "P100"))
    return nodes


def small_workload(n: int = 150, seed: int = 5) -> list[SimPod]:
    rng = np.random.default_rng(seed)
    kinds = [
        lambda i: share(f"p{i:04d}", 3152, 810),
        lambda i: share(f"p{i:04d}", 8000, 470),
        lambda i: whole(f"p{i:04d}", 11_300, 1),
        lambda i: whole(f"p{i:04d}", 40_000, 4),
        lambda i: cpu_pod(f"p{i:04d}", 12_500),
        lambda i: SimPod(f"p{i:04d}", 4000, 4096, 1, 320, ("T4", "P100")),
    ]
    return [kinds[int(rng.integers(len(kinds)))](i) for i in range(n)]


@pytest.mark.parametrize("policy", SIX)
def test_run_invariants(policy: str) -> None:
    nodes, pods = small_cluster(), small_workload()
    res = run_loaded(nodes, pods, policy, seed=3)
    steps = res.steps
    assert steps is not None
    assert res.policy == policy and res.placed + res.failed == res.pods
    assert res.used_milli <= res.capacity_milli == 6 * 12 * 1000
    assert np.all(np.diff(steps.arrived_milli) >= 0) and np.all(np.diff(steps.used_milli) >= 0)
    assert np.all(steps.used_milli <= steps.arrived_milli)
    assert np.all(steps.frag_milli <= steps.idle_milli + 1e-9)
    assert res.buckets.unallocated_gpu_pct  # some buckets
    assert res.arrived_milli >= 1.3 * res.capacity_milli - 4000  # tuned up to the target
    again = run_loaded(nodes, pods, policy, seed=3)
    assert again.buckets == res.buckets and again.placed == res.placed  # reproducible


def test_fgd_beats_random_on_small_cluster() -> None:
    nodes, pods = small_cluster(), small_workload(300)
    un = {p: run_loaded(nodes, pods, p, seed=1).unallocated_gpu_pct_at_100 for p in ("random", "fgd")}
    assert un["fgd"] is not None and un["random"] is not None and un["fgd"] <= un["random"]


class FirstFit(Policy):
    """A plug-in example: the first feasible node, best-fit GPUs."""

    name = "firstfit-test"

    def select(self, state: ClusterState, pod: SimPod) -> Placement | None:
        idx = np.flatnonzero(state.feasible(pod))
        if idx.size == 0:
            return None
        node = int(idx[0])
        return node, best_fit_gpus(state, node, pod)


class Cheater(Policy):
    name = "cheater-test"

    def select(self, state: ClusterState, pod: SimPod) -> Placement | None:
        return 0, tuple(range(pod.num_gpu + 1))


def test_custom_policy_plugs_in_and_is_validated() -> None:
    register_policy(FirstFit.name, FirstFit)
    assert FirstFit.name in policy_names()
    res = run_loaded(small_cluster(), small_workload(60), FirstFit.name, seed=2)
    assert res.policy == FirstFit.name and res.placed > 0
    with pytest.raises(PlacementError):
        run_loaded(small_cluster(), small_workload(10), Cheater, seed=2)
    with pytest.raises(ValueError, match="unknown policy"):
        run_loaded(small_cluster(), small_workload(10), "nope", seed=2)
    with pytest.raises(ValueError, match="already registered"):
        register_policy(FirstFit.name, Cheater)


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


def test_simulate_json_shape_and_parallel_equals_serial(tmp_path: Path) -> None:
    nodes, pods = write_csvs(tmp_path)
    doc = simulate(pods, nodes, "fgd-bestfit", [1, 2, 3], processes=2)
    assert doc["policy"] == "fgd-bestfit" and doc["seeds"] == [1, 2, 3] and doc["protocol"] == "fgd"
    for s in ("1", "2", "3"):
        per = doc["per_seed"][s]
        assert set(per) >= {"unallocated_gpu_pct", "fragmentation_pct", "frag_rate_pct", "pods", "placed"}
        assert all(isinstance(k, str) for k in per["unallocated_gpu_pct"])
    vals = [doc["per_seed"][s]["unallocated_gpu_pct"]["100"] for s in ("1", "2", "3")]
    assert doc["mean_unallocated_gpu_pct_at_100"] == pytest.approx(sum(vals) / 3, abs=1e-4)
    serial = simulate(pods, nodes, "fgd-bestfit", [1, 2, 3], processes=1)
    strip = {s: {k: v for k, v in r.items() if k != "elapsed_s"} for s, r in serial["per_seed"].items()}
    assert strip == {s: {k: v for k, v in r.items() if k != "elapsed_s"} for s, r in doc["per_seed"].items()}
    json.dumps(doc)
    single = run(pods, nodes, "fgd-bestfit", 1)
    assert single.unallocated_gpu_pct_at_100 == vals[0] and single.trace == str(pods)


# ------------------------------------------------------------------------------- CLI
def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="dynamig")
    sub = parser.add_subparsers(dest="command")
    simulate_cmd.add_parser(sub)
    args = parser.parse_args(["simulate", *argv])
    return simulate_cmd.run(args)


def test_parse_seeds() -> None:
    assert simulate_cmd.parse_seeds("42-51") == list(range(42, 52))
    assert simulate_cmd.parse_seeds("1,3,10-12") == [1, 3, 10, 11, 12]
    for bad in ("", "a", "5-1", "1,1", "-3", "1,,2"):
        with pytest.raises(ValueError):
            simulate_cmd.parse_seeds(bad)


def test_cli_json_is_one_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nodes, pods = write_csvs(tmp_path)
    code = cli(["--nodes", str(nodes), "--pods", str(pods), "--policy", "fgd", "--seeds", "1-2", "--json"])
    out = capsys.readouterr()
    assert code == 0
    doc = json.loads(out.out)
    assert doc["policy"] == "fgd" and doc["seeds"] == [1, 2]
    assert "mean_unallocated_gpu_pct_at_100" in doc


def test_cli_human_output_and_default_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nodes, pods = write_csvs(tmp_path)
    assert cli(["--nodes", str(nodes), "--pods", str(pods), "--seeds", "3", "--processes", "1"]) == 0
    out = capsys.readouterr()
    assert "at 100% arrived load, mean over 1 seed(s): unallocated GPU compute" in out.out
    assert "policy fgd " in out.out and "tie-break first" in out.out  # the default on the node list


def test_cli_user_errors_name_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nodes, pods = write_csvs(tmp_path)
    missing = tmp_path / "missing.csv"
    assert cli(["--nodes", str(missing), "--pods", str(pods), "--policy", "fgd"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"dynamig simulate: {missing}: no such file"]
    bad = tmp_path / "bad.csv"
    bad.write_text("name,cpu_milli,memory_mib,num_gpu,gpu_milli\np,1,1,1,x\n")
    assert cli(["--nodes", str(nodes), "--pods", str(bad), "--policy", "fgd"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{bad}:2: column gpu_milli" in err[0]
    assert cli(["--nodes", str(nodes), "--pods", str(pods), "--policy", "nope"]) == 2
    with pytest.raises(SystemExit) as info:
        cli(["--nodes", str(nodes), "--pods", str(pods), "--seeds", "9-1"])
    assert info.value.code == 2


# ------------------------------------------------------------------------- real data
@needs_data
def test_real_trace_slice_all_policies() -> None:
    nodes = load_nodes(DATA / "openb_node_list_gpu_node.csv")[:150]
    pods = load_pods(DATA / "openb_pod_list_default.csv")[:900]
    typ = typical_pods([SimPod.from_openb(p) for p in load_pods(DATA / "openb_pod_list_default.csv")])
    assert typ.size == 35 and typ.specs()[0] == (3152, 810, 1, ())
    for policy in SIX:
        res = run_loaded(nodes, pods, policy, seed=42, keep_steps=False)
        assert res.placed > 0 and res.steps is None
