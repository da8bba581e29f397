from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import DATA, ROOT

from dynamig.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dynamig", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


def test_catalog_model_json() -> None:
    r = run_cli("catalog", "--model", "H200", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["name"] == "H200" and doc["layouts"]["valid"] == 297 and len(doc["layouts"]["maximal"]) == 19
    prof = {p["name"]: p for p in doc["profiles"]}
    assert prof["2g.35gb"]["memory_mib"] == 33280 and prof["3g.71gb"]["placements"] == [
        {"start": 0, "size": 4}, {"start": 4, "size": 4}]
    assert [t["index"] for t in doc["default_templates"]] == [0, 1, 2, 3]


def test_catalog_unknown_model_is_a_user_error(capsys: object) -> None:
    assert main(["catalog", "--model", "K80"]) == 1


def test_validate_config(tmp_path: object) -> None:
    good = os.path.join(DATA, "hami-device-config.yaml")
    r = run_cli("validate-config", good)
    assert r.returncode == 0 and "ok (device-config: 4 model groups" in r.stdout
    bad = os.path.join(str(tmp_path), "bad.yaml")
    with open(bad, "w") as fh:
        fh.write("nvidia:\n  knownMigGeometries:\n  - models: [A30]\n    allowedGeometries:\n"
                 "    - {name: 1g.6gb, memory: 5952, count: 4}\n")
    r = run_cli("validate-config", bad)
    assert r.returncode == 1
    assert "bad.yaml:5" in r.stderr and "flat list" in r.stderr
    r = run_cli("validate-config")
    assert r.returncode == 2
