"""The churn protocol (solver/sim/churn.py): arrivals, FIFO retries, re-cut delay, abandonment,
no evictions, the fluid limit, the sustainable load, dra-firstfit, and the CLI on every kind of
inventory."""

from __future__ import annotations

import argparse
import io
import json
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import OPENB, needs_openb

from dynamig.commands import simulate as simulate_cmd
from dynamig.commands.simulate_churn import LineProgress, parse_loads
from models.catalog import model
from models.cluster import state_from_inventory
from models.config import Inventory, InventoryNode
from models.layouts import Slot
from models.plan import apply_plan, release_pod
from models.requests import ContainerRequest, PodRequest
from models.types import NodeMode
from models.validate import validate
from solver.planner import OBJECTIVES, PlannerConfig
from solver.policies import CLUSTER_POLICIES, MILLI_POLICIES, info, names, placer
from solver.policies.dra import device_order, plan_dra
from solver.reports import aggregate_churn, sustainable_load
from solver.sim import ChurnSpec, fluid_limit, run_churn
from solver.sim.churn import arrival_count
from solver.traces import Durations, parse_duration
from solver.whatif.workload import Job

A100 = "A100-SXM4-80GB"


def inv(*nodes: tuple[str, NodeMode, int]) -> Inventory:
    return Inventory(tuple(InventoryNode(n, mode, ((A100, k),), 96000, 786432) for n, mode, k in nodes))


def job(name: str, milli: int, num_gpu: int = 1) -> Job:
    if milli >= 1000:
        c = ContainerRequest("main", 0, num_gpu, None, None, 100)
    else:
        c = ContainerRequest("main", 0, 1, None, -(-milli // 10), -(-milli // 10))
    req = PodRequest("openb", name, containers=(c,), cpu_milli=1000, host_memory_mib=1024)
    return Job(name, 1000, 1024, num_gpu * milli, req, milli)


def spec(cluster: Inventory, shapes: tuple[Job, ...], dur: str = "fixed:100", **kw: object) -> ChurnSpec:
    return ChurnSpec(cluster, shapes, parse_duration(dur), **kw)  # type: ignore[arg-type]


MIG1 = inv(("m0", NodeMode.MIG, 1))


def lindley(arrive: list[float], service: float, first_extra: float = 0.0) -> list[float]:
    """FIFO single-server start times (M/D/1), the first pod delayed by ``first_extra``."""
    out: list[float] = []
    free = 0.0
    for k, a in enumerate(arrive):
        s = max(a, free) + (first_extra if k == 0 else 0.0)
        out.append(s)
        free = s + service
    return out


# --------------------------------------------------------------------------- the event loop
def test_whole_gpu_pods_on_one_gpu_queue_fifo_as_md1() -> None:
    """One GPU, whole-GPU pods of 100 s at load 1.5: every start is the FIFO recursion; the first
    carve of the empty GPU costs the re-cut delay, later pods reuse the 7g (no re-cut)."""
    s = spec(MIG1, (job("w", 1000),), pods=40, warmup_s=0.0, reconfig_s=10.0)
    for pol in CLUSTER_POLICIES:
        doc = run_churn(s, pol, 1.5, seed=3, detail=True)
        arrive, start = doc["pods"]["arrive"], doc["pods"]["start"]
        started = [x for x in start if x is not None]
        want = lindley(arrive, 100.0, 10.0)[: len(started)]
        if pol == "dra-firstfit":  # DRA creates the instance at every allocation: each start pays the re-cut
            free, want = 0.0, []
            for a in arrive[: len(started)]:
                want.append(max(a, free) + 10.0)
                free = want[-1] + 100.0
        assert started == pytest.approx(want), pol
        assert doc["evictions"] == 0 and doc["waited_share"] > 0.3
        assert doc["still_waiting"] == sum(1 for x in start if x is None)


def test_runs_are_deterministic_and_policies_share_the_arrivals() -> None:
    s = spec(inv(("m0", NodeMode.MIG, 2)), (job("a", 470), job("b", 160), job("w", 1000)), "exp:300", pods=60)
    one = run_churn(s, "hami-legacy", 0.9, 7, detail=True)
    two = run_churn(s, "hami-legacy", 0.9, 7, detail=True)
    drop = ("elapsed_s", "planner_p50_ms", "planner_p99_ms")
    assert {k: v for k, v in one.items() if k not in drop} == {k: v for k, v in two.items() if k not in drop}
    other = run_churn(s, "dynamig", 0.9, 7, detail=True)
    assert other["pods"]["arrive"] == one["pods"]["arrive"] and other["offered_per_h"] == one["offered_per_h"]
    assert arrival_count(s, 0.9, 7) == len(one["pods"]["arrive"]) == one["arrivals"]
    assert run_churn(s, "hami-legacy", 0.9, 8, detail=True)["pods"]["arrive"] != one["pods"]["arrive"]
    # a higher load compresses time: same number of measured pods, earlier arrivals
    fast = run_churn(s, "hami-legacy", 1.8, 7, detail=True)
    assert fast["measured_pods"] == one["measured_pods"] == 60 and fast["sim_time_s"] < one["sim_time_s"]


def test_no_policy_evicts_and_only_keep_held_policies_touch_busy_gpus() -> None:
    s = spec(inv(("m0", NodeMode.MIG, 2), ("s0", NodeMode.HAMI_CORE, 1)),
             (job("a", 470), job("b", 160), job("c", 320), job("w", 1000)), "exp:200", pods=80, warmup_s=100.0)
    for pol in CLUSTER_POLICIES:
        doc = run_churn(s, pol, 1.0, 1)
        assert doc["evictions"] == 0, pol
        if not info(pol).keeps_held:
            assert doc["busy_repartitions"] == 0, pol
        assert doc["placed"] + doc["still_waiting"] + doc["abandoned"] == doc["measured_pods"], pol
        assert 0 < doc["allocated_compute_pct"] <= 100 and 0 < doc["demand_utilisation_pct"] <= 100


def test_wait_max_is_the_longest_measured_wait_and_shows_a_starved_pod() -> None:
    """wait_max_s is the largest measured wait (a pod still queued at the end counts with its wait
    so far), so a rare pod that starves shows there even when the p95 does not see it."""
    s = spec(inv(("m0", NodeMode.MIG, 2)), (job("a", 470), job("b", 160), job("w", 1000)), "exp:300", pods=60)
    for pol in ("dynamig", "bestfit"):
        doc = run_churn(s, pol, 1.2, 4, detail=True)
        pods = doc["pods"]
        end = doc["sim_time_s"]
        waits = [(end if st is None else st) - a for a, st in
                 zip(pods["arrive"][pods["measured_from"]:], pods["start"][pods["measured_from"]:], strict=True)]
        assert doc["wait_max_s"] == pytest.approx(max(waits), abs=0.1)
        assert doc["wait_max_s"] >= doc["wait_p99_s"] >= doc["wait_p95_s"]


def test_max_wait_abandons_and_abandoned_pods_never_start() -> None:
    s = spec(MIG1, (job("w", 1000),), pods=30, warmup_s=0.0, reconfig_s=0.0, max_wait_s=50.0)
    doc = run_churn(s, "hami-legacy", 3.0, 2, detail=True)
    assert doc["abandoned"] > 0
    for a, st, ab in zip(doc["pods"]["arrive"], doc["pods"]["start"], doc["pods"]["abandoned"], strict=True):
        if ab:
            assert st is None
        elif st is not None:
            assert st - a <= 50.0 + 1e-9
    assert doc["wait_p99_s"] <= 50.0 + 1e-9


def test_recut_delay_holds_the_gpu() -> None:
    """hami-legacy re-cuts an idle GPU for a share: the pod starts reconfig_s later, and a longer
    re-cut never shortens waits."""
    shapes = (job("a", 160), job("w", 1000))
    quick = run_churn(spec(MIG1, shapes, pods=40, warmup_s=0.0, reconfig_s=0.0), "hami-legacy", 0.8, 5)
    slow = run_churn(spec(MIG1, shapes, pods=40, warmup_s=0.0, reconfig_s=60.0), "hami-legacy", 0.8, 5)
    assert slow["reconfigurations"] > 0 and slow["idle_repartitions"] == slow["reconfigurations"]
    assert slow["wait_mean_s"] > quick["wait_mean_s"]


# --------------------------------------------------------------------------- fluid limit, reports
def test_fluid_limit_by_hand() -> None:
    """470 milli on an A100-80GB: with every layout a 4g.40gb (4 of 7 compute slices), so
    ρ* = 470 / (4000/7); the built-in templates have no 4g.40gb, so there it is the 7g."""
    from dataclasses import replace

    cluster = inv(("m0", NodeMode.MIG, 8))
    assert fluid_limit((job("a", 470),), replace(cluster, layouts_any=True)) == pytest.approx(470 / (4000 / 7))
    assert fluid_limit((job("a", 470),), cluster) == pytest.approx(0.47)
    assert fluid_limit((job("w", 1000, 2),), cluster) == pytest.approx(1.0)
    shared = inv(("s0", NodeMode.HAMI_CORE, 8))
    assert fluid_limit((job("a", 470),), shared) == pytest.approx(1.0)
    mixed = replace(inv(("m0", NodeMode.MIG, 4), ("s0", NodeMode.HAMI_CORE, 4)), layouts_any=True)
    assert fluid_limit((job("a", 470),), mixed) == pytest.approx(470 / (0.5 * 4000 / 7 + 0.5 * 470))


def test_sustainable_load_is_the_last_load_within_the_slo() -> None:
    assert sustainable_load({0.6: 10, 0.7: 500, 0.8: 900, 0.9: 100}, 600) == 0.7
    assert sustainable_load({0.8: 601}, 600) is None
    runs = [{"policy": "p", "load": load, "seed": s, "wait_p95_s": w, "evictions": 0,
             **{k: 1.0 for k in ("wait_mean_s", "wait_p50_s", "wait_p99_s", "waited_share", "abandoned",
                                 "still_waiting", "throughput_per_h", "offered_per_h", "allocated_compute_pct",
                                 "demand_utilisation_pct", "reconf_per_1000_idle", "reconf_per_1000_busy",
                                 "idle_repartitions", "busy_repartitions", "planner_p50_ms", "planner_p99_ms")}}
            for load, s, w in ((0.8, 1, 100), (0.8, 2, 300), (1.0, 1, 500), (1.0, 2, 900))]
    doc = aggregate_churn(runs, policies=["p"], loads=[0.8, 1.0], seeds=[1, 2], slo_s=600, fluid_limit_load=0.9,
                          meta={})
    (p,) = doc["policies"]
    assert [r["p95_wait_s"] for r in p["loads"]] == [200, 700]
    assert p["sustainable_load"] == 0.8 and p["sustainable_to_fluid"] == pytest.approx(0.889, abs=1e-3)
    from solver.reports.churn_table import churn_table

    table = churn_table(doc, [1.0])
    assert "| p | 1 | 1 | 1 | 700 |" in table and "| p | 0.8 |" not in table and "| p | 0.80 | 0.889 |" in table


# --------------------------------------------------------------------------- registry, dra-firstfit
def test_registry_names_are_unique_and_dynamig_is_the_planner() -> None:
    assert len(set(names())) == len(names())
    assert set(CLUSTER_POLICIES) == {"dynamig", "hami-legacy", "hami-v210", "dra-firstfit", "bestfit"}
    assert "share-pricing" in MILLI_POLICIES and "dynamig" not in MILLI_POLICIES and info("share-pricing").research
    from solver.fgd import policy_names

    assert set(MILLI_POLICIES) == set(policy_names())
    state = state_from_inventory(MIG1)
    pod = job("a", 160).request
    assert pod is not None
    assert placer("dynamig")(state, pod, None).policy == "dynamig"
    with pytest.raises(ValueError, match="milli-GPU"):
        placer("fgd")


def test_dra_firstfit_takes_the_first_published_device() -> None:
    m = model(A100)
    assert [p.name for p in device_order(m)][:5] == ["1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"]
    state = state_from_inventory(inv(("n0", NodeMode.MIG, 2)))
    small = job("a", 110).request
    assert small is not None
    p1 = plan_dra(state, small, PlannerConfig())
    (u,) = p1.units()
    assert u.gpu_index == 0 and u.slot == Slot("1g.10gb", 0)
    assert validate(state, p1, {small.key: small}) == []
    (ch,) = p1.layout_changes
    assert ch.incremental
    state = apply_plan(state, p1, {small.key: small})
    second = job("b", 110).request
    assert second is not None
    p2 = plan_dra(state, second, PlannerConfig())
    (u2,) = p2.units()
    assert (u2.gpu_index, u2.slot) == (0, Slot("1g.10gb", 1))  # same GPU, next placement: no scoring
    state = release_pod(apply_plan(state, p2, {second.key: second}), small.key)
    third = job("c", 110).request
    assert third is not None
    p3 = plan_dra(state, third, PlannerConfig())
    (ch3,) = p3.layout_changes
    assert set(ch3.layout) == {Slot("1g.10gb", 1), Slot("1g.10gb", 0)}  # the released instance was destroyed
    assert validate(state, p3, {third.key: third}) == []


# --------------------------------------------------------------------------- CLI
def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="dynamig")
    sub = parser.add_subparsers(dest="command")
    simulate_cmd.add_parser(sub)
    return simulate_cmd.run(parser.parse_args(["simulate", *argv]))


def write_inventory(tmp_path: Path, kind: str) -> Path:
    nodes = {"mig": [("m0", "mig")], "hami-core": [("s0", "hami-core")], "mixed": [("m0", "mig"), ("s0", "hami-core")]}
    text = "nodes:\n" + "".join(f"  - name: {n}\n    mode: {mode}\n    gpus: {{model: {A100}, count: 4}}\n"
                                f"    cpu_milli: 96000\n    memory_mib: 786432\n" for n, mode in nodes[kind])
    path = tmp_path / f"{kind}.yaml"
    path.write_text(text)
    return path


FIELDS = ("p95_wait_s", "wait_mean_s", "wait_p50_s", "wait_p95_s", "wait_p99_s", "waited_share", "abandoned",
          "throughput_per_h", "allocated_compute_pct", "demand_utilisation_pct", "reconf_per_1000_idle",
          "reconf_per_1000_busy", "busy_repartitions", "evictions", "planner_p50_ms", "planner_p99_ms")


@needs_openb
@pytest.mark.parametrize("kind", ["mig", "hami-core", "mixed"])
def test_cli_churn_json_on_every_inventory_kind(kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inventory = write_inventory(tmp_path, kind)
    argv = ["--protocol", "churn", "--inventory", str(inventory), "--pods", str(OPENB / "openb_pod_list_default.csv"),
            "--load", "0.8,1.0", "--seeds", "1-2", "--json", "--engine", "serial", "--arrivals", "12",
            "--warmup-seconds", "0", "--out", str(tmp_path / "out")]
    assert cli(argv) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["protocol"] == "churn" and doc["loads"] == [0.8, 1.0] and doc["seeds"] == [1, 2]
    assert 0 < doc["fluid_limit_load"] <= 1.0 + 1e-9
    assert [p["policy"] for p in doc["policies"]] == list(CLUSTER_POLICIES)
    for p in doc["policies"]:
        assert "sustainable_load" in p and p["evictions"] == 0
        assert [r["load"] for r in p["loads"]] == [0.8, 1.0]
        for r in p["loads"]:
            assert all(f in r for f in FIELDS) and r["seeds"] == 2
    assert len(list((tmp_path / "out").glob("run-*.json"))) == len(CLUSTER_POLICIES) * 4
    assert json.loads((tmp_path / "out" / "aggregate.json").read_text())["policies"] == doc["policies"]
    assert "simulate churn" in captured.err  # progress lines on a non-terminal stderr


def test_cli_churn_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pods = tmp_path / "pods.csv"
    pods.write_text("name,cpu_milli,memory_mib,num_gpu,gpu_milli\np0,1000,1024,1,500\n")
    nodes = tmp_path / "nodes.csv"
    nodes.write_text("sn,cpu_milli,memory_mib,gpu,model\nn0,96000,786432,8,T4\n")
    inventory = write_inventory(tmp_path, "mig")
    base = ["--protocol", "churn", "--pods", str(pods), "--engine", "serial"]
    assert cli([*base, "--nodes", str(nodes)]) == 2
    assert "needs a cluster state" in capsys.readouterr().err
    assert cli([*base, "--inventory", str(inventory), "--policy", "fgd"]) == 2
    assert "does not run the churn protocol yet" in capsys.readouterr().err
    assert cli([*base, "--inventory", str(inventory)]) == 1  # no completed pods to draw durations from
    assert "completed GPU pod" in capsys.readouterr().err
    assert cli([*base, "--inventory", str(inventory), "--duration", "exp:-3"]) == 1
    assert "--duration" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli([*base, "--inventory", str(inventory), "--load", "0.8,0.8"])
    assert exc.value.code == 2
    with pytest.raises(ValueError, match="repeats"):
        parse_loads("1,1")


def test_progress_writes_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    bar = LineProgress(3, "runs", "simulate churn", stream=out, every=0.0)
    for _ in range(3):
        bar.update(1, "note")
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and lines[-1].startswith("simulate churn: 3/3 runs")


def test_trace_durations_and_parse() -> None:
    d = Durations("trace", (10.0, 30.0))
    assert d.mean == 20.0 and d.horizon == 30.0
    assert parse_duration("uniform:1,3").mean == 2.0
    with pytest.raises(ValueError):
        parse_duration("gamma:3")


def test_dynamig_learns_the_workload_from_arrivals_as_the_extender_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """With learn_workload (default) the churn run re-plans with the OnlineWorkload snapshot once
    64 arrivals were seen (the extender's estimate); baselines and learn_workload=False keep the
    prior. The lookahead's batch config follows the same estimate."""
    import solver.sim.churn as churn_mod
    from solver.planner import PRIOR

    seen: list[tuple[str, int]] = []
    real = churn_mod.placer

    def spy(name: str, config: PlannerConfig = PlannerConfig()):  # type: ignore[no-untyped-def]
        seen.append((name, config.workload.pods))
        return real(name, config)

    monkeypatch.setattr(churn_mod, "placer", spy)
    s = spec(inv(("m0", NodeMode.MIG, 2)), (job("a", 470), job("b", 160), job("w", 1000)), "exp:300",
             pods=100, warmup_s=0.0)
    run_churn(s, "dynamig", 0.9, 1)
    assert seen[0] == ("dynamig", 0) and ("dynamig", 64) in seen
    learned = [p for _, p in seen if p]
    assert learned == sorted(learned) and max(learned) <= 100 + 1
    seen.clear()
    run_churn(replace(s, learn_workload=False), "dynamig", 0.9, 1)
    assert seen == [("dynamig", 0)]
    seen.clear()
    run_churn(s, "bestfit", 0.9, 1)
    assert seen == [("bestfit", 0)]
    assert PRIOR.pods == 0


@needs_openb
def test_cli_churn_passes_the_objective_to_the_planner(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--objective reaches the churn runs (it was silently dropped): the aggregate names it, and
    the default objective is named when it is not given."""
    inventory = write_inventory(tmp_path, "mig")
    base = ["--protocol", "churn", "--inventory", str(inventory), "--pods", str(OPENB / "openb_pod_list_default.csv"),
            "--load", "0.9", "--seeds", "1", "--json", "--engine", "serial", "--arrivals", "8",
            "--warmup-seconds", "0", "--policy", "dynamig"]
    order = "placed,reconfigurations,fragmentation,template_order,policy,waste"
    assert cli([*base, "--objective", order]) == 0
    assert json.loads(capsys.readouterr().out)["objective"] == order.split(",")
    assert cli(base) == 0
    assert json.loads(capsys.readouterr().out)["objective"] == list(OBJECTIVES)
