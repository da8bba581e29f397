"""The what-if simulator (solver/whatif): MIG mapping, scaling, host accounting, runs, CLI."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import OPENB, needs_openb

from dynamig.commands import simulate as simulate_cmd
from models.catalog import model
from models.config import BUILTIN_DEVICE_CONFIG, Inventory, InventoryNode
from models.layouts import Slot
from models.requests import mig_memory_total, profile_serves
from models.types import Gpu, MigInstance, NodeMode, ShareUsage
from solver.fgd.workload import SimPod
from solver.openb import OpenbNode, OpenbPod
from solver.whatif import (
    Hosts,
    Job,
    NodeKind,
    gpu_allocation,
    inventory_spec,
    load_pod_yaml,
    mig_inventory_nodes,
    mig_spec,
    min_nodes,
    openb_request,
    run_once,
    scale_nodes,
    serving_profiles,
    shuffle_and_tune_jobs,
    simulate,
    smallest_profile,
)
from solver.whatif.capacity import evaluate_count
from solver.whatif.workload import job_demand, parse_quantity

A100 = "A100-SXM4-80GB"
DATA = OPENB
needs_data = needs_openb


# --------------------------------------------------------------------------- mapping
def test_share_request_is_ceil_of_memory_and_cores() -> None:
    full = mig_memory_total(model(A100))
    req = openb_request(SimPod("p", 1000, 100, 1, 470), full)
    assert req is not None and req.key == "openb/p"
    (c,) = req.containers
    assert (c.count, c.memory_mib, c.memory_percent, c.cores) == (1, math.ceil(0.47 * full), None, 47)
    whole = openb_request(SimPod("w", 1000, 100, 4, 1000), full)
    assert whole is not None and whole.units == 4 and whole.containers[0].cores == 100
    assert whole.containers[0].memory_mib is None
    assert openb_request(SimPod("c", 1000, 100), full) is None
    pct = openb_request(SimPod("q", 1000, 100, 1, 325), None)
    assert pct is not None and pct.containers[0].memory_percent == 33 and pct.containers[0].cores == 33


@pytest.mark.parametrize(
    ("milli", "templates", "any_layout"),
    [(50, "1g.10gb", "1g.10gb"), (110, "1g.10gb", "1g.10gb"), (160, "2g.20gb", "2g.20gb"),
     (230, "2g.20gb", "2g.20gb"), (320, "3g.40gb", "3g.40gb"), (370, "3g.40gb", "3g.40gb"),
     (470, "7g.80gb", "4g.40gb"), (550, "7g.80gb", "7g.80gb"), (810, "7g.80gb", "7g.80gb"),
     (1000, "7g.80gb", "7g.80gb")],
)
def test_smallest_profile_a100_80(milli: int, templates: str, any_layout: str) -> None:
    got_t = smallest_profile(A100, milli, BUILTIN_DEVICE_CONFIG)
    got_a = smallest_profile(A100, milli)
    assert got_t is not None and got_t.name == templates
    assert got_a is not None and got_a.name == any_layout


def test_smallest_profile_agrees_with_profile_serves_on_h100() -> None:
    m = model("H100-80GB")
    full = mig_memory_total(m)
    for milli in range(10, 1001, 10):
        req = openb_request(SimPod("p", 1, 1, 1, milli), full)
        assert req is not None
        c = req.containers[0]
        serving = [p for p in serving_profiles(m) if profile_serves(m, p, c)]
        best = smallest_profile(m.name, milli)
        assert best is not None and best == serving[0]
        assert best.memory_mib >= milli * full / 1000 and m.core_percent(best) >= milli / 10


def test_mig_inventory_keeps_shape() -> None:
    nodes = [OpenbNode("b", 96000, 393216, 8, "G2"), OpenbNode("a", 104000, 524288, 2, "T4"),
             OpenbNode("cpu", 64000, 1000, 0, "")]
    inv = mig_inventory_nodes(nodes, A100)
    assert [n.name for n in inv] == ["a", "b"]
    assert inv[0].mode is NodeMode.MIG and inv[0].gpus == ((A100, 2),)
    assert (inv[1].cpu_milli, inv[1].memory_mib) == (96000, 393216)
    with pytest.raises(ValueError):
        mig_inventory_nodes(nodes, "T4")


# --------------------------------------------------------------------------- cluster
def _inv_nodes(n8: int, n2: int) -> list[InventoryNode]:
    return ([InventoryNode(f"big-{i:03d}", NodeMode.MIG, ((A100, 8),), 96000, 393216) for i in range(n8)]
            + [InventoryNode(f"small-{i:03d}", NodeMode.MIG, ((A100, 2),), 104000, 524288) for i in range(n2)])


def test_scale_nodes_keeps_proportions_and_is_deterministic() -> None:
    nodes = _inv_nodes(60, 40)
    half = scale_nodes(nodes, 0.25)
    assert len(half) == 25
    assert sum(1 for n in half if n.name.startswith("big")) == 15
    assert half == scale_nodes(list(reversed(nodes)), 0.25)
    assert len(scale_nodes(nodes, 0.001)) == 1
    assert scale_nodes(nodes, 1.0) == tuple(sorted(nodes, key=lambda n: n.name))
    with pytest.raises(ValueError):
        scale_nodes(nodes, 0)


def test_hosts_filter_and_least_allocated() -> None:
    nodes = [InventoryNode("a", NodeMode.MIG, ((A100, 1),), 4000, 1000),
             InventoryNode("b", NodeMode.MIG, ((A100, 1),), 8000, 1000),
             InventoryNode("c", NodeMode.MIG, ((A100, 1),), None, None)]
    h = Hosts(nodes)
    assert h.candidates(1000, 10) is None  # every node fits
    assert h.candidates(5000, 10) == ["b", "c"]
    assert h.least_allocated(1000, 10) == "c"  # unlimited
    h.take("b", 8000, 0)
    assert h.candidates(5000, 10) == ["c"]
    h2 = Hosts(nodes[:2])
    assert h2.least_allocated(3000, 100) == "b"
    assert h2.least_allocated(9000, 100) is None


def test_gpu_allocation_mig_and_share() -> None:
    m = model(A100)
    g = Gpu("g", 0, A100, NodeMode.MIG, m.memory_mib, instances=(
        MigInstance(Slot("3g.40gb", 0), "x/y/0/0"), MigInstance(Slot("3g.40gb", 4))))
    comp, mem = gpu_allocation(g)
    assert comp == pytest.approx(3000 / 7) and mem == pytest.approx(500)
    s = Gpu("s", 0, A100, NodeMode.HAMI_CORE, 80000, shares=(ShareUsage("a/b/0/0", 20000, 60),))
    assert gpu_allocation(s) == (pytest.approx(600), pytest.approx(250))


# --------------------------------------------------------------------------- workload
def test_parse_quantity() -> None:
    assert parse_quantity("500m", "x") == 0.5
    assert parse_quantity("2", "x") == 2
    assert parse_quantity("4Gi", "x") == 4 * 2**30
    assert parse_quantity(3, "x") == 3
    with pytest.raises(Exception, match="quantity"):
        parse_quantity("lots", "x")


POD_YAML = """
apiVersion: v1
kind: Pod
metadata: {name: small, namespace: team}
spec:
  containers:
  - name: main
    resources:
      limits: {nvidia.com/gpu: 1, nvidia.com/gpumem: 20000, cpu: "2", memory: 4Gi}
---
apiVersion: v1
kind: Pod
metadata: {name: whole}
spec:
  containers:
  - name: main
    resources:
      requests: {cpu: 500m, memory: 1024Mi}
      limits: {nvidia.com/gpu: 2}
---
apiVersion: v1
kind: Pod
metadata: {name: cpu-only}
spec:
  containers:
  - {name: main, resources: {requests: {cpu: "1"}}}
"""


def test_load_pod_yaml(tmp_path: Path) -> None:
    f = tmp_path / "pods.yaml"
    f.write_text(POD_YAML)
    jobs = {j.name: j for j in load_pod_yaml(str(f), 80000)}
    assert set(jobs) == {"team/small", "default/whole", "default/cpu-only"}
    small = jobs["team/small"]
    assert (small.cpu, small.mem, small.demand, small.unit_milli) == (2000, 4096, 250, 250)
    whole = jobs["default/whole"]
    assert (whole.cpu, whole.mem, whole.demand) == (500, 1024, 2000)
    assert jobs["default/cpu-only"].request is None and jobs["default/cpu-only"].demand == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Deployment\n")
    with pytest.raises(Exception, match=str(bad)):
        load_pod_yaml(str(bad), 80000)


def test_job_demand_rules() -> None:
    req = openb_request(SimPod("p", 1, 1, 1, 300), None)
    assert job_demand(req, 80000) == (300, 300)
    assert job_demand(None, 80000) == (0, 0)


def test_shuffle_and_tune_jobs_reaches_ratio() -> None:
    full = mig_memory_total(model(A100))
    jobs = [Job(f"p{i}", 100, 10, 250, openb_request(SimPod(f"p{i}", 100, 10, 1, 250), full), 250)
            for i in range(10)]
    out = shuffle_and_tune_jobs(jobs, 8000, 1.3, np.random.default_rng(1))
    total = sum(j.demand for j in out)
    assert 1.3 * 8000 - 250 < total <= 1.3 * 8000
    assert len({j.name for j in out}) == len(out)
    assert all(j.request is not None and j.request.name == j.name for j in out)
    down = shuffle_and_tune_jobs(jobs, 1000, 1.0, np.random.default_rng(1))
    assert sum(j.demand for j in down) <= 1000
    assert shuffle_and_tune_jobs(jobs, 1000, 0, np.random.default_rng(1))[0].name in {j.name for j in jobs}


# --------------------------------------------------------------------------- runs
def small_openb(n_nodes: int = 6, n_pods: int = 80) -> tuple[list[OpenbNode], list[OpenbPod]]:
    nodes = [OpenbNode(f"openb-node-{i:04d}", 32000 if i % 3 else 4000, 262144, 8 if i % 2 else 2, "G2")
             for i in range(n_nodes)]
    mix = [(0, 0), (1, 110), (1, 230), (1, 370), (1, 470), (1, 810), (1, 1000), (2, 1000)]
    pods = [OpenbPod(f"openb-pod-{i:04d}", 2000 + 500 * (i % 4), 4096, *mix[i % len(mix)]) for i in range(n_pods)]
    return nodes, pods


@pytest.mark.parametrize("policy", ["dynamig", "hami-legacy", "hami-v210", "bestfit"])
def test_run_once_invariants(policy: str) -> None:
    nodes, pods = small_openb()
    spec = mig_spec(nodes, pods, A100, policy)
    r = run_once(spec, 7, keep_log=True)
    assert r.placed + r.failed == r.pods and r.total_gpus == 30 and r.nodes == 6
    assert r.failed > 0  # tuned to 1.3x: some pods cannot fit
    assert r.layout_changes >= r.initial_partitions > 0
    assert r.latencies_ms.size <= r.gpu_pods
    assert r.log is not None
    assert np.all(np.diff(r.log.arrived_milli) >= 0) and np.all(np.diff(r.log.used_compute) >= -1e-6)
    final = 100 * (1 - r.log.used_compute[-1] / 30000)
    last = max(r.buckets.unallocated_gpu_pct)
    assert last >= 120 and r.buckets.unallocated_gpu_pct[last] == pytest.approx(final, abs=1.5)
    # the demand-based measure charges MIG round-up: never below the held-compute one
    for x, v in r.buckets.unallocated_demand_pct.items():
        assert v >= r.buckets.unallocated_gpu_pct[x] - 0.01
    doc = r.to_json()
    assert doc["fragmentation_pct"] and all(v is None for v in doc["fragmentation_pct"].values())
    again = run_once(spec, 7)
    assert again.to_json()["unallocated_gpu_pct"] == doc["unallocated_gpu_pct"]


def test_cpu_is_accounted_by_the_runner() -> None:
    # one node with 1 core: only pods asking <= 1000m may land there, whatever the GPUs say
    nodes = [OpenbNode("tiny", 1000, 10**6, 8, "G2"), OpenbNode("big", 64000, 10**6, 1, "G2")]
    pods = [OpenbPod(f"p{i}", 2000, 10, 1, 110) for i in range(30)]
    r = run_once(mig_spec(nodes, pods, A100, "dynamig", tune_ratio=0), 1, keep_log=True)
    assert r.placed == 7  # the one GPU of "big" holds seven 1g.10gb; "tiny" has no CPU for any pod
    assert r.failed_gpu_pods == 23


def test_simulate_parallel_equals_serial_and_json_shape() -> None:
    nodes, pods = small_openb(20, 50)  # 100 GPUs: arrived load moves in steps of at most 2 %
    spec = mig_spec(nodes, pods, A100, "hami-legacy")
    ticks: list[int] = []
    par = simulate(spec, [1, 2], processes=2, progress=ticks.append)
    ser = simulate(spec, [1, 2], processes=1)
    assert sum(ticks) == sum(par["per_seed"][s]["pods"] for s in ("1", "2"))
    for s in ("1", "2"):
        a = {k: v for k, v in par["per_seed"][s].items() if not k.startswith("planner_") and k != "elapsed_s"}
        b = {k: v for k, v in ser["per_seed"][s].items() if not k.startswith("planner_") and k != "elapsed_s"}
        assert a == b
    for key in ("policy", "seeds", "per_seed", "mean_unallocated_gpu_pct_at_100", "reconfigurations",
                "planner_p99_ms", "mean_unallocated_demand_pct_at_100", "cluster"):
        assert key in par
    assert par["policy"] == "hami-legacy" and par["seeds"] == [1, 2] and par["mig_model"] == A100
    vals = [par["per_seed"][s]["unallocated_gpu_pct"]["100"] for s in ("1", "2")]
    assert par["mean_unallocated_gpu_pct_at_100"] == pytest.approx(sum(vals) / 2, abs=1e-3)
    json.dumps(par)


def test_inventory_spec_mixed_modes() -> None:
    inv = Inventory((InventoryNode("m", NodeMode.MIG, ((A100, 2),), 64000, 10**6),
                     InventoryNode("s", NodeMode.HAMI_CORE, ((A100, 2),), 64000, 10**6)))
    _, pods = small_openb(1, 40)
    r = run_once(inventory_spec(inv, pods, "dynamig"), 3)
    assert r.placed > 0 and r.total_gpus == 4


def test_capacity_search_finds_the_knee() -> None:
    _, pods = small_openb(1, 60)
    kind = NodeKind("a100x2", NodeMode.MIG, A100, gpus=2, cpu_milli=64000, memory_mib=10**6)
    res = min_nodes(kind, pods, "dynamig", target_pct=1.0)
    assert res.nodes is not None
    assert evaluate_count(kind, res.nodes, pods, "dynamig").unplaced_pct <= 1.0
    assert evaluate_count(kind, res.nodes - 1, pods, "dynamig").unplaced_pct > 1.0
    xs, _ = res.curve()
    assert res.nodes in xs


# --------------------------------------------------------------------------- CLI
def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="dynamig")
    sub = parser.add_subparsers(dest="command")
    simulate_cmd.add_parser(sub)
    return simulate_cmd.run(parser.parse_args(["simulate", *argv]))


def write_csvs(tmp_path: Path) -> tuple[Path, Path]:
    nodes, pods = small_openb(5, 60)
    nf = tmp_path / "nodes.csv"
    nf.write_text("sn,cpu_milli,memory_mib,gpu,model\n" + "".join(
        f"{n.name},{n.cpu_milli},{n.memory_mib},{n.gpus},{n.model}\n" for n in nodes))
    pf = tmp_path / "pods.csv"
    pf.write_text("name,cpu_milli,memory_mib,num_gpu,gpu_milli\n" + "".join(
        f"{p.name},{p.cpu_milli},{p.memory_mib},{p.num_gpu},{p.gpu_milli}\n" for p in pods))
    return nf, pf


def test_cli_mig_variant_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nodes, pods = write_csvs(tmp_path)
    plot = tmp_path / "u.png"
    code = cli(["--nodes", str(nodes), "--pods", str(pods), "--mig-model", "H100-80GB", "--seeds", "1-2",
                "--policy", "hami-v210", "--json", "--plot", str(plot)])
    out = capsys.readouterr()
    assert code == 0
    doc = json.loads(out.out)
    assert doc["policy"] == "hami-v210" and doc["seeds"] == [1, 2] and doc["cluster"]["models"] == ["H100-80GB"]
    per = doc["per_seed"]["1"]
    assert per["fragmentation_pct"]["100"] is None and "100" in per["unallocated_gpu_pct"]
    assert isinstance(doc["reconfigurations"], float) and doc["planner_p99_ms"] > 0
    assert plot.stat().st_size > 1000


def test_cli_mig_variant_human_default_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nodes, pods = write_csvs(tmp_path)
    assert cli(["--nodes", str(nodes), "--pods", str(pods), "--mig-model", A100, "--seeds", "3",
                "--scale", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "policy dynamig" in out and "scale 0.5" in out and "reconfigurations" in out


def test_cli_inventory_with_yaml_and_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv = tmp_path / "inv.yaml"
    inv.write_text("nodes:\n"
                   "  - {name: m0, mode: mig, gpus: {model: A100-SXM4-80GB, count: 2}, cpu_milli: 64000}\n"
                   "  - {name: s0, mode: hami-core, gpus: {model: A100-SXM4-80GB, count: 2}}\n")
    pods = tmp_path / "pods.yaml"
    pods.write_text(POD_YAML)
    assert cli(["--inventory", str(inv), "--pods", str(pods), "--seeds", "1", "--tune", "0", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["variant"] == "inventory" and doc["per_seed"]["1"]["pods"] == 3
    assert doc["per_seed"]["1"]["placed"] == 3
    _, csv_pods = write_csvs(tmp_path)
    assert cli(["--inventory", str(inv), "--pods", str(csv_pods), "--seeds", "1", "--policy", "bestfit",
                "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["cluster"]["modes"] == ["hami-core", "mig"] and doc["per_seed"]["1"]["placed"] > 0


def test_cli_whatif_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nodes, pods = write_csvs(tmp_path)
    assert cli(["--nodes", str(nodes), "--pods", str(pods), "--mig-model", A100, "--policy", "fgd"]) == 2
    assert "policy fgd (the FGD paper's milli-GPU model) runs on hami-core GPUs" in capsys.readouterr().err
    assert cli(["--nodes", str(nodes), "--pods", str(pods), "--policy", "nope"]) == 2
    assert "unknown policy 'nope'" in capsys.readouterr().err
    mig_inv = tmp_path / "mig.yaml"
    mig_inv.write_text("nodes:\n  - {name: m, mode: mig, gpus: {model: A100-SXM4-80GB, count: 1}}\n")
    assert cli(["--inventory", str(mig_inv), "--pods", str(pods), "--policy", "packing"]) == 2
    err = capsys.readouterr().err
    assert str(mig_inv) in err and "node m GPU 0 is mig" in err
    assert cli(["--inventory", str(tmp_path / "none.yaml"), "--pods", str(pods)]) == 1
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes:\n  - {name: x, mode: mig, gpus: {model: T4, count: 1}}\n")
    assert cli(["--inventory", str(bad), "--pods", str(pods)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "MIG-capable" in err[0]
    # a cluster policy on the node list without --mig-model: the node list's GPUs on hami-core
    odd = tmp_path / "odd.csv"
    odd.write_text("sn,cpu_milli,memory_mib,gpu,model\nodd-node,8000,65536,2,K80\n")
    assert cli(["--nodes", str(odd), "--pods", str(pods), "--policy", "hami-legacy", "--seeds", "1"]) == 1
    err = capsys.readouterr().err
    assert str(odd) in err and "odd-node" in err and "K80" in err
    with pytest.raises(SystemExit) as info:
        cli(["--nodes", str(nodes), "--inventory", str(bad), "--pods", str(pods)])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        cli(["--nodes", str(nodes), "--pods", str(pods), "--mig-model", A100, "--scale", "2"])


@needs_data
def test_real_trace_mig_variant_small_scale() -> None:
    from solver.openb import load_nodes, load_pods

    nodes = load_nodes(DATA / "openb_node_list_gpu_node.csv")
    pods = load_pods(DATA / "openb_pod_list_default.csv")
    spec = mig_spec(nodes, pods, A100, "dynamig", scale=0.02)
    assert len(spec.inventory.nodes) == 24
    r = run_once(spec, 42)
    assert r.placed > 0 and 0 <= r.buckets.unallocated_gpu_pct[100] < 30
    assert r.buckets.unallocated_demand_pct[100] > r.buckets.unallocated_gpu_pct[100]


def test_report_end_to_end(tmp_path: Path) -> None:
    from solver.whatif import report

    nodes, pods = write_csvs(tmp_path)
    nodes.rename(tmp_path / "openb_node_list_gpu_node.csv")
    pods.rename(tmp_path / "openb_pod_list_default.csv")
    out = tmp_path / "docs"
    assert report.main(["--data", str(tmp_path), "--out", str(out), "--scale", "1", "--seeds", "1-2",
                        "--policies", "hami-legacy,dynamig", "--processes", "1"]) == 0
    rep = json.loads((out / "mig_variant.json").read_text())
    assert set(rep["runs"]) == {"templates/hami-legacy", "templates/dynamig"}
    md = (out / "mig_variant.md").read_text()
    assert "| templates | dynamig |" in md and "## Reading" in md
    assert (out / "mig_variant_unallocated.png").stat().st_size > 5000
    (out / "mig_variant.md").unlink()
    assert report.main(["--from-json", str(out / "mig_variant.json"), "--out", str(out)]) == 0
    assert (out / "mig_variant.md").read_text() == md


def test_load_pod_yaml_bad_quantity_names_file_and_pod(tmp_path: Path) -> None:
    f = tmp_path / "q.yaml"
    f.write_text("kind: Pod\nmetadata: {name: q}\nspec:\n  containers:\n"
                 "  - {name: c, resources: {requests: {cpu: lots}}}\n")
    with pytest.raises(Exception, match=r"q\.yaml: pod default/q\.containers\[0\]\.resources\.cpu"):
        load_pod_yaml(str(f), 80000)
