"""Building a :class:`ChurnSpec` from files: an inventory, a pod source (openb CSV or Pod YAML)
and a duration choice."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from models.config import Inventory
from solver.fgd.workload import SimPod
from solver.traces import DEFAULT_MAX_DURATION_S, Durations, load_pods, parse_duration, trace_durations
from solver.whatif.runner import reference_memory
from solver.whatif.specs import openb_ref_memory
from solver.whatif.workload import Job, jobs_from_openb, load_pod_yaml

from .churn import ChurnSpec

__all__ = ["churn_spec", "gpu_shapes"]


def gpu_shapes(jobs: list[Job]) -> tuple[Job, ...]:
    """The GPU pods, each request carrying its host CPU and memory (NodeResourcesFit)."""
    out = []
    for j in jobs:
        if j.request is None or j.demand <= 0:
            continue
        out.append(replace(j, request=replace(j.request, cpu_milli=j.cpu, host_memory_mib=j.mem)))
    if not out:
        raise ValueError("no GPU pod among the pods")
    return tuple(out)


def churn_spec(inv: Inventory, pods_path: str, duration: str = "trace",
               max_duration_s: float | None = DEFAULT_MAX_DURATION_S, **kw: Any) -> ChurnSpec:
    """Openb CSV: shapes are its GPU pods (mapped as in the FGD protocol on an inventory,
    :func:`solver.whatif.specs.openb_ref_memory`), durations the trace's completed pods unless
    ``duration`` says otherwise. Pod YAML: shapes are the manifests; ``duration`` must be given.
    ``max_duration_s`` caps trace lifetimes. ``kw``: :class:`ChurnSpec` fields."""
    durations: Durations | None = None if duration == "trace" else parse_duration(duration)
    if pods_path.lower().endswith(".csv"):
        rows = load_pods(pods_path)
        jobs = jobs_from_openb([SimPod.from_openb(p) for p in rows], openb_ref_memory(inv))
        if durations is None:
            durations = trace_durations(rows, pods_path, max_duration_s)
    else:
        jobs = load_pod_yaml(pods_path, reference_memory(inv))
        if durations is None:
            raise ValueError("Pod YAML has no lifetimes: give --duration (fixed:S, exp:MEAN or uniform:LO,HI)")
    meta = (("inventory", inv.source), ("pods_file", pods_path), ("durations", durations.describe()))
    return ChurnSpec(inv, gpu_shapes(jobs), durations, meta=meta + tuple(kw.pop("meta", ())), **kw)
