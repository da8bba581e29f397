"""The churn protocol with the extender's lookahead (solver/lookahead.py on the simulated clock):
the batch plan places queued pods, every applied plan validates, runs are deterministic per seed,
and no run evicts or over-commits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import OPENB, needs_openb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import solver.sim.churn as churn
from models.config import Inventory, InventoryNode
from models.plan import Plan
from models.requests import ContainerRequest, PodRequest
from models.types import ClusterState, NodeMode
from models.validate import validate
from solver.sim import ChurnSpec, run_churn
from solver.traces import parse_duration
from solver.whatif.workload import Job

A100 = "A100-SXM4-80GB"
STABLE = ("placed", "wait_p95_s", "wait_mean_s", "batch_solves", "placed_from_batch_plan",
          "placed_per_pod_around_queue", "reconfigurations", "evictions", "throughput_per_h")


def inv(gpus: int) -> Inventory:
    return Inventory((InventoryNode("m0", NodeMode.MIG, ((A100, gpus),), 96000, 786432),))


def job(name: str, milli: int) -> Job:
    if milli >= 1000:
        c = ContainerRequest("main", 0, 1, None, None, 100)
    else:
        c = ContainerRequest("main", 0, 1, None, -(-milli // 10), -(-milli // 10))
    req = PodRequest("openb", name, containers=(c,), cpu_milli=1000, host_memory_mib=1024)
    return Job(name, 1000, 1024, milli, req, milli)


SHAPES = (job("big", 1000), job("half", 470), job("small", 140))


def spec(gpus: int = 2, pods: int = 40, lookahead: int = 8, dur: str = "exp:200") -> ChurnSpec:
    return ChurnSpec(inv(gpus), SHAPES, parse_duration(dur), pods=pods, warmup_s=0.0, reconfig_s=10.0,
                     lookahead=lookahead, lookahead_budget_ms=2000.0, lookahead_interval_s=0.0)


@pytest.fixture
def checked(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every plan the simulator applies must validate on the state it is applied to."""
    applied: list[int] = []
    real = churn.apply_plan

    def apply(state: ClusterState, plan: Plan, requests: Any) -> ClusterState:
        bad = validate(state, plan, requests, state_templates[0])
        assert not bad, bad
        applied.append(1)
        return real(state, plan, requests)

    state_templates = [inv(1).templates]
    monkeypatch.setattr(churn, "apply_plan", apply)
    return applied


def test_batch_plan_places_queued_pods_and_every_plan_validates(checked: list[int]) -> None:
    r = run_churn(spec(), "dynamig", 1.1, 3)
    assert checked and r["placed"] > 0
    assert r["batch_solves"] > 0
    assert r["placed_from_batch_plan"] >= 1
    assert r["evictions"] == 0
    assert r["batch_solve_p99_ms"] >= r["batch_solve_p50_ms"] > 0


def test_lookahead_is_deterministic_per_seed() -> None:
    a, b = (run_churn(spec(), "dynamig", 1.1, 4) for _ in range(2))
    assert {k: a[k] for k in STABLE} == {k: b[k] for k in STABLE}


def test_lookahead_off_solves_nothing_and_other_policies_refuse_it() -> None:
    r = run_churn(spec(lookahead=0), "dynamig", 1.1, 3)
    assert r["batch_solves"] == 0 and r["placed_from_batch_plan"] == 0
    with pytest.raises(ValueError, match="only policy 'dynamig'"):
        run_churn(spec(), "bestfit", 1.0, 1)
    with pytest.raises(ValueError, match="lookahead"):
        spec(lookahead=-1)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(gpus=st.integers(1, 3), load=st.sampled_from([0.7, 1.0, 1.3]), seed=st.integers(0, 50),
       lookahead=st.integers(1, 6))
def test_invariants_no_eviction_no_overcommit(checked: list[int], gpus: int, load: float, seed: int,
                                              lookahead: int) -> None:
    r = run_churn(spec(gpus, pods=15, lookahead=lookahead, dur="exp:150"), "dynamig", load, seed)
    assert r["evictions"] == 0
    assert r["placed"] + r["still_waiting"] + r["abandoned"] == r["measured_pods"]
    assert r["placed_from_batch_plan"] + r["placed_per_pod_around_queue"] <= r["planner_calls"]


def cli(argv: list[str]) -> int:
    import argparse

    from dynamig.commands import simulate as simulate_cmd

    parser = argparse.ArgumentParser(prog="dynamig")
    sub = parser.add_subparsers(dest="command")
    simulate_cmd.add_parser(sub)
    return simulate_cmd.run(parser.parse_args(["simulate", *argv]))


@needs_openb
def test_cli_lookahead_reports_batch_fields_and_refuses_other_policies(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inventory = tmp_path / "mig.yaml"
    inventory.write_text(f"nodes:\n  - name: m0\n    mode: mig\n    gpus: {{model: {A100}, count: 4}}\n"
                         "    cpu_milli: 96000\n    memory_mib: 786432\n")
    base = ["--protocol", "churn", "--inventory", str(inventory), "--pods", str(OPENB / "openb_pod_list_default.csv"),
            "--load", "2.0", "--seeds", "1", "--json", "--engine", "serial", "--arrivals", "40",
            "--warmup-seconds", "0"]
    assert cli([*base, "--policy", "dynamig", "--lookahead", "8", "--lookahead-budget-ms", "2000"]) == 0
    doc = json.loads(capsys.readouterr().out)
    run = doc["runs"][0]
    assert run["lookahead"] == 8 and run["batch_solves"] > 0 and run["evictions"] == 0
    row = doc["policies"][0]["loads"][0]
    assert {"batch_solves", "batch_solve_p99_ms", "placed_from_batch_plan"} <= set(row)
    assert cli([*base, "--policy", "bestfit", "--lookahead", "8"]) == 2
    assert "--policy dynamig alone" in capsys.readouterr().err
