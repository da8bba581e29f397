"""Sweeps on Ray (solver/sim/sweep.py): a tiny policies × loads × seeds grid as Ray tasks on a
local Ray gives exactly the serial results, one JSON per run plus the aggregate. Skipped only when
Ray cannot be imported (it is the optional ``sweep`` extra)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.config import Inventory, InventoryNode
from models.requests import ContainerRequest, PodRequest
from models.types import NodeMode
from solver.sim import ChurnSpec
from solver.sim.sweep import run_file_name, run_grid
from solver.traces import parse_duration
from solver.whatif.workload import Job

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'dynamig[sweep]')")


def test_tiny_sweep_on_local_ray_matches_serial(tmp_path: Path) -> None:
    inv = Inventory((InventoryNode("m0", NodeMode.MIG, (("A100-SXM4-80GB", 2),), 96000, 786432),))
    jobs = tuple(Job(f"p{m}", 1000, 1024, m, PodRequest("openb", f"p{m}", containers=(
        ContainerRequest("main", 0, 1, None, m // 10, m // 10),), cpu_milli=1000, host_memory_mib=1024), m)
        for m in (160, 470, 1000))
    spec = ChurnSpec(inv, jobs, parse_duration("exp:300"), pods=15, warmup_s=300.0)
    grid = (["dynamig", "hami-legacy"], [0.8, 1.0], [1, 2])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        on_ray = run_grid(spec, *grid, engine="ray", out_dir=tmp_path)
    finally:
        ray.shutdown()
    serial = run_grid(spec, *grid, engine="serial")
    drop = ("elapsed_s", "planner_p50_ms", "planner_p99_ms")
    assert [{k: v for k, v in r.items() if k not in drop} for r in on_ray] == \
        [{k: v for k, v in r.items() if k not in drop} for r in serial]
    files = sorted(tmp_path.glob("run-*.json"))
    assert len(files) == 8
    assert json.loads((tmp_path / run_file_name(on_ray[0])).read_text())["policy"] == "dynamig"
    # --resume reads finished runs back instead of running them again
    assert run_grid(spec, *grid, engine="serial", out_dir=tmp_path, resume=True) == on_ray


def test_a_ray_that_does_not_start_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from solver.sim.sweep import RayUnavailable

    inv = Inventory((InventoryNode("m0", NodeMode.MIG, (("A100-SXM4-80GB", 1),)),))
    job = Job("p", 0, 0, 1000, PodRequest("openb", "p", containers=(ContainerRequest("main", 0, 1),)), 1000)
    spec = ChurnSpec(inv, (job,), parse_duration("fixed:10"), pods=2)

    def boom(**_: object) -> None:
        raise Exception("The current node timed out during startup.\nmore detail")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", boom)
    with pytest.raises(RayUnavailable, match="did not start at ray://nowhere:10001: The current node timed out"):
        run_grid(spec, ["dynamig"], [1.0], [1], engine="ray", ray_address="ray://nowhere:10001")
