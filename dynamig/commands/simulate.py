"""``dynamig simulate``: what-if replay of a workload against a cluster under a placement policy.

``--protocol churn`` is the live cluster (``solver.sim.churn``, ``docs/churn.md``): Poisson arrivals
at offered loads ``--load``, trace durations, departures, a FIFO queue retried when capacity frees,
a re-cut delay; it needs ``--inventory`` (or ``--nodes`` with ``--mig-model``). ``--protocol fgd``
(the default) is the FGD paper's evaluation on the Alibaba "openb"
trace (``shared/data/openb/README.md`` §7): each seed is one run (shuffle, tune to 1.3× the GPU
capacity, place pods one at a time, no departures), seeds run in parallel processes. Output:
unallocated GPU % per arrived-load bucket, per seed, and the mean over seeds at 100 % arrived
load. One simulator (``solver.whatif``: one loop, ``models.ClusterState`` with host CPU and
memory, one policy registry) runs every policy; three ways to describe the cluster:

* ``--nodes NODES.csv --pods PODS.csv``: the openb node list's GPUs as hami-core nodes (a share =
  gpumem-percentage = gpucores = milli / 10; host CPU and memory in the state). The FGD paper's
  policies (random, dotprod, clustering, packing, fgd-bestfit, fgd; the default here) and the
  research policy share-pricing reproduce the paper there (they place CPU-only pods too;
  ``--tie-break``); the planner-side policies (dynamig = solver.plan, hami-legacy, hami-v210,
  dra-firstfit, bestfit; ``--objective``, ``--tie``, ``--tie-quantum`` configure the planner as in
  PlannerConfig) place every GPU pod on the same state;
* ``--nodes NODES.csv --mig-model A100-SXM4-80GB --pods PODS.csv``: the MIG variant: every node's
  GPUs replaced by that model in mig mode, shares mapped to the smallest serving MIG instance,
  every GPU pod placed by a cluster-state policy (dynamig = solver.plan, hami-legacy, hami-v210,
  dra-firstfit, bestfit);
  ``--scale`` keeps a fraction of the nodes (pods are tuned to the same 1.3× ratio);
* ``--inventory CLUSTER.yaml --pods PODS.{csv,yaml}``: any inventory (mig and hami-core nodes), pods
  from an openb CSV or Pod manifests, planned as in the MIG variant (the FGD paper's policies:
  hami-core inventories only).

Every run reports unallocated GPU compute (the headline), memory and the FGD demand-based measure
(the paper's metric; on the hami-core node list all three agree), reconfigurations (layout
changes) and planner latency; fragmentation is null (FGD's measure does not transfer to MIG
instances). ``python -m solver.fgd.reproduce`` keeps the FGD package's own loop as a cross-check.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import replace
from typing import Any

from dynamig.commands.argtypes import positive_int
from models.errors import ConfigError, DynamigError
from solver.fgd.policy import TIE_BREAKS
from solver.openb import OpenbFormatError
from solver.planner.config import OBJECTIVES, TIES
from solver.policies import CLUSTER_POLICIES, FGD_POLICIES, info, names
from solver.whatif.mapping import MIG_MODELS

from .simulate_churn import add_churn_arguments, run_churn_command

PROTOCOLS = ("fgd", "churn")
DEFAULT_SEEDS = "42-51"
PLANNER_POLICY = "dynamig"
NODE_LIST_POLICY = "fgd"
REPORT_BUCKETS = (50, 70, 80, 90, 95, 100, 105, 110, 120, 130)
_SEED_ITEM = re.compile(r"(\d+)(?:-(\d+))?")


def parse_seeds(text: str) -> list[int]:
    """``"42-51"``, ``"7"`` or a comma list of both (``"1,3,10-12"``); ranges are inclusive,
    seeds are non-negative integers and may not repeat."""
    seeds: list[int] = []
    for part in text.split(","):
        m = _SEED_ITEM.fullmatch(part.strip())
        if m is None:
            raise ValueError(f"bad seed item {part.strip()!r} in {text!r} (use e.g. 42-51 or 1,2,5-7)")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise ValueError(f"seed range {part.strip()!r} is empty")
        seeds.extend(range(lo, hi + 1))
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seed list {text!r} repeats a seed")
    return seeds


def _seeds_arg(text: str) -> list[int]:
    try:
        return parse_seeds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "simulate",
        help="what-if replay of a workload trace under a policy (FGD protocol)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--nodes", metavar="FILE", help="node list CSV (sn,cpu_milli,memory_mib,gpu,model)")
    where.add_argument("--inventory", metavar="FILE", help="inventory YAML (DESIGN §8) instead of a node list")
    p.add_argument("--pods", required=True, metavar="FILE",
                   help="pod list CSV (openb_pod_list_*.csv) or, with --mig-model/--inventory, Pod manifests (YAML)")
    p.add_argument("--protocol", choices=PROTOCOLS, default="fgd", help="evaluation protocol (default: fgd)")
    p.add_argument(
        "--policy",
        metavar="P",
        help=f"placement policy (one registry, solver.policies). The FGD paper's (hami-core GPUs: --nodes "
        f"alone or a hami-core inventory): {', '.join(FGD_POLICIES)} (default {NODE_LIST_POLICY} with --nodes "
        f"alone); the planner-side (every cluster): {', '.join(CLUSTER_POLICIES)} (default {PLANNER_POLICY}); "
        f"--protocol churn: a comma list of the planner-side ones or all (default all)",
    )
    p.add_argument(
        "--seeds",
        type=_seeds_arg,
        default=parse_seeds(DEFAULT_SEEDS),
        metavar="SPEC",
        help=f"seeds, e.g. 42-51 or 1,2,5-7 (default: {DEFAULT_SEEDS})",
    )
    p.add_argument(
        "--processes",
        type=positive_int,
        default=None,
        metavar="N",
        help=f"worker processes (default: number of CPUs, here {os.cpu_count() or 1})",
    )
    p.add_argument(
        "--tune", type=float, default=1.3, metavar="RATIO",
        help="resample the pods until their GPU demand is RATIO × the cluster's GPU capacity (default 1.3, the "
             "FGD protocol: 2 manifests can become 10 pods; said on stderr); MIG/inventory runs: 0 = replay as given"
    )
    p.add_argument(
        "--tie-break",
        choices=TIE_BREAKS,
        default="first",
        help="the FGD paper's policies: equal node scores go to the first node in the seeded node order (the FGD "
             "artifact, default) or to a random one",
    )
    p.add_argument("--mig-model", choices=MIG_MODELS, metavar="MODEL",
                   help=f"MIG variant of the node list: every GPU becomes MODEL in mig mode ({', '.join(MIG_MODELS)})")
    p.add_argument("--scale", type=_fraction, default=1.0, metavar="F",
                   help="MIG/inventory runs: keep this fraction of the nodes, by node shape (default 1)")
    p.add_argument("--layouts", choices=("templates", "any"), default=None,
                   help="MIG layouts the planner may use (default: the inventory's setting, else templates)")
    p.add_argument("--time-budget-ms", type=float, default=200.0, metavar="MS",
                   help="MIG/inventory runs: planner time budget per pod (default 200)")
    p.add_argument("--objective", type=_objective_arg, default=None, metavar="L1,L2,...",
                   help="cluster-state policies: the planner's lexicographic objective levels, highest first "
                        f"(default: {','.join(OBJECTIVES)})")
    p.add_argument("--tie", choices=TIES, default="name",
                   help="cluster-state policies: equal plans go to the node first by name or first in the given "
                        "node order (default name; on the FGD protocol nodes are renamed <rank>-<name> by the "
                        "seeded order, so both are the artifact's first-in-seeded-order rule)")
    p.add_argument("--tie-quantum", type=positive_int, default=1, metavar="N",
                   help="cluster-state policies: fragmentation values equal after rounding to N per-mille "
                        "of a GPU count as tied (default 1 = exact)")
    p.add_argument("--plot", metavar="FILE.png", help="also plot unallocated GPU vs arrived load (median over seeds)")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    add_churn_arguments(p)
    return p


def _objective_arg(text: str) -> tuple[str, ...]:
    levels = tuple(x.strip() for x in text.split(",") if x.strip())
    unknown = [x for x in levels if x not in OBJECTIVES]
    if not levels or unknown or len(set(levels)) != len(levels):
        raise argparse.ArgumentTypeError(f"bad --objective {text!r}: a comma list of distinct levels of "
                                         f"{', '.join(OBJECTIVES)}")
    return levels


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {value}")
    return value


def _fail(message: str, code: int = 1) -> int:
    print(f"dynamig simulate: {message}", file=sys.stderr)
    return code


def _churn_policies(text: str | None) -> list[str] | str:
    """``--policy`` of the churn protocol: a comma list or ``all`` (default: every cluster policy)."""
    from solver.policies import CLUSTER_POLICIES

    if text is None or text == "all":
        return list(CLUSTER_POLICIES)
    out = [p.strip() for p in text.split(",") if p.strip()]
    if not out or len(set(out)) != len(out):
        return f"bad --policy list {text!r}"
    return out


def run(args: argparse.Namespace) -> int:
    if args.plot and not _plots_available():
        return _fail("--plot needs matplotlib: pip install 'dynamig[plots]'", 2)
    if args.protocol == "churn":
        policies = _churn_policies(args.policy)
        if isinstance(policies, str):
            return _fail(policies, 2)
        return run_churn_command(args, policies)
    return run_whatif(args)


# --------------------------------------------------------------------------- MIG variant and inventory


def _whatif_spec(args: argparse.Namespace, policy: str) -> Any:
    from models.catalog import model
    from models.config import load_inventory
    from models.requests import mig_memory_total
    from solver.openb import load_nodes, load_pods
    from solver.whatif.runner import reference_memory, with_meta
    from solver.whatif.specs import inventory_spec, mig_spec, nodes_spec
    from solver.whatif.workload import load_pod_yaml

    layouts_any = None if args.layouts is None else args.layouts == "any"
    yaml_pods = not args.pods.lower().endswith(".csv")
    if args.inventory:
        inv = load_inventory(args.inventory)
        pods: Any = load_pod_yaml(args.pods, reference_memory(inv)) if yaml_pods else load_pods(args.pods)
        spec = inventory_spec(inv, pods, policy, scale=args.scale, layouts_any=layouts_any, tune_ratio=args.tune,
                              time_budget_ms=args.time_budget_ms)
    elif not args.mig_model:
        if yaml_pods:
            raise ValueError("the node list without --mig-model takes openb pod CSVs (Pod YAML: use --inventory)")
        nodes = load_nodes(args.nodes)
        try:
            spec = nodes_spec(nodes, load_pods(args.pods), policy, scale=args.scale, tune_ratio=args.tune,
                              time_budget_ms=args.time_budget_ms)
        except ValueError as exc:  # a GPU model without a hami-core equivalent
            raise ConfigError(str(exc), args.nodes) from None
        spec = with_meta(spec, nodes=args.nodes)
    else:
        nodes = load_nodes(args.nodes)
        ref = mig_memory_total(model(args.mig_model))
        pods = load_pod_yaml(args.pods, ref) if yaml_pods else load_pods(args.pods)
        spec = mig_spec(nodes, [] if yaml_pods else pods, args.mig_model, policy, scale=args.scale,
                        layouts_any=bool(layouts_any), tune_ratio=args.tune, time_budget_ms=args.time_budget_ms)
        if yaml_pods:
            spec = replace(spec, pods=tuple(pods))
        spec = with_meta(spec, nodes=args.nodes)
    spec = replace(spec, objective=args.objective, tie=args.tie, tie_quantum=args.tie_quantum,
                   tie_break=args.tie_break)
    return with_meta(spec, trace=args.pods, objective=list(spec.config().objective), tie=args.tie,
                     tie_quantum=args.tie_quantum)


def _say_tuning(args: argparse.Namespace, given: int, total: int) -> None:
    """Say on stderr how the workload was tuned (a default --tune 1.3 turns 2 manifests into 10 pods)."""
    per_seed = total / max(1, len(args.seeds))
    n = f"{per_seed:.0f} pods per seed" if per_seed == int(per_seed) else f"{per_seed:.1f} pods per seed on average"
    if args.tune:
        print(f"dynamig simulate: --tune {args.tune:g}: the {given} pod(s) of {args.pods} are shuffled and resampled "
              f"to {args.tune:g}× the cluster's GPU capacity: {n} (--tune 0 replays them as given)",
              file=sys.stderr)
    else:
        print(f"dynamig simulate: --tune 0: the {given} pod(s) of {args.pods} replayed as given, shuffled per seed",
              file=sys.stderr)


def _plots_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def run_whatif(args: argparse.Namespace) -> int:
    from solver.whatif.runner import simulate as simulate_whatif
    from solver.whatif.runner import workload_for

    if args.mig_model and args.inventory:
        return _fail("--mig-model rewrites the --nodes list; an --inventory states its own GPUs", 2)
    policy = args.policy or (NODE_LIST_POLICY if args.nodes and not args.mig_model else PLANNER_POLICY)
    if policy not in names():
        return _fail(f"unknown policy {policy!r} (known: {', '.join(names())})", 2)
    if info(policy).fgd_model and args.mig_model:
        return _fail(f"policy {policy} (the FGD paper's milli-GPU model) runs on hami-core GPUs, not on the MIG "
                     f"variant: drop --mig-model (or use one of {', '.join(CLUSTER_POLICIES)})", 2)
    if args.tune < 0:
        return _fail(f"--tune must be >= 0 (0: no tuning), got {args.tune}", 2)
    for path in (args.nodes or args.inventory, args.pods):
        if not os.path.isfile(path):
            return _fail(f"{path}: no such file")
    try:
        spec = _whatif_spec(args, policy)
        if info(policy).fgd_model:
            from models.cluster import state_from_inventory
            from solver.policies.fgd_model import check_state

            try:
                check_state(state_from_inventory(spec.inventory), policy)
            except ValueError as exc:
                return _fail(f"{args.inventory or args.nodes}: {exc}", 2)
        import numpy as np

        total = sum(len(workload_for(spec, np.random.default_rng(s))) for s in args.seeds)
        _say_tuning(args, len(spec.pods), total)
    except OpenbFormatError as exc:
        return _fail(str(exc))
    except DynamigError as exc:
        return _fail(str(exc))
    except ValueError as exc:  # e.g. a workload without GPU demand
        return _fail(f"{args.pods}: {exc}")
    from dynamig.demo.progress import Progress

    bar = Progress(total, f"dynamig simulate {policy} ({spec.total_gpus} GPUs)", "pod")
    try:
        doc = simulate_whatif(spec, args.seeds, args.processes, progress=bar.update)
    finally:
        bar.close()
    if args.plot:
        from solver.whatif.plots import plot_unallocated

        plot_unallocated({policy: doc}, keys=("unallocated_gpu_pct", "unallocated_demand_pct"),
                         title=f"{policy} on {doc['cluster']['gpus']} GPUs ({os.path.basename(args.pods)})",
                         path=args.plot)
    if args.json:
        print(json.dumps(doc))
    else:
        _print_whatif(doc)
    return 0


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.2f}"


def _print_whatif(doc: dict[str, Any]) -> None:
    c = doc["cluster"]
    src = doc.get("nodes") or doc.get("inventory") or ""
    extra = f"  mig-model {doc['mig_model']}" if doc.get("mig_model") else ""
    extra += f"  tie-break {doc['tie_break']}" if doc.get("tie_break") else ""
    print(f"protocol {doc['protocol']}  policy {doc['policy']}  pods {doc.get('trace', '')}  nodes {src}{extra}  "
          f"scale {doc.get('scale', 1.0)} ({c['nodes']} nodes, {c['gpus']} GPUs)  layouts {doc['layouts']}  "
          f"tune {doc['tune_ratio']}")
    print(f"{'seed':>6} {'pods':>7} {'placed':>7} {'failed':>7} {'unalloc@100%':>13} {'mem@100%':>9} "
          f"{'demand@100%':>12} {'reconf':>7} {'p50 ms':>7} {'p99 ms':>7} {'time':>7}")
    for seed in doc["seeds"]:
        r = doc["per_seed"][str(seed)]
        print(f"{seed:>6} {r['pods']:>7} {r['placed']:>7} {r['failed']:>7} "
              f"{_fmt(r['unallocated_gpu_pct'].get('100')):>13} {_fmt(r['unallocated_gpu_mem_pct'].get('100')):>9} "
              f"{_fmt(r['unallocated_demand_pct'].get('100')):>12} {r['reconfigurations']:>7} "
              f"{r['planner_p50_ms']:>7.2f} {r['planner_p99_ms']:>7.2f} {r['elapsed_s']:>6.1f}s")
    print(f"at 100% arrived load, mean over {len(doc['seeds'])} seed(s): unallocated GPU compute "
          f"{_fmt(doc['mean_unallocated_gpu_pct_at_100'])}%, "
          f"memory {_fmt(doc['mean_unallocated_gpu_mem_pct_at_100'])}%, "
          f"FGD demand-based {_fmt(doc['mean_unallocated_demand_pct_at_100'])}%")
    print(f"reconfigurations {_fmt(doc['reconfigurations'])} per run; planner p50 {doc['planner_p50_ms']:.2f} ms, "
          f"p99 {doc['planner_p99_ms']:.2f} ms over {doc['planner_calls']} calls")
    med = doc["median_over_seeds"]
    rows = [x for x in REPORT_BUCKETS if str(x) in med["unallocated_gpu_pct"]]
    if rows:
        print("median over seeds   arrived%: " + " ".join(f"{x:>6}" for x in rows))
        for key, label in (("unallocated_gpu_pct", "unallocated compute %"),
                           ("unallocated_gpu_mem_pct", "unallocated memory %"),
                           ("unallocated_demand_pct", "unallocated demand %")):
            vals = " ".join(f"{med[key].get(str(x), float('nan')):>6.2f}" for x in rows)
            print(f"{label:>28}: {vals}")
