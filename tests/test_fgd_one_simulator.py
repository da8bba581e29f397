"""The FGD paper's policies on the one simulator (``solver.policies.fgd_model`` through
``solver.whatif.runner``) make the same decisions as ``solver.fgd``'s own loop, seed for seed;
the derived milli-GPU view stays equal to one built from scratch; and the limits are clear errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import OPENB, needs_openb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.cluster import state_from_inventory
from models.config import Inventory, InventoryNode
from models.plan import apply_plan, release_pod
from models.requests import ContainerRequest, PodRequest
from models.types import NodeMode
from models.validate import validate
from solver.fgd import cluster as fgd_cluster
from solver.fgd.runner import run_loaded
from solver.fgd.workload import SimPod, typical_pods
from solver.openb import OpenbNode, OpenbPod, load_nodes, load_pods
from solver.policies import FGD_POLICIES, PolicyContext, info, names, placer
from solver.policies.fgd_model import MilliView, sim_pod
from solver.whatif.cluster import original_name
from solver.whatif.runner import run_once
from solver.whatif.specs import nodes_spec

Decision = tuple[str, str, tuple[int, ...]]  # (pod, node, GPUs)


@contextmanager
def recorded() -> Iterator[tuple[list[Decision], list[Decision]]]:
    """Every ``allocate`` of the FGD package's state (``solver.fgd``'s loop) and of the one
    simulator's derived view, by pod and node name (the one simulator renames nodes by rank)."""
    own: list[Decision] = []
    one: list[Decision] = []
    real = fgd_cluster.ClusterState.allocate

    def spy(self: fgd_cluster.ClusterState, node: int, gpus: tuple[int, ...], pod: SimPod) -> None:
        if isinstance(self, MilliView):
            one.append((pod.name.split("/", 1)[1], original_name(self.names[node]), tuple(gpus)))
        else:
            own.append((pod.name, self.names[node], tuple(gpus)))
        real(self, node, gpus, pod)

    fgd_cluster.ClusterState.allocate = spy  # type: ignore[method-assign]
    try:
        yield own, one
    finally:
        fgd_cluster.ClusterState.allocate = real  # type: ignore[method-assign]


def same_run(nodes: list[OpenbNode], pods: list[OpenbPod], policy: str, seed: int,
             tie_break: str = "first") -> tuple[int, float | None]:
    """Run both loops; assert the same decisions, placed pods and unallocated GPU per bucket."""
    with recorded() as (own, one):
        a = run_loaded(nodes, pods, policy, seed, tie_break=tie_break)
        b = run_once(replace(nodes_spec(nodes, pods, policy), tie_break=tie_break), seed)
    assert one == own, policy
    assert a.placed == b.placed and a.pods == b.pods
    assert a.buckets.unallocated_gpu_pct == b.buckets.unallocated_demand_pct
    assert b.buckets.unallocated_gpu_pct == b.buckets.unallocated_demand_pct  # hami-core: compute = demand
    return a.placed, a.buckets.unallocated_gpu_pct.get(100)


def small_cluster() -> list[OpenbNode]:
    shapes = [(32000, 131072, 8, "G2"), (16000, 65536, 2, "T4"), (64000, 262144, 4, "V100M16"),
              (8000, 32768, 1, "P100"), (48000, 196608, 8, "G2"), (24000, 98304, 2, "A10")]
    return [OpenbNode(f"openb-node-{i:04d}", *shapes[i % len(shapes)]) for i in range(12)]


def small_workload(n: int) -> list[OpenbPod]:
    mix = [(1, 110), (1, 250), (1, 500), (1, 1000), (2, 1000), (0, 0), (1, 370), (4, 1000), (1, 60), (8, 1000)]
    return [OpenbPod(f"openb-pod-{i:04d}", 1000 + 1500 * (i % 5), 2048 * (1 + i % 4), *mix[i % len(mix)])
            for i in range(n)]


@pytest.mark.parametrize("policy", FGD_POLICIES)
@pytest.mark.parametrize("seed", [1, 42])
def test_same_decisions_as_the_fgd_package(policy: str, seed: int) -> None:
    placed, at100 = same_run(small_cluster(), small_workload(90), policy, seed)
    assert placed > 0 and at100 is not None


@pytest.mark.parametrize("policy", ["fgd", "packing", "fgd-bestfit"])
def test_random_tie_break_same_decisions(policy: str) -> None:
    # ties drawn from the run's RNG: the streams line up only if both loops draw in the same order
    same_run(small_cluster(), small_workload(90), policy, 5, tie_break="random")


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shapes=st.lists(st.tuples(st.sampled_from([4000, 16000, 64000]), st.sampled_from([8192, 65536]),
                              st.sampled_from([1, 2, 4, 8]), st.sampled_from(["T4", "G2", "V100M32"])),
                    min_size=1, max_size=6),
    reqs=st.lists(st.tuples(st.integers(0, 8000), st.integers(0, 16384),
                            st.sampled_from([(0, 0), (1, 1000), (2, 1000), (4, 1000)])
                            | st.tuples(st.just(1), st.integers(1, 99).map(lambda x: 10 * x))),
                  min_size=1, max_size=40),
    policy=st.sampled_from(FGD_POLICIES),
    seed=st.integers(0, 2**16),
)
def test_property_same_decisions(shapes: list[tuple[int, int, int, str]], reqs: list[tuple[int, int, tuple[int, int]]],
                                 policy: str, seed: int) -> None:
    nodes = [OpenbNode(f"openb-node-{i:04d}", *s) for i, s in enumerate(shapes)]
    pods = [OpenbPod(f"openb-pod-{i:04d}", c, m, g, milli) for i, (c, m, (g, milli)) in enumerate(reqs)]
    if not any(p.num_gpu for p in pods):
        pods.append(OpenbPod("openb-pod-gpu", 1000, 1024, 1, 500))  # the protocol tunes GPU demand
    same_run(nodes, pods, policy, seed)


def hami_state(gpus: tuple[int, ...] = (2, 4, 8), cpu: int = 32000) -> tuple[object, list[str]]:
    inv = Inventory(tuple(InventoryNode(f"n{i}", NodeMode.HAMI_CORE, (("T4", k),), cpu, 65536, 100)
                          for i, k in enumerate(gpus)))
    state = state_from_inventory(inv)
    return state, [n.name for n in state.nodes]


def share(name: str, pct: int, count: int = 1, cpu: int = 1000) -> PodRequest:
    c = ContainerRequest("main", 0, count, None, None if pct >= 100 else pct, min(pct, 100))
    return PodRequest("t", name, containers=(c,), cpu_milli=cpu, host_memory_mib=512)


def assert_view_equals_fresh(view: MilliView, state: object) -> None:
    fresh = MilliView(state)  # type: ignore[arg-type]
    for attr in ("cpu_free", "mem_free", "gpu_free", "gpu_free_sum", "gpu_max_free", "full_free", "class_count"):
        assert np.array_equal(getattr(view, attr), getattr(fresh, attr)), attr


@settings(max_examples=25, deadline=None)
@given(steps=st.lists(st.tuples(st.sampled_from([10, 30, 50, 70, 100, 200, 400]), st.booleans()),
                      min_size=1, max_size=30),
       policy=st.sampled_from(FGD_POLICIES))
def test_property_view_stays_in_step_with_the_state(steps: list[tuple[int, bool]], policy: str) -> None:
    # arrivals and departures (release_pod, as the churn protocol does): the incrementally kept view
    # always equals one derived from scratch, and every plan validates
    state, _ = hami_state()
    pods = [sim_pod(share(f"p{i}", min(pct, 100), pct // 100 if pct > 100 else 1)) for i, (pct, _) in enumerate(steps)]
    ctx = PolicyContext(typical_pods(pods), np.random.default_rng(7))
    place = placer(policy, context=ctx)
    live: list[str] = []
    for i, (pct, leave) in enumerate(steps):
        req = share(f"p{i}", min(pct, 100), pct // 100 if pct > 100 else 1)
        plan = place(state, req, None)  # type: ignore[arg-type]
        if plan.placed:
            assert validate(state, plan, {req.key: req}) == []  # type: ignore[arg-type]
            state = apply_plan(state, plan, {req.key: req})  # type: ignore[arg-type]
            live.append(req.key)
        if leave and live:
            state = release_pod(state, live.pop(0))  # type: ignore[arg-type]
        view = place.view  # type: ignore[attr-defined]
        view.sync(state)
        assert_view_equals_fresh(view, state)


def test_cpu_only_pods_candidates_and_errors() -> None:
    state, names_ = hami_state((2, 2))
    ctx = PolicyContext(typical_pods([SimPod("x", 1000, 512, 1, 500)]), np.random.default_rng(0))
    place = placer("fgd", context=ctx)
    cpu_only = PodRequest("t", "c", cpu_milli=2000, host_memory_mib=1024)
    plan = place(state, cpu_only, None)  # type: ignore[arg-type]
    assert plan.placed and plan.primary is not None and plan.primary.units == () and plan.policy == "fgd"
    state = apply_plan(state, plan, {cpu_only.key: cpu_only})  # type: ignore[arg-type]
    # candidates restrict the filter stage
    plan = place(state, share("s", 50), [names_[1]])  # type: ignore[arg-type]
    assert plan.placed and plan.primary is not None and plan.primary.node == names_[1]
    assert not place(state, share("big", 50, cpu=10**9), None).placed  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one share or whole GPUs"):
        sim_pod(share("two", 50, count=2))
    with pytest.raises(ValueError, match="gpumem as a percentage"):
        sim_pod(PodRequest("t", "mib", containers=(ContainerRequest("main", 0, 1, 4096, None, 10),)))
    with pytest.raises(ValueError, match="GPU type or UUID"):
        sim_pod(PodRequest("t", "ty", containers=(ContainerRequest("main", 0, 1, None, 10, 10),), use_types=("T4",)))
    with pytest.raises(ValueError, match="needs the trace's typical pods"):
        placer("fgd")
    mig = state_from_inventory(Inventory((InventoryNode("m", NodeMode.MIG, (("A100-SXM4-80GB", 1),)),)))
    with pytest.raises(ValueError, match="runs on hami-core GPUs; node m GPU 0 is mig"):
        placer("packing", context=ctx)(mig, share("s", 50), None)


def test_one_registry_unique_names() -> None:
    assert len(set(names())) == len(names())
    assert set(FGD_POLICIES) == {"random", "dotprod", "clustering", "packing", "fgd-bestfit", "fgd", "share-pricing"}
    assert all(info(p).fgd_model and info(p).places_cpu_pods for p in FGD_POLICIES)
    assert not info("bestfit").fgd_model  # the planner-side bestfit is not the paper's fgd-bestfit


@needs_openb
@pytest.mark.parametrize("policy", ["fgd", "random"])
def test_real_trace_slice_same_result(policy: str) -> None:
    nodes = load_nodes(OPENB / "openb_node_list_gpu_node.csv")[:120]
    pods = load_pods(OPENB / "openb_pod_list_default.csv")[:700]
    placed, at100 = same_run(nodes, pods, policy, 42)
    assert placed > 0 and at100 is not None


def test_reproduce_writes_the_one_simulator_section_from_simulate_json(tmp_path: Path) -> None:
    # dynamig simulate --json per policy -> python -m solver.fgd.reproduce --from-simulate: the
    # section and JSON entry, with the per-seed comparison against the own loop's entry
    import argparse
    import contextlib
    import io
    import json

    from dynamig.commands import simulate as simulate_cmd
    from solver.fgd import reproduce
    from solver.fgd.runner import simulate as own_simulate

    nodes = small_cluster()
    pods = [OpenbPod(f"openb-pod-{i:04d}", 2000, 4096, 1, 250 + 10 * (i % 20)) for i in range(40)]
    ncsv, pcsv = tmp_path / "nodes.csv", tmp_path / "pods.csv"
    ncsv.write_text("sn,cpu_milli,memory_mib,gpu,model\n" + "".join(
        f"{n.name},{n.cpu_milli},{n.memory_mib},{n.gpus},{n.model}\n" for n in nodes))
    pcsv.write_text("name,cpu_milli,memory_mib,num_gpu,gpu_milli\n" + "".join(
        f"{p.name},{p.cpu_milli},{p.memory_mib},{p.num_gpu},{p.gpu_milli}\n" for p in pods))
    runs = tmp_path / "runs"
    runs.mkdir()
    own: dict[str, object] = {"seeds": [1, 2], "policies": {}}
    for policy in ("fgd", "random"):
        parser = argparse.ArgumentParser(prog="dynamig")
        simulate_cmd.add_parser(parser.add_subparsers(dest="command"))
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert simulate_cmd.run(parser.parse_args(["simulate", "--nodes", str(ncsv), "--pods", str(pcsv),
                                                        "--policy", policy, "--seeds", "1-2", "--processes", "1",
                                                        "--json"])) == 0
        (runs / f"{policy}.json").write_text(buf.getvalue())
        mine = own_simulate(pcsv, ncsv, policy, [1, 2], processes=1)
        own["policies"][policy] = {  # type: ignore[index]
            "unallocated_gpu_pct_at_100": [mine["per_seed"][s]["unallocated_gpu_pct"].get("100") for s in ("1", "2")],
            "failed_pods": [mine["per_seed"][s]["failed"] for s in ("1", "2")]}
    out = tmp_path / "docs"
    out.mkdir()
    (out / "fgd_reproduction.json").write_text(json.dumps({"traces": {"default": own}}))
    (out / "fgd_reproduction.md").write_text("# FGD\n\n## Default trace\n\ntable\n")
    assert reproduce.main(["--from-simulate", str(runs), "--out", str(out)]) == 0
    entry = json.loads((out / "fgd_reproduction.json").read_text())["one_simulator"]
    assert set(entry) == {"fgd", "random"} and all(e["same_as_own_loop"] is True for e in entry.values())
    assert all(v is not None for e in entry.values() for v in e["unallocated_gpu_pct_at_100"])
    md = (out / "fgd_reproduction.md").read_text()
    assert md.startswith("# FGD\n\n## Default trace\n\ntable\n\n## Through the one simulator")
    assert "| FGD |" in md and "seeds 1–2;" in md
    assert "--policy random --seeds 1-2 --processes 1 --json > DIR/random.json" in md
    # a second write replaces the section instead of appending another
    assert reproduce.main(["--from-simulate", str(runs), "--out", str(out)]) == 0
    assert (out / "fgd_reproduction.md").read_text().count("## Through the one simulator") == 1
