"""``dynamig simulate``: what-if replay of a workload against a cluster under a placement policy.

``--protocol fgd`` (the only protocol so far) reproduces the FGD paper's evaluation on the
Alibaba "openb" trace (``shared/data/openb/README.md`` §7): ``--pods`` is a pod list CSV,
``--nodes`` a node list CSV; each seed is one run (shuffle, tune to 1.3× the GPU capacity, place
pods one at a time), seeds run in parallel processes. Output: unallocated GPU % and
fragmentation per arrived-load bucket, per seed, and the mean over seeds at 100 % arrived load.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any

from solver.fgd import BASELINE_POLICIES, RunResult, policy_names, simulate
from solver.fgd.policy import TIE_BREAKS
from solver.openb import OpenbFormatError

PROTOCOLS = ("fgd",)
DEFAULT_SEEDS = "42-51"
PLANNER_POLICY = "dynamig"
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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "simulate",
        help="what-if replay of a workload trace under a policy (FGD protocol)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--nodes", required=True, metavar="FILE", help="node list CSV (sn,cpu_milli,memory_mib,gpu,model)")
    p.add_argument("--pods", required=True, metavar="FILE", help="pod list CSV (openb_pod_list_*.csv)")
    p.add_argument("--protocol", choices=PROTOCOLS, default="fgd", help="evaluation protocol (default: fgd)")
    p.add_argument(
        "--policy",
        metavar="P",
        help=f"placement policy: {PLANNER_POLICY} (the planner; default when available), "
        f"{', '.join(BASELINE_POLICIES)} (default otherwise: fgd)",
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
        type=_positive_int,
        default=None,
        metavar="N",
        help=f"worker processes (default: number of CPUs, here {os.cpu_count() or 1})",
    )
    p.add_argument(
        "--tune", type=float, default=1.3, metavar="RATIO", help="tune GPU demand to RATIO × capacity (default 1.3)"
    )
    p.add_argument(
        "--tie-break",
        choices=TIE_BREAKS,
        default="first",
        help="equal node scores: first node in the seeded node order (the FGD artifact, default) or random",
    )
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    return p


def _fail(message: str, code: int = 1) -> int:
    print(f"dynamig simulate: {message}", file=sys.stderr)
    return code


def _policy(args: argparse.Namespace) -> str | None:
    known = policy_names()
    if args.policy is None:
        if PLANNER_POLICY in known:
            return PLANNER_POLICY
        print(
            f"dynamig simulate: note: policy {PLANNER_POLICY!r} is not available yet; using 'fgd'",
            file=sys.stderr,
        )
        return "fgd"
    if args.policy not in known:
        return None
    return str(args.policy)


def _print_human(doc: dict[str, Any]) -> None:
    print(
        f"protocol {doc['protocol']}  policy {doc['policy']}  pods {doc['trace']}  nodes {doc['nodes']}  "
        f"tune {doc['tune_ratio']}  tie-break {doc['tie_break']}"
    )
    print(f"{'seed':>6} {'pods':>7} {'placed':>7} {'failed':>7} {'unalloc@100%':>13} {'frag@100%':>10} {'time':>7}")
    for seed in doc["seeds"]:
        r = doc["per_seed"][str(seed)]
        un = r["unallocated_gpu_pct"].get("100")
        fr = r["fragmentation_pct"].get("100")
        print(
            f"{seed:>6} {r['pods']:>7} {r['placed']:>7} {r['failed']:>7} "
            f"{'-' if un is None else f'{un:.2f}':>13} {'-' if fr is None else f'{fr:.2f}':>10} {r['elapsed_s']:>6.1f}s"
        )
    mean, sd = doc["mean_unallocated_gpu_pct_at_100"], doc["sd_unallocated_gpu_pct_at_100"]
    if mean is not None:
        sd_text = "" if sd is None else f" ± {sd:.2f} (sd)"
        print(f"unallocated GPU at 100% arrived load: {mean:.2f}%{sd_text} over {len(doc['seeds'])} seed(s)")
    med = doc["median_over_seeds"]
    rows = [x for x in REPORT_BUCKETS if str(x) in med["unallocated_gpu_pct"]]
    if rows:
        print("median over seeds   arrived%: " + " ".join(f"{x:>6}" for x in rows))
        for key, label in (
            ("unallocated_gpu_pct", "unallocated GPU %"),
            ("fragmentation_pct", "frag/total %"),
            ("frag_rate_pct", "frag rate %"),
        ):
            vals = " ".join(f"{med[key].get(str(x), float('nan')):>6.2f}" for x in rows)
            print(f"{label:>28}: {vals}")


def run(args: argparse.Namespace) -> int:
    for path in (args.nodes, args.pods):
        if not os.path.isfile(path):
            return _fail(f"{path}: no such file")
    policy = _policy(args)
    if policy is None:
        return _fail(f"unknown policy {args.policy!r} (known: {', '.join(policy_names())})", 2)
    if args.tune <= 0:
        return _fail(f"--tune must be > 0, got {args.tune}", 2)

    from tqdm import tqdm

    bar = tqdm(total=len(args.seeds), desc=f"simulate {policy}", unit="run", file=sys.stderr, disable=None)

    def progress(res: RunResult) -> None:
        bar.update(1)
        un = res.unallocated_gpu_pct_at_100
        bar.set_postfix_str(f"seed {res.seed}: {'-' if un is None else f'{un:.2f}'}% unallocated")

    try:
        doc = simulate(
            args.pods,
            args.nodes,
            policy,
            args.seeds,
            args.processes,
            tune_ratio=args.tune,
            tie_break=args.tie_break,
            progress=progress,
        )
    except OpenbFormatError as exc:
        return _fail(str(exc))
    except ValueError as exc:  # e.g. a trace without GPU demand
        return _fail(f"{args.pods}: {exc}")
    finally:
        bar.close()
    if args.json:
        print(json.dumps(doc))
    else:
        _print_human(doc)
    return 0
