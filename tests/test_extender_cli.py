"""``dynamig extender``: argument parsing and the in-memory cluster it serves."""

from __future__ import annotations

import argparse
import os
from typing import Any

import httpx
import pytest
import yaml
from test_extender_support import cluster, filter_body, pod_manifest

import solver
from dynamig.commands import extender as cmd
from extender import create_app, serve_in_thread
from models.codecs import POD_ALLOCATION, allocation_from_plan, encode_allocation
from models.errors import ConfigError
from models.requests import parse_pod

INVENTORY = """
nodes:
  - name: solo
    mode: mig
    gpus: {model: A100-SXM4-40GB, count: 1}
"""


def parse(*argv: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers()
    cmd.add_parser(sub)
    return ap.parse_args(["extender", *argv])


def write(tmp: str, name: str, text: str) -> str:
    path = os.path.join(tmp, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def test_defaults() -> None:
    a = parse()
    assert (a.store, a.host, a.port, a.metrics_port, a.scheduler_name) == (
        "kube", "127.0.0.1", 8888, 9395, "dynamig-scheduler")
    assert (a.serve_host, a.serve_port, a.metrics_host, a.reservation_ttl) == ("0.0.0.0", 8443, None, 180.0)
    assert cmd.check_args(a) is None
    assert not a.leader_elect and not a.legacy_metrics


@pytest.mark.parametrize(("argv", "why"), [
    (["--host", "0.0.0.0"], "loopback only"),
    (["--host", "10.0.0.5"], "loopback only"),
    (["--port", "8443"], "their own ports"),
    (["--serve-port", "70000"], "not a TCP port"),
    (["--reservation-ttl", "-1"], "reservation-ttl"),
    (["--time-budget-ms", "-5"], "time-budget-ms"),
    (["--tls-cert-file", "x"], "go together"),
])
def test_usage_errors_before_anything_starts(argv: list[str], why: str) -> None:
    assert why in (cmd.check_args(parse(*argv)) or "")


def test_policy_is_checked_by_the_parser() -> None:
    with pytest.raises(SystemExit) as e:
        parse("--policy", "nonsense")
    assert e.value.code == 2


def test_memory_store_serves_inventory_and_existing_allocations(tmp_path: object) -> None:
    tmp = str(tmp_path)
    inv = write(tmp, "inv.yaml", INVENTORY)
    # an existing pod already holding solo's whole GPU (as the extender would have annotated it)
    state = cluster(INVENTORY)
    holder = pod_manifest("holder", gpu="1")
    plan = solver.plan(state, parse_pod(holder), solver.PlannerConfig())
    holder["metadata"]["annotations"] = {POD_ALLOCATION: encode_allocation(allocation_from_plan(plan)),
                                         "dynamig.io/node": "solo", "dynamig.io/plan-time": "1"}
    holder["spec"]["nodeName"] = "solo"  # bound long ago (an unbound reservation that old has expired)
    pods = write(tmp, "pods.yaml", yaml.safe_dump_all([
        holder, {"apiVersion": "v1", "kind": "List", "items": [pod_manifest("waiting", gpu="1")]}]))
    store, config, stop = cmd.build(parse("--store", "memory", "--inventory", inv, "--pods", pods,
                                          "--legacy-metrics", "--scheduler-name", "s"))
    assert stop == [] and config.legacy_metrics and config.scheduler_name == "s"
    assert len(store.list_nodes()) == 1 and len(store.list_pods()) == 2
    with serve_in_thread(create_app(store, config)) as h, httpx.Client(base_url=h.url) as http:
        waiting = store.get_pod("ml", "waiting")
        doc = http.post("/filter", json=filter_body(waiting, ["solo"])).json()
        assert doc["NodeNames"] == [] and "solo" in doc["FailedNodes"]


def test_user_errors(tmp_path: object) -> None:
    tmp = str(tmp_path)
    with pytest.raises(ConfigError, match="--inventory"):
        cmd.build(parse("--store", "memory"))
    inv = write(tmp, "inv.yaml", INVENTORY)
    bad = write(tmp, "bad.yaml", "kind: Service\nmetadata: {name: x}\n")
    with pytest.raises(ConfigError, match="expected kind Pod"):
        cmd.build(parse("--store", "memory", "--inventory", inv, "--pods", bad))
    dup = write(tmp, "dup.yaml", "kind: Pod\nmetadata: {name: x}\n---\nkind: Pod\nmetadata: {name: x}\n")
    with pytest.raises(ConfigError, match="already exists"):
        cmd.build(parse("--store", "memory", "--inventory", inv, "--pods", dup))
    with pytest.raises(ConfigError, match="--leader-elect"):
        cmd.build(parse("--store", "memory", "--inventory", inv, "--leader-elect"))
    assert cmd.run(parse("--tls-cert-file", "x")) == 2


def test_services_without_credentials_and_bad_numbers_exit_cleanly(tmp_path: Any) -> None:
    """Issue 15, finding 8: no traceback; one line; 1 for a user error, 2 for a usage error."""
    import subprocess
    import sys
    from pathlib import Path

    cli = str(Path(sys.executable).with_name("dynamig"))
    inv = write(str(tmp_path), "inv.yaml", INVENTORY)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "KUBECONFIG"))}
    env["HOME"] = str(tmp_path)  # no ~/.kube/config
    key = write(str(tmp_path), "allocation.key", "k" * 64 + "\n")
    runs = {
        "extender": ([cli, "extender", "--allocation-key-file", key], 1),
        "deviceplugin": ([cli, "deviceplugin", "--node", "solo", "--backend", "sim", "--inventory", inv,
                          "--device-plugin-dir", str(tmp_path), "--sim-state", str(tmp_path / "sim.json"),
                          "--allocation-key-file", key], 1),
        "nokey": ([cli, "extender"], 1),
        "policy": ([cli, "extender", "--policy", "nonsense"], 2),
        "budget": ([cli, "plan", "--inventory", inv, "--pod", inv, "--budget-ms", "-5"], 2),
    }
    procs = {k: subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k, (argv, _) in runs.items()}
    errs = {}
    for k, p in procs.items():
        out, errs[k] = p.communicate(timeout=120)
        assert p.returncode == runs[k][1], (k, p.returncode, errs[k])
        assert "Traceback" not in errs[k] and out == "", (k, errs[k])
    for k in ("extender", "deviceplugin"):
        (line,) = errs[k].strip().splitlines()
        assert line.startswith(f"dynamig {k}: ") and "no Kubernetes credentials" in line, line
    (line,) = errs["nokey"].strip().splitlines()
    assert line.startswith("dynamig extender: ") and "--allocation-key-file" in line, line
    assert "invalid choice: 'nonsense'" in errs["policy"]
    assert errs["budget"].strip() == "dynamig plan: --budget-ms -5: must be a number of milliseconds > 0"
