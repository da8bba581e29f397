"""One simulator, two ways to describe a cluster: the openb node list (``--nodes --mig-model``)
and an inventory that states the same nodes must give the same result for the same policy, in
both protocols (fgd and churn); dra-firstfit runs on the fgd protocol too."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynamig.commands import simulate as simulate_cmd
from solver.openb import OpenbNode, OpenbPod
from solver.policies import CLUSTER_POLICIES, names

A100 = "A100-SXM4-80GB"


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="dynamig")
    sub = parser.add_subparsers(dest="command")
    simulate_cmd.add_parser(sub)
    return simulate_cmd.run(parser.parse_args(["simulate", *argv]))


def write_cluster(tmp_path: Path) -> tuple[Path, Path, Path]:
    nodes = [OpenbNode(f"openb-node-{i:04d}", 32000 if i % 3 else 8000, 262144, 8 if i % 2 else 2, "G2")
             for i in range(4)]
    mix = [(1, 110), (1, 230), (1, 370), (1, 470), (1, 810), (1, 1000), (2, 1000), (0, 0)]
    pods = [OpenbPod(f"openb-pod-{i:04d}", 2000 + 500 * (i % 4), 4096, *mix[i % len(mix)], (), "LS", "Succeeded",
                     100 * i, 100 * i + 300 + 37 * (i % 11), 100 * i) for i in range(48)]
    nf = tmp_path / "nodes.csv"
    nf.write_text("sn,cpu_milli,memory_mib,gpu,model\n" + "".join(
        f"{n.name},{n.cpu_milli},{n.memory_mib},{n.gpus},{n.model}\n" for n in nodes))
    pf = tmp_path / "pods.csv"
    pf.write_text("name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,"
                  "scheduled_time\n" + "".join(
                      f"{p.name},{p.cpu_milli},{p.memory_mib},{p.num_gpu},{p.gpu_milli},,{p.qos},{p.pod_phase},"
                      f"{p.creation_time},{p.deletion_time},{p.scheduled_time}\n" for p in pods))
    inv = tmp_path / "inventory.yaml"
    inv.write_text("nodes:\n" + "".join(
        f"  - name: {n.name}\n    mode: mig\n    gpus: {{model: {A100}, count: {n.gpus}}}\n"
        f"    cpu_milli: {n.cpu_milli}\n    memory_mib: {n.memory_mib}\n" for n in nodes))
    return nf, pf, inv


def _doc(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    assert cli([*argv, "--json", "--seeds", "1-2"]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


@pytest.mark.parametrize("policy", CLUSTER_POLICIES)
def test_fgd_protocol_node_list_equals_inventory(policy: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    nodes, pods, inv = write_cluster(tmp_path)
    by_list = _doc(["--nodes", str(nodes), "--mig-model", A100, "--pods", str(pods), "--policy", policy,
                    "--processes", "1"], capsys)
    by_inv = _doc(["--inventory", str(inv), "--pods", str(pods), "--policy", policy, "--processes", "1"], capsys)
    keep = ("placed", "failed", "unallocated_gpu_pct", "unallocated_demand_pct", "reconfigurations", "repartitions")
    for seed in ("1", "2"):
        a = by_list["per_seed"][seed]  # type: ignore[index]
        b = by_inv["per_seed"][seed]  # type: ignore[index]
        assert {k: a[k] for k in keep} == {k: b[k] for k in keep}, (policy, seed)
    assert by_list["mean_unallocated_gpu_pct_at_100"] == by_inv["mean_unallocated_gpu_pct_at_100"]


def test_churn_node_list_equals_inventory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nodes, pods, inv = write_cluster(tmp_path)
    common = ["--protocol", "churn", "--pods", str(pods), "--load", "0.9", "--arrivals", "20", "--engine", "serial",
              "--policy", "dynamig,hami-legacy"]
    a = _doc([*common, "--nodes", str(nodes), "--mig-model", A100], capsys)
    b = _doc([*common, "--inventory", str(inv)], capsys)
    def strip(doc: dict[str, object]) -> list[object]:  # wall-clock latencies differ run to run
        return [{**p, "loads": [{k: v for k, v in r.items() if not k.startswith("planner_")} for r in p["loads"]]}
                for p in doc["policies"]]  # type: ignore[attr-defined]

    assert strip(a) == strip(b) and a["fluid_limit_load"] == b["fluid_limit_load"]


def test_milli_and_cluster_policies_keep_to_their_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nodes, pods, inv = write_cluster(tmp_path)
    with pytest.raises(SystemExit) as exc:
        cli(["--nodes", str(nodes), "--pods", str(pods), "--policy", "dynamig", "--seeds", "1",
             "--objective", "placed,nonsense"])
    assert exc.value.code == 2
    assert "bad --objective" in capsys.readouterr().err
    # the FGD paper's policies read shares as milli-GPU: hami-core GPUs only, said before any work
    assert cli(["--inventory", str(inv), "--pods", str(pods), "--policy", "share-pricing", "--seeds", "1"]) == 2
    assert "runs on hami-core GPUs; node openb-node-0000 GPU 0 is mig" in capsys.readouterr().err
    assert cli(["--nodes", str(nodes), "--mig-model", A100, "--pods", str(pods), "--policy", "fgd"]) == 2
    assert "not on the MIG variant" in capsys.readouterr().err


def write_hami_core_inventory(tmp_path: Path, nodes_csv: Path) -> Path:
    """The node list as an inventory of hami-core nodes (the models of ``HAMI_CORE_MODELS``)."""
    from solver.openb import load_nodes
    from solver.whatif.specs import HAMI_CORE_MODELS, HAMI_CORE_SPLIT

    inv = tmp_path / "hami-core.yaml"
    inv.write_text("nodes:\n" + "".join(
        f"  - name: {n.name}\n    mode: hami-core\n    gpus: {{model: {HAMI_CORE_MODELS[n.model]}, count: {n.gpus}}}\n"
        f"    cpu_milli: {n.cpu_milli}\n    memory_mib: {n.memory_mib}\n    split: {HAMI_CORE_SPLIT}\n"
        for n in load_nodes(nodes_csv)))
    return inv


@pytest.mark.parametrize("policy", names())
def test_fgd_protocol_hami_core_node_list_equals_inventory(policy: str, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    # --nodes with a cluster policy and no --mig-model: the node list's own GPUs on hami-core
    nodes, pods, _ = write_cluster(tmp_path)
    inv = write_hami_core_inventory(tmp_path, nodes)
    flags = ["--pods", str(pods), "--policy", policy, "--processes", "1", "--tie-quantum", "10",
             "--objective", "placed,reconfigurations,template_order,fragmentation,waste"]
    by_list = _doc(["--nodes", str(nodes), *flags], capsys)
    by_inv = _doc(["--inventory", str(inv), *flags], capsys)
    keep = ("pods", "placed", "failed", "failed_gpu_pods", "unallocated_gpu_pct", "unallocated_demand_pct",
            "planner_calls", "reconfigurations")
    for seed in ("1", "2"):
        a = by_list["per_seed"][seed]  # type: ignore[index]
        b = by_inv["per_seed"][seed]  # type: ignore[index]
        assert {k: a[k] for k in keep} == {k: b[k] for k in keep}, (policy, seed)
        assert a["reconfigurations"] == 0  # hami-core: no layouts
        assert 0 < a["placed"] < a["pods"]  # tuned to 1.3x: some fail
    assert by_list["variant"] == "hami-core" and by_list["tie_quantum"] == 10
    assert by_list["objective"] == ["placed", "reconfigurations", "template_order", "fragmentation", "waste"]


def test_planner_runs_for_every_gpu_pod_on_the_node_list(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    nodes, pods, _ = write_cluster(tmp_path)
    doc = _doc(["--nodes", str(nodes), "--pods", str(pods), "--policy", "dynamig", "--processes", "1"], capsys)
    per = doc["per_seed"]  # type: ignore[index]
    # every GPU pod with a node that has room for its host request reaches solver.plan
    assert doc["planner_calls"] == sum(p["planner_calls"] for p in per.values())  # type: ignore[union-attr]
    for p in per.values():  # type: ignore[union-attr]
        assert 0 < p["planner_calls"] <= p["gpu_pods"]
        assert p["gpu_pods"] - p["planner_calls"] <= p["failed_gpu_pods"]


def test_host_usage_reaches_the_planner_state() -> None:
    # the planner's state carries host CPU/memory of placed pods (its stranding term reads them)
    from models.validate import validate
    from solver.openb import OpenbNode, OpenbPod
    from solver.whatif import runner as whatif_runner
    from solver.whatif.specs import nodes_spec

    seen: list[object] = []
    real = whatif_runner._apply

    def spy(state, plan, requests, pos):  # type: ignore[no-untyped-def]
        assert requests and validate(state, plan, requests) == []
        out = real(state, plan, requests, pos)
        assert out == whatif_runner.apply_plan(state, plan, requests)  # the one-node shortcut is apply_plan
        seen.append(out)
        return out

    nodes = [OpenbNode("n0", 16000, 65536, 2, "T4"), OpenbNode("n1", 16000, 65536, 2, "T4")]
    pods = [OpenbPod(f"p{i}", 3000, 8192, 1, 500) for i in range(6)] + [OpenbPod("c0", 1000, 1024, 0, 0)]
    whatif_runner._apply = spy  # type: ignore[assignment]
    try:
        r = whatif_runner.run_once(nodes_spec(nodes, pods, "dynamig", tune_ratio=0), 3)
    finally:
        whatif_runner._apply = real  # type: ignore[assignment]
    assert r.placed == 7 and r.latencies_ms.size == 6
    final = seen[-1]
    used = sum(n.cpu_used_milli for n in final.nodes)  # type: ignore[attr-defined]
    assert used in (6 * 3000, 6 * 3000 + 1000)  # every GPU pod's CPU (and the CPU-only pod's, if it came first)


_MODELS = ("T4", "P100", "V100M16", "V100M32", "A10", "G2", "G3")


@settings(max_examples=15, deadline=None)
@given(
    node_shapes=st.lists(st.tuples(st.sampled_from(_MODELS), st.integers(1, 4), st.integers(2, 32)),
                         min_size=1, max_size=4),
    pod_shapes=st.lists(st.tuples(st.integers(0, 2), st.integers(1, 100), st.integers(1, 16)),
                        min_size=1, max_size=24),
    seed=st.integers(0, 5),
)
def test_hami_core_node_list_run_invariants(node_shapes: list[tuple[str, int, int]],
                                            pod_shapes: list[tuple[int, int, int]], seed: int) -> None:
    # whatever the cluster and pods: every plan valid, host capacity never exceeded, counts add up
    from models.validate import validate
    from solver.whatif import runner as whatif_runner
    from solver.whatif.specs import HAMI_CORE_MODELS, nodes_spec

    nodes = [OpenbNode(f"n{i}", cores * 1000, cores * 4096, gpus, m) for i, (m, gpus, cores) in enumerate(node_shapes)]
    pods = [OpenbPod(f"p{i}", cores * 500, cores * 1024, n, 1000 if n == 2 else 10 * milli if n else 0)
            for i, (n, milli, cores) in enumerate(pod_shapes)]
    real = whatif_runner.apply_plan
    last: list[object] = []

    def spy(state, plan, requests=None):  # type: ignore[no-untyped-def]
        assert requests and validate(state, plan, requests) == []
        out = real(state, plan, requests)
        last[:] = [out]
        return out

    spec = nodes_spec(nodes, pods, "dynamig", tune_ratio=0)
    assert [m for n in spec.inventory.nodes for m, _ in n.gpus] == [HAMI_CORE_MODELS[m] for m, _, _ in node_shapes]
    whatif_runner.apply_plan = spy  # type: ignore[assignment]
    try:
        r = whatif_runner.run_once(spec, seed)
    finally:
        whatif_runner.apply_plan = real  # type: ignore[assignment]
    gpu_pods = sum(1 for n, _, _ in pod_shapes if n)
    assert r.pods == len(pods) and r.placed + r.failed == r.pods and r.gpu_pods == gpu_pods
    assert r.latencies_ms.size <= gpu_pods and r.layout_changes == 0
    for n in (last[0].nodes if last else ()):  # type: ignore[attr-defined]
        assert n.cpu_used_milli <= n.cpu_milli and n.memory_used_mib <= n.memory_mib
