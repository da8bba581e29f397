"""examples/: every inventory, device-config and pod file loads, validates (the CLI too), and every
example GPU pod gets a valid plan on the mixed inventory; the openb-format files load and simulate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ROOT

from dynamig import cli
from models.cluster import state_from_inventory
from models.config import load_device_config, load_inventory
from models.requests import parse_pod
from models.validate import validate
from models.yamlsrc import load_pod_manifests

EXAMPLES = Path(ROOT) / "examples"
INVENTORIES = sorted((EXAMPLES / "inventories").glob("*.yaml"))
PODS = sorted((EXAMPLES / "pods").glob("*.yaml"))


def test_the_promised_examples_exist() -> None:
    assert {p.stem for p in INVENTORIES} >= {"small-mig", "mixed", "openb-shaped"}
    assert len(PODS) >= 3
    assert (EXAMPLES / "openb/nodes.csv").is_file() and (EXAMPLES / "openb/pods.csv").is_file()


@pytest.mark.parametrize("path", INVENTORIES, ids=lambda p: p.name)
def test_inventory_loads(path: Path) -> None:
    inv = load_inventory(str(path))
    assert inv.nodes and all(count > 0 for n in inv.nodes for _, count in n.gpus)
    assert state_from_inventory(inv).nodes


def test_device_config_loads_without_warnings() -> None:
    loaded = load_device_config(str(EXAMPLES / "device-config.yaml"))
    assert loaded.warnings == () and len(loaded.config.groups) == 2


def test_validate_config_cli_accepts_every_example(capsys: pytest.CaptureFixture[str]) -> None:
    files = [str(p) for p in INVENTORIES] + [str(EXAMPLES / "device-config.yaml")]
    assert cli.main(["validate-config", *files]) == 0
    assert capsys.readouterr().out.count(": ok (") == len(files)


@pytest.mark.parametrize("path", PODS, ids=lambda p: p.name)
def test_pods_parse_and_gpu_pods_get_a_valid_plan(path: Path) -> None:
    from solver import PlannerConfig, plan

    inv = load_inventory(str(EXAMPLES / "inventories/mixed.yaml"))
    state = state_from_inventory(inv)
    cfg = PlannerConfig(templates=inv.templates, layouts_any=inv.layouts_any)
    for manifest in load_pod_manifests(str(path)):
        req = parse_pod(manifest)
        if not req.wants_gpu:
            continue
        out = plan(state, req, cfg)
        assert out.placements[0].placed, (req.key, out.reasons)
        assert validate(state, out, {req.key: req}, inv.templates) == []


def test_cpu_only_pod_is_not_reported_as_infeasible(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pod = tmp_path / "cpu-only.yaml"
    pod.write_text(json.dumps(load_pod_manifests(str(EXAMPLES / "pods/mixed-list.yaml"))[-1]))
    assert cli.main(["plan", "--inventory", str(EXAMPLES / "inventories/mixed.yaml"), "--pod", str(pod)]) == 0
    out = capsys.readouterr().out
    assert "demo/cpu-only-0: requests no GPU" in out and "infeasible" not in out


def test_openb_format_examples_load() -> None:
    from solver.openb import load_nodes, load_pods

    nodes, pods = load_nodes(EXAMPLES / "openb/nodes.csv"), load_pods(EXAMPLES / "openb/pods.csv")
    assert len(nodes) == 12 and len(pods) == 80
    assert any(p.num_gpu == 0 for p in pods) and any(p.num_gpu > 1 for p in pods)
