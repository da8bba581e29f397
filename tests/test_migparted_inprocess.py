"""The in-process simulated mig-parted (what the demo runs) answers exactly as its executable does."""

from __future__ import annotations

import os
import re
import sys

import pytest

from deviceplugin.migparted import GpuTarget, MigPartedError, MigPartedResult, MigPartedRunner, render_config
from deviceplugin.migparted_sim import InProcessMigParted
from deviceplugin.sim import ENV_STATE, SimBackend
from models.types import NodeMode

A100 = "A100-SXM4-40GB"
_TIME = re.compile(r'time="[^"]*"')


def _norm(r: MigPartedResult, d: str) -> tuple[int | None, str, str]:
    return r.returncode, r.stdout.replace(d, "D"), _TIME.sub("time=T", r.stderr).replace(d, "D")


def _node(d: str) -> SimBackend:
    return SimBackend.create(os.path.join(d, "gpus.json"), "n", [(A100, 2)], NodeMode.MIG, reset=True)


def _cfg(d: str, name: str, targets: list[GpuTarget]) -> str:
    path = os.path.join(d, f"{name}.yaml")
    with open(path, "w") as fh:
        fh.write(render_config(name, targets))
    return path


def _script(d: str) -> list[list[str]]:
    a = _cfg(d, "a", [GpuTarget(0, True, {"1g.5gb": 1, "2g.10gb": 3}), GpuTarget(1, True, {})])
    b = _cfg(d, "b", [GpuTarget(0, True, {"7g.40gb": 1}), GpuTarget(1, False)])
    bad = os.path.join(d, "bad.yaml")
    with open(bad, "w") as fh:
        fh.write("version: v2\n")
    return [["assert", "-f", a, "-c", "a"], ["apply", "-f", a, "-c", "a"], ["assert", "-f", a, "-c", "a"],
            ["export", "-o", "json"], ["apply", "-f", b, "-c", "b"], ["export"], ["apply", "-f", bad],
            ["apply", "-c", "x"], ["apply", "-f", os.path.join(d, "nope.yaml")], ["frobnicate"],
            ["assert", "-a", "-f", b], ["-d", "apply", "-f", a, "-c", "a"]]


def test_same_answers_and_gpu_state_as_the_executable(tmp_path: os.PathLike[str]) -> None:
    results: dict[str, list[tuple[int | None, str, str]]] = {}
    states: dict[str, list[object]] = {}
    for kind in ("process", "in-process"):
        d = os.path.join(str(tmp_path), kind)
        os.makedirs(d)
        backend = _node(d)
        env = {ENV_STATE: backend.path, "DYNAMIG_SIM_MIGPARTED_FAIL": "0"}
        runner: MigPartedRunner = (MigPartedRunner([sys.executable, "-m", "deviceplugin.migparted_sim"], 60, env)
                                   if kind == "process" else InProcessMigParted(60, env))
        results[kind], states[kind] = [], []
        for args in _script(d):
            results[kind].append(_norm(runner.run(args), d))
            states[kind].append([(g.mig_enabled, g.profile_counts()) for g in backend.gpus()])
    proc, inproc = results["process"], results["in-process"]
    for i, (p, q) in enumerate(zip(proc, inproc, strict=True)):
        assert p == q, f"step {i}"
    assert states["process"] == states["in-process"]
    assert [r[0] for r in proc] == [1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0]  # the script exercises both outcomes


def test_fault_injection_reaches_the_in_process_runner(tmp_path: os.PathLike[str]) -> None:
    backend = _node(str(tmp_path))
    backend.inject_migparted_failure(1)
    runner = InProcessMigParted(60, backend.migparted_env())
    a = _cfg(str(tmp_path), "a", [GpuTarget(0, True, {"3g.20gb": 2}), GpuTarget(1, True, {})])
    r = runner.run(["apply", "-f", a, "-c", "a"])
    assert r.returncode == 1 and "all orderings failed" in r.stderr and backend.gpus()[0].instances == ()
    assert runner.apply(a, "a").ok and backend.gpus()[0].profile_counts() == {"3g.20gb": 2}


def test_hang_past_the_timeout_is_killed_before_it_applies(tmp_path: os.PathLike[str]) -> None:
    backend = _node(str(tmp_path))
    backend.inject_migparted_hang(1, seconds=60)
    runner = InProcessMigParted(0.5, backend.migparted_env())
    a = _cfg(str(tmp_path), "a", [GpuTarget(0, True, {"7g.40gb": 1}), GpuTarget(1, True, {})])
    r = runner.run(["apply", "-f", a, "-c", "a"])
    assert r.timed_out and r.returncode is None and r.seconds < 30
    assert backend.gpus()[0].instances == ()  # killed while hanging: nothing applied
    backend.inject_migparted_hang(1, seconds=60)
    with pytest.raises(MigPartedError, match=r"timed out after 0\.5s and was killed"):
        runner.apply(a, "a")
    runner.timeout_s = 60
    assert runner.apply(a, "a").ok and backend.gpus()[0].profile_counts() == {"7g.40gb": 1}
