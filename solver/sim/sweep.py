"""Sweeps: policies × loads × seeds of the churn protocol, as Ray tasks.

``ray.init()`` starts a local Ray on this machine unless ``ray_address`` names a cluster
(``ray://host:10001`` or ``auto``); the cluster's workers need dynamig installed. The spec is put
in the object store once; each (policy, load, seed) is one task. ``engine="serial"`` runs the same
grid in this process (no Ray; used when Ray is not installed). Results: one JSON per run (the run
document, timeline included) plus ``aggregate.json`` when ``out_dir`` is given.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .churn import ChurnSpec, run_churn

__all__ = ["ENGINES", "RayMissing", "RayUnavailable", "ray_available", "run_file_name", "run_grid"]

ENGINES = ("ray", "serial")
OnRun = Callable[[dict[str, Any]], None]


class RayMissing(RuntimeError):
    """Ray was asked for but cannot be imported."""


class RayUnavailable(RuntimeError):
    """Ray is installed but did not start or could not be reached."""


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def run_file_name(run: dict[str, Any]) -> str:
    return f"run-{run['policy']}-rho{run['load']:g}-seed{run['seed']}.json"


def _grid(policies: Sequence[str], loads: Sequence[float], seeds: Sequence[int]) -> list[tuple[str, float, int]]:
    return [(p, load, s) for p in policies for load in loads for s in seeds]


def _task(spec: ChurnSpec, policy: str, load: float, seed: int) -> dict[str, Any]:
    return run_churn(spec, policy, load, seed)


def run_grid(spec: ChurnSpec, policies: Sequence[str], loads: Sequence[float], seeds: Sequence[int], *,
             engine: str = "ray", ray_address: str | None = None, out_dir: str | Path | None = None,
             on_run: OnRun | None = None, progress: Callable[[int], None] | None = None,
             resume: bool = False) -> list[dict[str, Any]]:
    """Every (policy, load, seed) run, in grid order. ``on_run`` is called as each run finishes;
    ``progress(n)`` (serial engine only) as arrivals are processed. ``resume``: a run whose JSON
    is already in ``out_dir`` is read back instead of run again (same spec assumed)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r} (known: {', '.join(ENGINES)})")
    grid = _grid(policies, loads, seeds)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    results: dict[tuple[str, float, int], dict[str, Any]] = {}

    def done(r: dict[str, Any]) -> None:
        results[(r["policy"], r["load"], r["seed"])] = r
        if out is not None:
            (out / run_file_name(r)).write_text(json.dumps(r) + "\n")
        if on_run is not None:
            on_run(r)

    if resume and out is not None:
        for pol, load, seed in list(grid):
            f = out / run_file_name({"policy": pol, "load": load, "seed": seed})
            if f.is_file():
                r = json.loads(f.read_text())
                results[(pol, load, seed)] = r
                if on_run is not None:
                    on_run(r)
    # seed-major: a sweep cut short has every policy and load for the first seeds
    todo = sorted((k for k in grid if k not in results), key=lambda k: (list(seeds).index(k[2]), k[1], k[0]))
    if engine == "serial":
        for pol, load, seed in todo:
            done(run_churn(spec, pol, load, seed, progress))
    else:
        try:
            import ray
        except ImportError:
            raise RayMissing("Ray is not installed (pip install 'dynamig[sweep]')") from None
        started = not ray.is_initialized()
        if started:
            try:
                ray.init(address=ray_address, include_dashboard=False, log_to_driver=False, configure_logging=False)
            except Exception as exc:  # Ray raises plain Exception / ConnectionError on a failed start
                where = f"at {ray_address}" if ray_address else "locally"
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise RayUnavailable(f"Ray did not start {where}: {first}") from None
        try:
            task = ray.remote(_task)
            ref = ray.put(spec)
            pending = [task.remote(ref, pol, load, seed) for pol, load, seed in todo]
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                for r in ray.get(ready):
                    done(r)
        finally:
            if started:
                ray.shutdown()
    return [results[k] for k in grid]
