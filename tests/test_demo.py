"""End to end: the real extender over HTTP, real gRPC device plugins, simulated GPUs and mig-parted."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT

from dynamig.demo.runner import Demo
from dynamig.demo.workload import PodSpec, manifest
from models.config import Inventory, InventoryNode
from models.types import NodeMode

SMALL = Inventory((
    InventoryNode("mig-a", NodeMode.MIG, (("A100-SXM4-40GB", 2),), 96000, 393216, 10),
    InventoryNode("share-a", NodeMode.HAMI_CORE, (("A100-SXM4-80GB", 1),), 96000, 393216, 4),
))


def spec(name: str, at: float, dur: float, limits: dict[str, str], ann: dict[str, str] | None = None) -> PodSpec:
    return PodSpec(name, at, dur, manifest(name, limits, ann or {}))


SCENARIO = [
    # phase 1: small MIG pods partition both GPUs into 1g.5gb instances
    *[spec(f"small-{i}", 0.1 * i, 5.0, {"nvidia.com/gpumem": "4000"}, {"nvidia.com/vgpu-mode": "mig"})
      for i in range(9)],
    spec("share-1", 0.5, 50.0, {"nvidia.com/gpumem": "20000", "nvidia.com/gpucores": "30"},
         {"nvidia.com/vgpu-mode": "hami-core"}),
    spec("too-large", 1.0, 5.0, {"nvidia.com/gpumem": "100000"}),
    # phase 2, after the small pods ended: a 3g and a whole GPU need the freed GPUs re-partitioned
    spec("medium", 20.0, 10.0, {"nvidia.com/gpumem": "15000"}, {"nvidia.com/vgpu-mode": "mig"}),
    spec("whole", 21.0, 10.0, {"nvidia.com/gpu": "1"}, {"nvidia.com/vgpu-mode": "mig"}),
]


@pytest.fixture(scope="module")
def scenario_result() -> object:
    with Demo(SMALL) as demo:
        return demo.run(list(SCENARIO))


def test_no_violations_and_everything_but_the_giant_placed(scenario_result: object) -> None:
    r = scenario_result
    assert r.violations == []  # type: ignore[attr-defined]
    assert r.placed == len(SCENARIO) - 1  # type: ignore[attr-defined]
    assert set(r.pending) == {"too-large"}  # type: ignore[attr-defined]


def test_freed_gpus_were_repartitioned(scenario_result: object) -> None:
    r = scenario_result
    assert r.reconfigurations >= 3  # type: ignore[attr-defined]  # 2 first layouts, then at least one more
    assert r.repartitioned_after_free >= 1  # type: ignore[attr-defined]
    assert r.instances_by_profile.get("7g.40gb") == 1  # type: ignore[attr-defined]


def test_too_large_pod_reason_names_the_largest_instance(scenario_result: object) -> None:
    why = scenario_result.pending["too-large"]  # type: ignore[attr-defined]
    assert "100000 MiB" in why and "largest" in why
    assert "7g.40gb" in why or "81920" in why or "80896" in why


def test_migparted_failure_is_retried_and_nothing_leaks() -> None:
    pods = [spec("one", 0.0, 5.0, {"nvidia.com/gpumem": "15000"}, {"nvidia.com/vgpu-mode": "mig"}),
            spec("two", 10.0, 5.0, {"nvidia.com/gpumem": "4000"}, {"nvidia.com/vgpu-mode": "mig"})]
    with Demo(SMALL, fail_migparted={"mig-a": 1}) as demo:
        r = demo.run(pods)
        assert r.allocation_failures == 1 and r.retried == 1
        assert r.violations == []
        assert r.placed == 2 and not r.pending
        failed = demo.store.get_pod("demo", "one")
        assert failed["status"]["phase"] == "Failed"
        assert failed["metadata"]["annotations"]["dynamig.io/bind-phase"] == "failed"
        assert "dynamig.io/allocation-error" in failed["metadata"]["annotations"]
        retried = demo.store.get_pod("demo", "one-r1")
        assert retried["metadata"]["annotations"]["dynamig.io/bind-phase"] == "success"
        # no node lock left behind, no device left in use by the kubelet
        for n in demo.store.list_nodes():
            assert "dynamig.io/node-lock" not in n["metadata"].get("annotations", {})
        assert all(not k.in_use for k in demo.kubelets.values())


def test_demo_cli_json_small() -> None:
    r = subprocess.run([sys.executable, "-m", "dynamig", "demo", "--pods", "40", "--seed", "3", "--json"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    for key in ("pods", "placed", "pending", "reconfigurations", "violations", "filter_p50_ms", "filter_p99_ms"):
        assert key in doc
    assert doc["pods"] == 40 and doc["violations"] == [] and doc["placed"] >= 35
    assert doc["filter_p99_ms"] > 0
