"""``dynamig bench``: planner latency on a deterministic mixed, half-full cluster."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("bench", help="planner latency benchmark (single-pod queries, optional batch)")
    p.add_argument("--nodes", type=int, default=100, help="nodes (default 100)")
    p.add_argument("--gpus-per-node", type=int, default=8, help="GPUs per node (default 8)")
    p.add_argument("--queries", type=int, default=200, help="single-pod queries (default 200)")
    p.add_argument("--batch", type=int, default=0, help="also plan a batch of this many pending pods")
    p.add_argument("--batch-budget-ms", type=float, default=1800.0, help="time budget of the batch call")
    p.add_argument("--policy", default="dynamig", choices=("dynamig", "hami-legacy", "hami-v210", "bestfit"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    return p


def run(args: argparse.Namespace) -> int:
    from solver import PlannerConfig
    from solver import bench as b

    for name in ("nodes", "gpus_per_node"):
        if getattr(args, name) < 1:
            print(f"dynamig bench: --{name.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    if args.queries < 0 or args.batch < 0:
        print("dynamig bench: --queries and --batch must not be negative", file=sys.stderr)
        return 2
    if args.batch_budget_ms <= 0:
        print(f"dynamig bench: --batch-budget-ms must be positive, got {args.batch_budget_ms:g}", file=sys.stderr)
        return 2
    res = b.run(args.nodes, args.gpus_per_node, args.queries, args.batch, args.seed,
                PlannerConfig(policy=args.policy), args.batch_budget_ms)
    doc = res.summary()
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"{doc['nodes']} nodes, {doc['gpus']} GPUs, {doc['queries']} queries ({doc['policy']}): "
          f"p50 {doc['p50_ms']} ms, p99 {doc['p99_ms']} ms, max {doc['max_ms']} ms "
          f"(first {doc['first_ms']} ms), {doc['placed']} placed")
    if args.batch:
        print(f"batch of {doc['batch']}: {doc['batch_ms']} ms, {doc['batch_placed']} placed, {doc['batch_status']}")
        for s in doc["batch_stages"]:
            print(f"  {s['name']:<17} value {s['value']:<20g} bound {s['bound']:<20g} {s['status']}")
    return 0
