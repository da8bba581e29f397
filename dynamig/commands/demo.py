"""``dynamig demo`` (``make run``): the whole system end to end on an embedded cluster.

The real extender (HTTP) and device plugins (gRPC) run against simulated GPUs and mig-parted; a
seeded workload is replayed in simulated time, every event checked against invariants. With
--serve the extender, metrics and monitor page stay up and a live workload keeps running (in real
time) until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from dataclasses import replace
from typing import Any

from dynamig.commands.argtypes import non_negative_int, port, positive_int
from models.config import Inventory, load_inventory
from models.types import Applier, NodeMode


def _fault(text: str) -> tuple[str, int]:
    node, _, n = text.partition("=")
    if not node or not n.isdigit():
        raise argparse.ArgumentTypeError(f"expected NODE=N (N a non-negative integer), got {text!r}")
    return node, int(n)








def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "demo", help="the whole system end to end on an embedded, simulated cluster", description=__doc__)
    p.add_argument("--pods", type=positive_int, default=240, help="pods in the workload (default 240)")
    p.add_argument("--seed", type=int, default=7, help="workload seed (default 7)")
    p.add_argument("--inventory", metavar="FILE", help="cluster inventory YAML (default: the built-in cluster)")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.add_argument("--serve", action="store_true",
                   help="then keep the extender, metrics and monitor page up with a live workload "
                        "(Ctrl-C or SIGTERM to stop)")
    p.add_argument("--port", type=port, default=0, help="extender port with --serve (default: a free port)")
    p.add_argument("--metrics-port", type=port, default=0, help="metrics port with --serve (default: a free port)")
    p.add_argument("--lookahead", type=non_negative_int, default=16, metavar="N",
                   help="the extender plans up to N pending pods together with CP-SAT (default 16; 0: off)")
    p.add_argument("--applier", choices=("mig-parted", "nvml"), default="mig-parted",
                   help="how the MIG nodes change layouts (default mig-parted: whole GPU, idle only; "
                        "nvml: per instance, busy GPUs too)")
    p.add_argument("--fail-migparted", type=_fault, action="append", default=[], metavar="NODE=N",
                   help="fault injection: the next N mig-parted applies on NODE fail")
    return p


def print_summary(doc: dict[str, Any]) -> None:
    w = sys.stdout.write
    w("\ndynamig demo — summary\n")
    rows = [
        ("pods in the workload", doc["pods"]),
        ("placed (ran to completion)", doc["placed"]),
        ("still pending at the end", doc["pending"]),
        ("GPUs re-partitioned (layout changes)", doc["reconfigurations"]),
        ("  of which partial (busy GPU, nvml)", doc.get("partial_relayouts", 0)),
        ("…of them GPUs freed, then re-partitioned", doc["repartitioned_after_free"]),
        ("allocation failures (pods retried)", f"{doc['allocation_failures']} ({doc['retried']})"),
        ("filter latency p50 / p99 (HTTP)", f"{doc['filter_p50_ms']:.1f} ms / {doc['filter_p99_ms']:.1f} ms"),
        ("peak MIG instances held by pods", doc["peak_mig_instances_held"]),
        ("peak hami-core shares held by pods", doc["peak_hami_core_shares"]),
        ("lookahead: batch plans solved / pods placed from them",
         f"{doc['batch_solves']} / {doc['placed_from_batch_plan']}" if doc["lookahead"] else "off"),
        ("invariant violations", len(doc["violations"])),
        ("wall time", f"{doc['wall_s']:.1f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        w(f"  {k:<{width}}  {v}\n")
    profiles = sorted(doc["mig_instances_by_profile"])
    if profiles:
        held = doc["mig_instances_held_by_profile"]
        w("\n  MIG instances left on the GPUs at the end (every pod has finished; an instance stays\n"
          "  until its GPU is re-partitioned, so 'held by a pod' is 0 except for pods still running):\n")
        w(f"    {'profile':<10} {'exist':>6} {'held by a pod':>14}\n")
        for prof in profiles:
            w(f"    {prof:<10} {doc['mig_instances_by_profile'][prof]:>6} {held.get(prof, 0):>14}\n")
    if doc["pending_reasons"]:
        w("\n  pending pods and why:\n")
        for pod, why in sorted(doc["pending_reasons"].items()):
            w(f"    {pod}: {why}\n")
    for v in doc["violations"][:20]:
        w(f"  VIOLATION {v}\n")


class _Terminated(Exception):
    """SIGTERM: unwind (so the temporary folder and the servers are cleaned up), exit 143."""


def _on_sigterm(_signum: int, _frame: Any) -> None:
    raise _Terminated


def _check_faults(faults: list[tuple[str, int]], inventory: Inventory) -> str | None:
    names = {n.name for n in inventory.nodes}
    unknown = sorted({node for node, _ in faults} - names)
    if unknown:
        return (f"--fail-migparted: no node {', '.join(unknown)} in the inventory "
                f"(nodes: {', '.join(sorted(names))})")
    return None


def run(args: argparse.Namespace) -> int:
    from dynamig.demo.inventory import builtin_inventory
    from dynamig.demo.progress import Progress, say
    from dynamig.demo.runner import Demo
    from dynamig.demo.workload import generate

    inventory = load_inventory(args.inventory) if args.inventory else builtin_inventory(applier=Applier(args.applier))
    if args.inventory and args.applier != Applier.MIG_PARTED.value:  # the flag sets every mig node's applier
        inventory = replace(inventory, nodes=tuple(replace(n, applier=Applier(args.applier))
                                                   if n.mode is NodeMode.MIG else n for n in inventory.nodes))
    problem = _check_faults(args.fail_migparted, inventory)
    if problem:
        print(f"dynamig demo: {problem}", file=sys.stderr)
        return 2
    specs = generate(args.pods, args.seed)
    gpus = sum(c for n in inventory.nodes for _, c in n.gpus)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    demo: Demo | None = None
    try:
        t0 = time.perf_counter()
        say(f"dynamig demo: starting the extender and {len(inventory.nodes)} device plugins "
            f"({len(inventory.nodes)} nodes, {gpus} simulated GPUs)…")
        demo = Demo(inventory, fail_migparted=dict(args.fail_migparted),
                    extender_port=args.port if args.serve else 0,
                    metrics_port=args.metrics_port if args.serve else 0, lookahead=args.lookahead)
        say(f"dynamig demo: cluster up in {time.perf_counter() - t0:.1f} s; replaying {len(specs)} pods "
            f"(seed {args.seed}) in simulated time, invariants checked before every departure")
        with Progress(2 * len(specs), "dynamig demo: events (pod arrivals + departures)", "event") as bar:
            result = demo.run(specs, progress=bar.update_to)
        doc = result.to_json()
        if args.json:
            print(json.dumps(doc, indent=2, sort_keys=True))
        else:
            print_summary(doc)
        sys.stdout.flush()
        if args.serve:
            urls = doc.get("urls", {})
            say(f"\nserving — monitor {urls.get('monitor')}  extender {urls.get('extender')}  "
                f"metrics {urls.get('metrics')}\nlive workload: {args.pods} pods per round in real time "
                "(Ctrl-C or SIGTERM to stop)")

            def round_done(k: int, r: Any) -> None:
                say(f"dynamig demo: live round {k + 1}: {r.placed} placed, {len(r.pending)} pending, "
                    f"{len(r.violations)} violation(s)")

            demo.live(args.pods, args.seed, on_round=round_done)
        return 1 if doc["violations"] else 0
    except KeyboardInterrupt:
        return 0 if args.serve else 130
    except _Terminated:
        return 143
    finally:
        if demo is not None:
            demo.close()
        signal.signal(signal.SIGTERM, previous)
