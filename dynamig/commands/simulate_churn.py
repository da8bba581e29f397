"""``dynamig simulate --protocol churn``: the live-cluster protocol (``solver.sim.churn``) over
policies × loads × seeds, run on Ray (local by default) or serially, aggregated into one document."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, TextIO

from dynamig.commands.argtypes import non_negative_float, non_negative_int, positive_float, positive_int
from models.errors import DynamigError
from solver.openb import OpenbFormatError

__all__ = ["add_churn_arguments", "parse_loads", "run_churn_command"]

DEFAULT_LOADS = "0.8,0.9,1.0"


def parse_loads(text: str) -> list[float]:
    """``0.7,0.8,1.1``: offered loads (fractions of the GPU capacity), each > 0, no repeats."""
    out: list[float] = []
    for part in text.split(","):
        try:
            v = float(part.strip())
        except ValueError:
            raise ValueError(f"bad load {part.strip()!r} in {text!r} (use e.g. 0.8,0.9,1.0)") from None
        if not v > 0 or v > 10:
            raise ValueError(f"load {v:g} out of range (0, 10]")
        out.append(round(v, 4))
    if len(set(out)) != len(out):
        raise ValueError(f"load list {text!r} repeats a load")
    return out


def _loads_arg(text: str) -> list[float]:
    try:
        return parse_loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None








def add_churn_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("churn protocol (--protocol churn)")
    g.add_argument("--load", type=_loads_arg, default=parse_loads(DEFAULT_LOADS), metavar="LIST",
                   help=f"offered loads ρ, fractions of the GPU capacity in milli-GPU demand (default {DEFAULT_LOADS})")
    g.add_argument("--arrivals", type=positive_int, default=1000, metavar="N",
                   help="measured arrivals per run, after the warm-up (default 1000)")
    g.add_argument("--duration", default="trace", metavar="D",
                   help="pod lifetimes: trace (the pod CSV's completed pods, default), fixed:S, exp:MEAN, "
                   "uniform:LO,HI")
    g.add_argument("--max-duration", type=positive_float, default=86400.0, metavar="S",
                   help="cap on trace lifetimes in seconds (default 86400)")
    g.add_argument("--warmup-seconds", type=non_negative_float, default=None, metavar="S",
                   help="simulated time excluded at the start (default: the longest duration)")
    g.add_argument("--reconfig-seconds", type=non_negative_float, default=10.0, metavar="S",
                   help="a layout change keeps its GPU from serving for S seconds (default 10)")
    g.add_argument("--max-wait", type=positive_float, default=None, metavar="S",
                   help="a pod waiting longer than S seconds is abandoned (default: never)")
    g.add_argument("--slo-seconds", type=positive_float, default=600.0, metavar="S",
                   help="p95 wait target of the sustainable load (default 600)")
    g.add_argument("--lookahead", type=non_negative_int, default=0, metavar="N",
                   help="policy dynamig: plan the first N queued pods together (CP-SAT batch plan, the "
                        "extender's lookahead on the simulated clock; default 0 = off)")
    g.add_argument("--lookahead-budget-ms", type=positive_float, default=1000.0, metavar="MS",
                   help="wall-clock CP-SAT budget per lookahead re-solve (default 1000)")
    g.add_argument("--engine", choices=("ray", "serial"), default=None,
                   help="run the grid as Ray tasks (default when Ray is installed) or serially in this process")
    g.add_argument("--ray-address", metavar="ADDR", default=None,
                   help="Ray cluster to run on (e.g. ray://head:10001 or auto); default: a local Ray (ray.init())")
    g.add_argument("--out", metavar="DIR", default=None,
                   help="also write one JSON per run and aggregate.json into DIR")
    g.add_argument("--resume", action="store_true",
                   help="with --out: read back the runs already in DIR instead of running them again")


class LineProgress:
    """Progress on stderr: a tqdm bar on a terminal, otherwise one line every ``every`` seconds."""

    def __init__(self, total: int, unit: str, desc: str, stream: TextIO | None = None, every: float = 5.0) -> None:
        stream = sys.stderr if stream is None else stream
        self.total, self.unit, self.desc, self.stream, self.every = total, unit, desc, stream, every
        self.n = 0
        self.t0 = self.last = time.monotonic()
        self.bar: Any = None
        if stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit=unit, desc=desc, file=stream, mininterval=0.5)

    def update(self, k: int = 1, note: str = "") -> None:
        self.n += k
        if self.bar is not None:
            self.bar.update(k)
            if note:
                self.bar.set_postfix_str(note)
            return
        now = time.monotonic()
        if now - self.last >= self.every or self.n >= self.total:
            self.last = now
            extra = f"  {note}" if note else ""
            print(f"{self.desc}: {self.n}/{self.total} {self.unit}  {now - self.t0:.0f}s{extra}", file=self.stream,
                  flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _fail(message: str, code: int = 1) -> int:
    print(f"dynamig simulate: {message}", file=sys.stderr)
    return code


def _inventory(args: argparse.Namespace) -> Any:
    from dataclasses import replace

    from models.config import Inventory, load_inventory
    from solver.openb import load_nodes
    from solver.whatif.cluster import scale_nodes
    from solver.whatif.mapping import mig_inventory_nodes

    if args.inventory:
        inv = load_inventory(args.inventory)
    else:
        inv = Inventory(mig_inventory_nodes(load_nodes(args.nodes), args.mig_model), source=args.nodes)
    inv = replace(inv, nodes=scale_nodes(inv.nodes, args.scale))
    if args.layouts is not None:
        inv = replace(inv, layouts_any=args.layouts == "any")
    return inv


def run_churn_command(args: argparse.Namespace, policies: list[str]) -> int:
    from solver.policies import CLUSTER_POLICIES
    from solver.reports import aggregate_churn
    from solver.sim import fluid_limit
    from solver.sim.specs import churn_spec
    from solver.sim.sweep import RayMissing, RayUnavailable, ray_available, run_grid

    if not (args.inventory or args.mig_model):
        return _fail("--protocol churn needs a cluster state: --inventory FILE, or --nodes FILE --mig-model MODEL", 2)
    bad = [p for p in policies if p not in CLUSTER_POLICIES]
    if bad:
        return _fail(f"policy {bad[0]!r} does not run the churn protocol yet: the FGD paper's policies need "
                     f"the trace's typical pods and the run's random stream, which the churn simulator does "
                     f"not hand them (churn policies: {', '.join(CLUSTER_POLICIES)})", 2)
    if args.lookahead and policies != ["dynamig"]:
        return _fail(f"--lookahead runs solver.plan's batch plan: use it with --policy dynamig alone "
                     f"(got {', '.join(policies)})", 2)
    if args.resume and not args.out:
        return _fail("--resume needs --out DIR", 2)
    if args.ray_address and args.engine == "serial":
        return _fail("--ray-address needs the ray engine", 2)
    engine = args.engine or ("ray" if args.ray_address or ray_available() else "serial")
    if engine == "ray" and not ray_available():
        return _fail("Ray is not installed: pip install 'dynamig[sweep]' (or use --engine serial)", 2)
    for path in (args.nodes or args.inventory, args.pods):
        if not os.path.isfile(path):
            return _fail(f"{path}: no such file")
    try:
        inv = _inventory(args)
        if not inv.nodes:
            return _fail(f"{args.inventory or args.nodes}: no GPU node to simulate")
        spec = churn_spec(inv, args.pods, args.duration, args.max_duration, pods=args.arrivals,
                          warmup_s=args.warmup_seconds, reconfig_s=args.reconfig_seconds, max_wait_s=args.max_wait,
                          time_budget_ms=args.time_budget_ms, lookahead=args.lookahead,
                          lookahead_budget_ms=args.lookahead_budget_ms,
                          **({"objective": args.objective} if getattr(args, "objective", None) else {}))
    except (OpenbFormatError, DynamigError) as exc:
        return _fail(str(exc))
    except ValueError as exc:
        return _fail(f"{args.pods}: {exc}")
    fluid = fluid_limit(spec.shapes, spec.inventory)
    grid = len(policies) * len(args.load) * len(args.seeds)
    if engine == "serial":
        from solver.sim.churn import arrival_count

        total = sum(arrival_count(spec, load, seed) for load in args.load for seed in args.seeds)
        bar = LineProgress(total * len(policies), "arrivals", "simulate churn")
    else:
        bar = LineProgress(grid, "runs", f"simulate churn on Ray ({engine})")

    def on_run(r: dict[str, Any]) -> None:
        note = f"{r['policy']} ρ={r['load']:g} seed {r['seed']}: p95 wait {r['wait_p95_s']:.0f}s"
        if engine == "ray":
            bar.update(1, note)

    try:
        runs = run_grid(spec, policies, args.load, args.seeds, engine=engine, ray_address=args.ray_address,
                        out_dir=args.out, on_run=on_run, progress=(lambda k: bar.update(k)) if engine == "serial"
                        else None, resume=args.resume)
    except RayMissing as exc:
        return _fail(str(exc), 2)
    except RayUnavailable as exc:
        return _fail(f"{exc} (try again, or --engine serial)")
    finally:
        bar.close()
    c = spec.inventory
    meta = {
        "inventory": args.inventory, "nodes": args.nodes, "mig_model": args.mig_model, "trace": args.pods,
        "engine": engine, "ray_address": args.ray_address,
        "cluster": {"nodes": len(c.nodes), "gpus": spec.total_gpus,
                    "modes": sorted({n.mode.value for n in c.nodes}),
                    "models": sorted({m for n in c.nodes for m, _ in n.gpus}),
                    "capacity_gpu_milli": spec.capacity_milli},
        "durations": spec.durations.describe(), "mean_duration_s": round(spec.durations.mean, 3),
        "warmup_s": spec.warmup, "arrivals_measured": spec.pods, "reconfig_s": spec.reconfig_s,
        "max_wait_s": spec.max_wait_s, "layouts": "any" if c.layouts_any else "templates",
        "objective": list(spec.objective),
    }
    doc = aggregate_churn(runs, policies=policies, loads=args.load, seeds=args.seeds, slo_s=args.slo_seconds,
                          fluid_limit_load=fluid, meta=meta)
    if args.out:
        with open(os.path.join(args.out, "aggregate.json"), "w") as fh:
            json.dump(doc, fh)
            fh.write("\n")
    if args.json:
        print(json.dumps(doc))
    else:
        print_churn(doc)
    return 0


def _f(v: Any, nd: int = 1) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def print_churn(doc: dict[str, Any]) -> None:
    c = doc["cluster"]
    print(f"protocol churn  {c['nodes']} nodes, {c['gpus']} GPUs ({', '.join(c['modes'])}: {', '.join(c['models'])})  "
          f"durations {doc['durations']}  re-cut {doc['reconfig_s']:g}s  seeds {len(doc['seeds'])}  "
          f"SLO p95 <= {doc['slo_s']:g}s  fluid limit ρ = {_f(doc['fluid_limit_load'], 3)}")
    print(f"{'policy':>13} {'ρ':>5} {'mean s':>8} {'p50 s':>8} {'p95 s':>8} {'p99 s':>8} {'waited':>7} {'aband':>6} "
          f"{'pods/h':>8} {'alloc%':>7} {'util%':>6} {'idle/1k':>8} {'busy/1k':>8} {'evict':>5} {'p99 ms':>7}")
    for pol in doc["policies"]:
        for r in pol["loads"]:
            print(f"{pol['policy']:>13} {r['load']:>5.2f} {r['wait_mean_s']:>8.0f} {r['wait_p50_s']:>8.0f} "
                  f"{r['wait_p95_s']:>8.0f} {r['wait_p99_s']:>8.0f} {100 * r['waited_share']:>6.1f}% "
                  f"{r['abandoned']:>6.1f} {r['throughput_per_h']:>8.1f} {r['allocated_compute_pct']:>7.1f} "
                  f"{r['demand_utilisation_pct']:>6.1f} {r['reconf_per_1000_idle']:>8.1f} "
                  f"{r['reconf_per_1000_busy']:>8.1f} {r['evictions']:>5d} {r['planner_p99_ms']:>7.2f}")
        print(f"{pol['policy']:>13} sustainable load {_f(pol['sustainable_load'], 2)} "
              f"(÷ fluid limit = {_f(pol['sustainable_to_fluid'], 3)})")
