"""The churn document: per policy × load, means over seeds, the sustainable load and the fluid
limit (field names are a contract, listed in ``docs/churn.md``)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

__all__ = ["MEAN_FIELDS", "aggregate_churn", "sustainable_load"]

#: Per-run fields averaged over seeds; ``wait_p95_s`` is also published as ``p95_wait_s``.
MEAN_FIELDS: tuple[str, ...] = (
    "wait_mean_s", "wait_p50_s", "wait_p95_s", "wait_p99_s", "wait_max_s", "waited_share", "abandoned", "still_waiting",
    "throughput_per_h", "offered_per_h", "allocated_compute_pct", "demand_utilisation_pct",
    "reconf_per_1000_idle", "reconf_per_1000_busy", "idle_repartitions", "busy_repartitions", "evictions",
    "planner_p50_ms", "planner_p99_ms",
    "batch_solves", "batch_solve_p50_ms", "batch_solve_p99_ms", "placed_from_batch_plan",
    "placed_per_pod_around_queue",
)


def sustainable_load(p95_by_load: dict[float, float], slo_s: float) -> float | None:
    """The highest load at which the p95 wait, and that of every lower load, is within the SLO."""
    best = None
    for load in sorted(p95_by_load):
        if p95_by_load[load] > slo_s:
            break
        best = load
    return best


def _sd(xs: list[float]) -> float | None:
    return round(statistics.stdev(xs), 3) if len(xs) > 1 else None


def aggregate_churn(runs: Sequence[dict[str, Any]], *, policies: Sequence[str], loads: Sequence[float],
                    seeds: Sequence[int], slo_s: float, fluid_limit_load: float | None,
                    meta: dict[str, Any]) -> dict[str, Any]:
    by_key = {(r["policy"], r["load"], r["seed"]): r for r in runs}
    out_policies = []
    for pol in policies:
        rows = []
        p95: dict[float, float] = {}
        for load in loads:
            rs = [by_key[(pol, load, s)] for s in seeds if (pol, load, s) in by_key]
            if not rs:
                continue
            row: dict[str, Any] = {"load": load, "seeds": len(rs)}
            for f in MEAN_FIELDS:
                row[f] = round(statistics.fmean(float(r.get(f, 0.0)) for r in rs), 3)
            row["p95_wait_s"] = row["wait_p95_s"]
            row["p95_wait_sd_s"] = _sd([float(r["wait_p95_s"]) for r in rs])
            row["evictions"] = int(sum(int(r["evictions"]) for r in rs))
            row["planner_p99_ms_max"] = max(float(r["planner_p99_ms"]) for r in rs)
            p95[load] = row["p95_wait_s"]
            rows.append(row)
        sus = sustainable_load(p95, slo_s)
        ratio = round(sus / fluid_limit_load, 3) if sus is not None and fluid_limit_load else None
        out_policies.append({"policy": pol, "sustainable_load": sus, "sustainable_to_fluid": ratio,
                             "evictions": int(sum(r["evictions"] for r in rows)),
                             "busy_repartitions": round(sum(r["busy_repartitions"] for r in rows), 3),
                             "loads": rows})
    return {
        "protocol": "churn",
        **meta,
        "loads": list(loads),
        "seeds": list(seeds),
        "slo_s": slo_s,
        "fluid_limit_load": None if fluid_limit_load is None else round(fluid_limit_load, 4),
        "policies": out_policies,
        "runs": [{k: v for k, v in r.items() if k != "timeline"} for r in runs],
    }
