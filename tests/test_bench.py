"""The benchmark and the plan/bench commands (JSON keys of DESIGN §8, exit codes)."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import pytest

from dynamig.commands import bench as bench_cmd
from dynamig.commands import plan as plan_cmd
from models.errors import DynamigError
from solver import bench


def _args(mod: Any, argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command")
    mod.add_parser(sub)
    return p.parse_args(argv)


def test_bench_cluster_is_deterministic_and_half_full() -> None:
    a = bench.build_cluster(20, 4, seed=3)
    b = bench.build_cluster(20, 4, seed=3)
    assert a == b
    held = sum(1 for n in a.nodes for g in n.gpus for i in g.instances if not i.free)
    assert held > 0


def test_bench_command_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc = bench_cmd.run(_args(bench_cmd, ["bench", "--nodes", "8", "--gpus-per-node", "2", "--queries", "15",
                                         "--batch", "4", "--json"]))
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    for k in ("nodes", "gpus", "queries", "p50_ms", "p99_ms", "max_ms", "batch_ms", "batch_placed"):
        assert k in doc
    assert doc["nodes"] == 8 and doc["gpus"] == 16 and doc["queries"] == 15


def test_bench_command_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_cmd.run(_args(bench_cmd, ["bench", "--nodes", "0"])) == 2


INVENTORY = """
nodes:
  - name: a100
    mode: mig
    gpus: {model: A100-SXM4-40GB, count: 1}
  - name: share
    mode: hami-core
    gpus: {model: A100-SXM4-80GB, count: 2}
"""

POD = """
apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: default, annotations: {nvidia.com/vgpu-mode: mig}}
spec:
  containers:
    - name: main
      resources: {limits: {nvidia.com/gpu: 1, nvidia.com/gpumem: %d}}
"""


def _files(tmp: Any) -> dict[str, str]:
    paths = {"inv": os.path.join(tmp, "inv.yaml"), "pod": os.path.join(tmp, "pod.yaml"),
             "pending": os.path.join(tmp, "pending.yaml"), "pods": os.path.join(tmp, "pods.yaml")}
    with open(paths["inv"], "w") as fh:
        fh.write(INVENTORY)
    with open(paths["pod"], "w") as fh:
        fh.write(POD % ("a", 8000))
    with open(paths["pending"], "w") as fh:
        fh.write(POD % ("b", 15000))
    return paths


def test_plan_command_json_keys(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    f = _files(str(tmp_path))
    rc = plan_cmd.run(_args(plan_cmd, ["plan", "--inventory", f["inv"], "--pod", f["pod"], "--json"]))
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["placed"] and doc["node"] == "a100"
    (u,) = doc["units"]
    assert set(u) >= {"container", "gpu", "gpu_index", "kind", "profile", "memory_mib", "reconfigure",
                      "template_index"}
    assert (u["kind"], u["profile"], u["template_index"], u["reconfigure"]) == ("mig", "2g.10gb", 1, True)
    assert doc["stages"][0]["name"] == "placed"
    assert {"name", "value", "bound", "status"} <= set(doc["stages"][0])
    assert "solve_ms" in doc and "reasons" in doc


def test_plan_command_with_pending_and_existing_pods(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    f = _files(str(tmp_path))
    rc = plan_cmd.run(_args(plan_cmd, ["plan", "--inventory", f["inv"], "--pod", f["pod"], "--pending",
                                       f["pending"], "--json"]))
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["pending_placed"] == 1 and doc["pending"][0]["placed"]
    # now make the first plan an existing pod: its allocation annotation occupies the GPU
    from models.codecs import POD_ALLOCATION, allocation_from_plan, encode_allocation
    from models.requests import parse_pod
    from solver import plan

    state, _ = plan_cmd.build_state(f["inv"], None, False)
    manifest = plan_cmd.load_pod_manifests(f["pod"])[0]
    p = plan(state, parse_pod(manifest))
    manifest["metadata"]["annotations"][POD_ALLOCATION] = encode_allocation(allocation_from_plan(p))
    import yaml

    with open(f["pods"], "w") as fh:
        yaml.safe_dump(manifest, fh)
    with open(f["pod"], "w") as fh:
        fh.write(POD % ("c", 30000))
    rc = plan_cmd.run(_args(plan_cmd, ["plan", "--inventory", f["inv"], "--pods", f["pods"], "--pod", f["pod"],
                                       "--json"]))
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and not doc["placed"]
    why = {r["node"]: r["reason"] for r in doc["reasons"]}
    assert "GPU busy" in why["a100"] and "vgpu-mode mig" in why["share"]


def test_plan_command_user_errors(tmp_path: Any) -> None:
    f = _files(str(tmp_path))
    with pytest.raises(DynamigError, match=r"missing\.yaml"):
        plan_cmd.run(_args(plan_cmd, ["plan", "--inventory", f["inv"], "--pod", str(tmp_path / "missing.yaml")]))
    with open(f["pod"], "w") as fh:
        fh.write("metadata: {name: x}\nspec: {containers: [{name: c, resources: {limits: {nvidia.com/gpu: -1}}}]}")
    with pytest.raises(DynamigError, match=r"pod\.yaml"):
        plan_cmd.run(_args(plan_cmd, ["plan", "--inventory", f["inv"], "--pod", f["pod"]]))


def test_loadbench_places_every_request_over_http() -> None:
    """The filter load benchmark end to end on a small cluster: warm-up, measured requests, result keys."""
    from extender.loadbench import run_size

    r = run_size(nodes=8, requests=6, concurrency=1, seed=3)
    assert r["placed"] == 6 and r["errors"] == 0
    assert r["gpus"] == 64 and r["p50_ms"] <= r["p99_ms"] <= r["max_ms"]
