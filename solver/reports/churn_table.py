"""The churn table in Markdown, from an aggregate document::

    python -m solver.reports.churn_table aggregate.json [--loads 0.8,0.9,1.0]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["churn_table", "main"]


def _f(v: Any, nd: int = 0) -> str:
    return "–" if v is None else f"{v:,.{nd}f}"


def churn_table(doc: dict[str, Any], loads: Sequence[float] | None = None) -> str:
    """One row per policy × load: delay mean/p50/p95/p99, waited share, abandoned, throughput,
    allocated compute and demand utilisation, re-cuts per 1,000 pods (idle / busy GPU), evictions,
    planner p99; then each policy's sustainable load and its ratio to the fluid limit."""
    want = None if loads is None else {round(x, 4) for x in loads}
    head = ("| policy | ρ | mean s | p50 s | p95 s | p99 s | waited | abandoned | pods/h | alloc. compute % "
            "| demand util. % | re-cuts /1k idle | /1k busy | evictions | planner p99 ms |")
    lines = [head, "|" + "---|" * 15]
    for pol in doc["policies"]:
        for r in pol["loads"]:
            if want is not None and round(r["load"], 4) not in want:
                continue
            lines.append(
                f"| {pol['policy']} | {r['load']:g} | {_f(r['wait_mean_s'])} | {_f(r['wait_p50_s'])} "
                f"| {_f(r['p95_wait_s'])} | {_f(r['wait_p99_s'])} | {100 * r['waited_share']:.0f} % "
                f"| {_f(r['abandoned'], 1)} | {_f(r['throughput_per_h'], 1)} | {_f(r['allocated_compute_pct'], 1)} "
                f"| {_f(r['demand_utilisation_pct'], 1)} | {_f(r['reconf_per_1000_idle'], 1)} "
                f"| {_f(r['reconf_per_1000_busy'], 1)} | {r['evictions']} | {_f(r['planner_p99_ms'], 2)} |")
    lines.append("")
    lines.append(f"Fluid limit ρ* = {_f(doc['fluid_limit_load'], 3)}; SLO p95 ≤ {doc['slo_s']:g} s over the loads "
                 f"{', '.join(f'{x:g}' for x in doc['loads'])}.")
    lines.append("")
    lines.append("| policy | sustainable load | ÷ fluid limit |")
    lines.append("|---|---:|---:|")
    for pol in doc["policies"]:
        lines.append(f"| {pol['policy']} | {_f(pol['sustainable_load'], 2)} | {_f(pol['sustainable_to_fluid'], 3)} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m solver.reports.churn_table", description=__doc__)
    ap.add_argument("aggregate", type=Path)
    ap.add_argument("--loads", default=None, help="comma list of the loads to show (default: all)")
    args = ap.parse_args(argv)
    doc = json.loads(args.aggregate.read_text())
    loads = None if args.loads is None else [float(x) for x in args.loads.split(",")]
    sys.stdout.write(churn_table(doc, loads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
