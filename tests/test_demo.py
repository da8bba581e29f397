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


def test_too_large_pod_reason_names_the_true_cause(scenario_result: object) -> None:
    why = scenario_result.pending["too-large"]  # type: ignore[attr-defined]
    # not the A100-40GB's largest MIG instance: no GPU in the cluster is that large
    assert why == ("needs 1x 100000 MiB: larger than any GPU in the cluster: the largest is "
                   "A100-SXM4-80GB (hami-core), 81,920 MiB")


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
    # piped stderr (not a terminal): plain progress lines, no bar control codes
    assert "cluster up in" in r.stderr and "events (pod arrivals + departures)" in r.stderr
    assert "\r" not in r.stderr and "\x1b[" not in r.stderr


@pytest.mark.parametrize("arg, message", [
    ("foo", "expected NODE=N"),
    ("nosuch=1", "no node nosuch in the inventory"),
])
def test_bad_fail_migparted_is_a_usage_error_before_any_work(arg: str, message: str) -> None:
    r = subprocess.run([sys.executable, "-m", "dynamig", "demo", "--fail-migparted", arg],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2 and message in r.stderr
    assert "starting" not in r.stderr and "Traceback" not in r.stderr


def test_progress_prints_plain_lines_when_not_a_terminal() -> None:
    import io

    from dynamig.demo.progress import Progress

    out = io.StringIO()
    with Progress(4, "demo: events", "event", stream=out, every_s=0.0) as p:
        for i in range(1, 5):
            p.update_to(i)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("demo: events: 1/4 events (25%)") and lines[-1].startswith("demo: events: 4/4")


def test_summary_says_what_held_and_existing_mean(capsys: pytest.CaptureFixture[str]) -> None:
    from dynamig.commands.demo import print_summary

    doc = {"pods": 2, "placed": 2, "pending": 0, "pending_reasons": {}, "reconfigurations": 1,
           "repartitioned_after_free": 0, "allocation_failures": 0, "retried": 0, "filter_p50_ms": 1.0,
           "filter_p99_ms": 2.0, "peak_mig_instances_held": 2, "peak_hami_core_shares": 0, "violations": [],
           "wall_s": 1.0, "mig_instances_by_profile": {"1g.5gb": 7}, "mig_instances_held_by_profile": {},
           "lookahead": 16, "batch_solves": 3, "placed_from_batch_plan": 1}
    print_summary(doc)
    out = capsys.readouterr().out
    assert "held 0 / existing" not in out
    assert "batch plans solved / pods placed from them  3 / 1" in out
    assert "exist  held by a pod" in out and "every pod has finished" in out
    assert [ln.split() for ln in out.splitlines() if ln.strip().startswith("1g.5gb")] == [["1g.5gb", "7", "0"]]


def test_serve_keeps_a_live_workload_and_sigterm_cleans_up() -> None:
    import os
    import re
    import signal
    import tempfile
    import time
    import urllib.request
    from pathlib import Path

    # its own TMPDIR (short: the kubelet sockets live there, and a unix socket path has ~107 bytes)
    tmp_path = Path(tempfile.mkdtemp(prefix="dyn-", dir="/tmp"))
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    p = subprocess.Popen([sys.executable, "-m", "dynamig", "demo", "--pods", "20", "--serve"], cwd=ROOT, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stderr is not None
        url = None
        seen = []
        deadline = time.monotonic() + 120
        while url is None and time.monotonic() < deadline:
            line = p.stderr.readline()
            if not line:
                break
            seen.append(line)
            m = re.search(r"monitor (http://\S+)", line)
            url = m.group(1) if m else None
        assert url, "demo --serve did not print its monitor URL: " + "".join(seen)[-3000:]
        assert list(tmp_path.iterdir())  # its working folder
        live: set[str] = set()
        while not live and time.monotonic() < deadline:
            with urllib.request.urlopen(url + "/state", timeout=10) as resp:
                st = json.loads(resp.read())
            live = {x["pod"] for x in st["pods"] if x["pod"].startswith("demo/live0-") and x["phase"] == "Running"}
            time.sleep(0.5)
        assert live, "no live workload pod running"
        assert any(inst["pod"] in live for n in st["nodes"] for g in n["gpus"] for inst in g["instances"]) or \
            any(s["pod"] in live for n in st["nodes"] for g in n["gpus"] for s in g["shares"])
        assert st["history"]["samples"]
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=60) == 143
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    left = [x for x in tmp_path.iterdir() if x.name.startswith("dynamig-demo-")]
    if not left:
        tmp_path.rmdir()
    assert not left


def test_an_nvml_node_changes_a_busy_gpu_in_part_without_violations() -> None:
    from models.types import Applier

    inv = Inventory((InventoryNode("mig-n", NodeMode.MIG, (("A100-SXM4-40GB", 1),), 96000, 393216, 10,
                                   applier=Applier.NVML),))
    pods = [spec("long", 0.0, 30.0, {"nvidia.com/gpumem": "4000"}, {"nvidia.com/vgpu-mode": "mig"}),
            spec("mid", 1.0, 5.0, {"nvidia.com/gpumem": "15000"}, {"nvidia.com/vgpu-mode": "mig"})]
    with Demo(inv) as demo:
        r = demo.run(pods)
    assert r.violations == [] and r.placed == 2
    assert r.partial_relayouts >= 1 and r.to_json()["partial_relayouts"] == r.partial_relayouts
