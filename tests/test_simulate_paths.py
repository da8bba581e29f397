"""One simulator, two ways to describe a cluster: the openb node list (``--nodes --mig-model``)
and an inventory that states the same nodes must give the same result for the same policy, in
both protocols (fgd and churn); dra-firstfit runs on the fgd protocol too."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from dynamig.commands import simulate as simulate_cmd
from solver.openb import OpenbNode, OpenbPod
from solver.policies import CLUSTER_POLICIES

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
    assert cli(["--nodes", str(nodes), "--pods", str(pods), "--policy", "dynamig", "--seeds", "1"]) == 2
    assert "--mig-model" in capsys.readouterr().err
    assert cli(["--inventory", str(inv), "--pods", str(pods), "--policy", "share-pricing", "--seeds", "1"]) == 2
    assert "unknown policy" in capsys.readouterr().err
