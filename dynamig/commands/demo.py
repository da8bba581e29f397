"""``dynamig demo`` (``make run``): the whole system end to end on an embedded cluster."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from tqdm import tqdm

from models.config import load_inventory


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help="the whole system end to end on an embedded, simulated cluster")
    p.add_argument("--pods", type=int, default=240, help="pods in the workload (default 240)")
    p.add_argument("--seed", type=int, default=7, help="workload seed (default 7)")
    p.add_argument("--inventory", metavar="FILE", help="cluster inventory YAML (default: the built-in cluster)")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.add_argument("--serve", action="store_true",
                   help="keep the extender, metrics and monitor page up after the run (Ctrl-C to stop)")
    p.add_argument("--port", type=int, default=0, help="extender port with --serve (default: a free port)")
    p.add_argument("--metrics-port", type=int, default=0, help="metrics port with --serve (default: a free port)")
    p.add_argument("--applier", choices=("mig-parted", "nvml"), default="mig-parted",
                   help="how the MIG nodes change layouts (default mig-parted; nvml: not yet available)")
    p.add_argument("--fail-migparted", action="append", default=[], metavar="NODE=N",
                   help="fault injection: the next N mig-parted applies on NODE fail")
    return p


def _faults(items: list[str]) -> dict[str, int]:
    out = {}
    for item in items:
        node, _, n = item.partition("=")
        if not node or not n.isdigit():
            raise SystemExit(f"dynamig demo: --fail-migparted expects NODE=N, got {item!r}")
        out[node] = int(n)
    return out


def print_summary(doc: dict[str, Any]) -> None:
    w = sys.stdout.write
    w("\ndynamig demo — summary\n")
    rows = [
        ("pods", doc["pods"]),
        ("placed", doc["placed"]),
        ("pending at the end", doc["pending"]),
        ("GPUs re-partitioned (layout changes)", doc["reconfigurations"]),
        ("freed GPUs re-partitioned later", doc["repartitioned_after_free"]),
        ("allocation failures (retried)", f"{doc['allocation_failures']} ({doc['retried']})"),
        ("filter latency p50 / p99 (HTTP)", f"{doc['filter_p50_ms']:.1f} ms / {doc['filter_p99_ms']:.1f} ms"),
        ("peak MIG instances held / hami-core shares", f"{doc['peak_mig_instances_held']} / "
                                                       f"{doc['peak_hami_core_shares']}"),
        ("invariant violations", len(doc["violations"])),
        ("wall time", f"{doc['wall_s']:.1f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        w(f"  {k:<{width}}  {v}\n")
    w("\n  MIG instances at the end (held / existing):\n")
    for prof in sorted(doc["mig_instances_by_profile"]):
        w(f"    {prof:<10} {doc['mig_instances_held_by_profile'].get(prof, 0):>4} / "
          f"{doc['mig_instances_by_profile'][prof]}\n")
    if doc["pending_reasons"]:
        w("\n  pending pods and why:\n")
        for pod, why in sorted(doc["pending_reasons"].items()):
            w(f"    {pod}: {why}\n")
    for v in doc["violations"][:20]:
        w(f"  VIOLATION {v}\n")


def run(args: argparse.Namespace) -> int:
    from dynamig.demo.inventory import builtin_inventory
    from dynamig.demo.runner import Demo
    from dynamig.demo.workload import generate

    if args.pods < 1:
        print("dynamig demo: --pods must be at least 1", file=sys.stderr)
        return 2
    if args.applier == "nvml":
        print("dynamig demo: --applier nvml: planner support for partial re-layout not yet available (the planner "
              "does not plan partial changes, and the device plugin's Allocate does not call the nvml applier yet; "
              "see docs/relayout.md)", file=sys.stderr)
        return 2
    inventory = load_inventory(args.inventory) if args.inventory else builtin_inventory()
    specs = generate(args.pods, args.seed)
    print(f"dynamig demo: {len(inventory.nodes)} nodes, {sum(c for n in inventory.nodes for _, c in n.gpus)} GPUs, "
          f"{len(specs)} pods (seed {args.seed}); starting extender and device plugins…", file=sys.stderr)
    demo = Demo(inventory, fail_migparted=_faults(args.fail_migparted),
                extender_port=args.port if args.serve else 0, metrics_port=args.metrics_port if args.serve else 0)
    try:
        with tqdm(total=len(specs), desc="pods", unit="pod", file=sys.stderr, disable=None) as bar:
            result = demo.run(specs, progress=lambda n: bar.update(n - bar.n))
        doc = result.to_json()
        if args.json:
            print(json.dumps(doc, indent=2, sort_keys=True))
        else:
            print_summary(doc)
        if args.serve:
            urls = doc.get("urls", {})
            print(f"\nserving — extender {urls.get('extender')}  metrics {urls.get('metrics')}  "
                  f"monitor {urls.get('monitor')}  (Ctrl-C to stop)", file=sys.stderr)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
        return 1 if doc["violations"] else 0
    finally:
        demo.close()
