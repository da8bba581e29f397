"""Evaluate the ``share-pricing`` research policy against FGD and BestFit on the openb traces and write the results.

    python -m solver.fgd.dynamig_report --data shared/data/openb --out docs

runs ``share-pricing``, ``fgd`` and ``fgd-bestfit`` × seeds 42–51 on every shipped pod list (FGD protocol,
``shared/data/openb/README.md`` §7), a few ablations of ``share-pricing``, and a breakdown of where the
free GPU capacity sits at 100 % arrived load; writes ``fgd_dynamig.json`` and ``fgd_dynamig.md``.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from solver.fgd.cluster import ClusterState, SimNode
from solver.fgd.dynamig_policy import SharePricingPolicy
from solver.fgd.policy import PolicyFactory, make_policy
from solver.fgd.reproduce import dumps_compact
from solver.fgd.runner import DEFAULT_TUNE_RATIO, simulate
from solver.fgd.workload import SimPod, shuffle_and_tune, typical_pods
from solver.openb import MILLI_PER_GPU, load_nodes, load_pods

__all__ = ["ABLATIONS", "POLICIES", "evaluate", "to_markdown", "waste_breakdown"]

POLICIES = ("share-pricing", "fgd", "fgd-bestfit")
LABELS = {"share-pricing": "share-pricing", "fgd": "FGD", "fgd-bestfit": "BestFit"}
NODES_CSV = "openb_node_list_gpu_node.csv"
DEFAULT_TRACE = "default"
TARGET_PCT = 4.0
REPORT_BUCKETS = (90, 95, 100, 105, 110, 120, 130)

ABLATIONS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "no stranding term (cpu_weight = mem_weight = 0)": ("default", "", {"cpu_weight": 0.0, "mem_weight": 0.0}),
    "no host-memory term (mem_weight = 0)": ("default", "", {"mem_weight": 0.0}),
    "share sizes learned from arrived pods (learn_shares)": ("default", "", {"learn_shares": True}),
    "no cost rounding (quantum = 1 milli)": ("default", "", {"quantum": 1.0}),
    "uniformly random ties": ("default", "random", {}),
    "cpu250 without the CPU-pressure term": ("cpu250", "", {"pressure_gain": 0.0}),
    "cpu300 without the CPU-pressure term": ("cpu300", "", {"pressure_gain": 0.0}),
}
"""name → (trace, tie-break ("" = first), ``SharePricingPolicy`` keyword arguments)."""


def _summary(doc: dict[str, Any]) -> dict[str, Any]:
    seeds = doc["seeds"]
    per = doc["per_seed"]
    return {
        "mean_unallocated_gpu_pct_at_100": doc["mean_unallocated_gpu_pct_at_100"],
        "sd_unallocated_gpu_pct_at_100": doc["sd_unallocated_gpu_pct_at_100"],
        "unallocated_gpu_pct_at_100": [per[str(s)]["unallocated_gpu_pct"].get("100") for s in seeds],
        "mean_run_s": round(statistics.fmean(per[str(s)]["elapsed_s"] for s in seeds), 2),
        "median_unallocated_gpu_pct": {
            str(x): doc["median_over_seeds"]["unallocated_gpu_pct"].get(str(x)) for x in REPORT_BUCKETS
        },
    }


def waste_breakdown(data_dir: Path, trace: str, policy: str, seed: int) -> dict[str, float]:
    """Where the free GPU capacity sits when arrived demand first reaches 100 % of capacity (the
    run of :func:`solver.fgd.runner.run_loaded`, same RNG order), in GPUs: leftovers on GPUs that
    hold an 810-milli share, other leftovers on partly used GPUs, whole free GPUs on nodes whose
    free CPU or host memory is below what an average arrived GPU pod asks per GPU, and other whole
    free GPUs."""
    nodes = [SimNode.from_openb(n) for n in load_nodes(data_dir / NODES_CSV)]
    pods = [SimPod.from_openb(p) for p in load_pods(data_dir / f"openb_pod_list_{trace}.csv")]
    rng = np.random.default_rng(seed)
    typical = typical_pods(pods)
    ordered = sorted(nodes, key=lambda n: n.name)
    capacity = sum(n.gpus for n in ordered) * MILLI_PER_GPU
    workload = shuffle_and_tune(pods, capacity, DEFAULT_TUNE_RATIO, rng)
    state = ClusterState([ordered[i] for i in rng.permutation(len(ordered))])
    pol = make_policy(policy)
    pol.prepare(state, typical, rng)
    holds_810 = np.zeros((state.size, state.max_gpus), dtype=np.bool_)
    gpu_cpu = gpu_mem = gpu_milli = 0
    arrived = 0
    for pod in workload:
        arrived += pod.demand
        if arrived > capacity:
            break
        if pod.num_gpu:
            gpu_cpu, gpu_mem, gpu_milli = gpu_cpu + pod.cpu, gpu_mem + pod.mem, gpu_milli + pod.demand
        placement = pol.select(state, pod)
        if placement is not None:
            state.allocate(placement[0], placement[1], pod)
            if pod.milli == 810:
                holds_810[placement[0], list(placement[1])] = True
        pol.observe(state, pod, placement)
    free = np.where(state.gpu_exists, state.gpu_free, 0)
    partial = (free > 0) & (free < MILLI_PER_GPU)
    whole = free == MILLI_PER_GPU
    per_gpu = MILLI_PER_GPU / max(1, gpu_milli)
    starved = (state.cpu_free < gpu_cpu * per_gpu) | (state.mem_free < gpu_mem * per_gpu)
    out = {
        "beside_810": float(free[partial & holds_810].sum()),
        "other_partial": float(free[partial & ~holds_810].sum()),
        "whole_cpu_or_memory_starved": float(free[whole & starved[:, None]].sum()),
        "whole_other": float(free[whole & ~starved[:, None]].sum()),
    }
    return {k: round(v / MILLI_PER_GPU, 1) for k, v in out.items()} | {
        "total_pct": round(100.0 * float(free.sum()) / capacity, 2)
    }


def evaluate(
    data_dir: Path,
    *,
    seeds: Sequence[int] = tuple(range(42, 52)),
    variant_seeds: Sequence[int] = tuple(range(42, 52)),
    traces: Sequence[str] | None = None,
    processes: int | None = None,
    ablations: bool = True,
    log: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    nodes = data_dir / NODES_CSV
    if traces is None:
        variants = sorted(
            p.stem.removeprefix("openb_pod_list_")
            for p in data_dir.glob("openb_pod_list_*.csv")
            if p.stem != f"openb_pod_list_{DEFAULT_TRACE}"
        )
        traces = [DEFAULT_TRACE, *variants]
    out: dict[str, Any] = {
        "protocol": "fgd",
        "description": "share-pricing vs FGD and BestFit, unallocated GPU % at 100 % arrived load (FGD protocol, "
        "shared/data/openb/README.md §7); share-pricing defaults tuned on seeds 0-4 only",
        "generated_by": "python -m solver.fgd.dynamig_report",
        "nodes": NODES_CSV,
        "tune_ratio": DEFAULT_TUNE_RATIO,
        "tie_break": "first",
        "target_default_pct": TARGET_PCT,
        "traces": {},
    }
    for trace in traces:
        trace_seeds = list(seeds if trace == DEFAULT_TRACE else variant_seeds)
        entry: dict[str, Any] = {"seeds": trace_seeds, "policies": {}}
        for policy in POLICIES:
            start = time.perf_counter()
            doc = simulate(data_dir / f"openb_pod_list_{trace}.csv", nodes, policy, trace_seeds, processes)
            entry["policies"][policy] = _summary(doc)
            s = entry["policies"][policy]
            log(
                f"{trace:>12} {policy:>8}: {s['mean_unallocated_gpu_pct_at_100']:.2f} ± "
                f"{s['sd_unallocated_gpu_pct_at_100'] or 0:.2f}  ({time.perf_counter() - start:.0f}s)"
            )
        out["traces"][trace] = entry
    if ablations:
        out["ablations"] = {}
        for name, (trace, ties, kwargs) in ABLATIONS.items():
            if trace not in out["traces"]:
                continue
            factory: PolicyFactory = functools.partial(SharePricingPolicy, **kwargs)
            doc = simulate(
                data_dir / f"openb_pod_list_{trace}.csv",
                nodes,
                factory,
                list(seeds),
                processes,
                tie_break=ties or "first",
            )
            out["ablations"][name] = {"trace": trace, "seeds": list(seeds)} | _summary(doc)
            log(f"ablation {name}: {doc['mean_unallocated_gpu_pct_at_100']:.2f}")
        out["waste_at_100_seed_42"] = {
            p: waste_breakdown(data_dir, DEFAULT_TRACE, p, 42) for p in ("share-pricing", "fgd", "fgd-bestfit")
        }
    return out


def _ms(s: dict[str, Any]) -> str:
    mean, sd = s["mean_unallocated_gpu_pct_at_100"], s["sd_unallocated_gpu_pct_at_100"]
    return "–" if mean is None else f"{mean:.2f} ± {sd or 0:.2f}"


def to_markdown(doc: dict[str, Any]) -> str:
    traces = doc["traces"]
    lines = [
        "# The `share-pricing` research policy on the FGD protocol (formerly `dynamig`)",
        "",
        "Generated by `python -m solver.fgd.dynamig_report` (`solver/fgd/dynamig_report.py`); raw numbers in",
        "`fgd_dynamig.json`. Protocol: `shared/data/openb/README.md` §7, exactly as in",
        "`fgd_reproduction.md` (1,213 nodes, 6,212 GPUs; pods shuffled and tuned to 1.3× capacity per",
        "seed; one pod at a time, online, no departures; ties to the first node in the seeded order).",
        "Metric: unallocated GPU % at 100 % arrived GPU load = the arrived demand that could not be",
        "placed = the GPU capacity left free at that point. The policy's defaults were tuned on seeds",
        "0–4 only; every number below is seeds 42–51 (10 seeds on every trace).",
        "",
        "## What the policy does (`solver/fgd/dynamig_policy.py`)",
        "",
        "1. **Shares are paired by cutting-stock prices.** From the typical share sizes it solves the LP",
        '   "cover these shares with the fewest GPUs" (column generation, GLOP) and takes its dual prices',
        "   (default trace: 810 → 1 GPU, 650 → 2/3, 470 → 1/2, 320 → 1/3 …). `K(g)` = most price that fits",
        "   in `g` free milli. A share `s` on a GPU with `f` free loses `K(f) − K(s) − K(f − s)` ≥ 0 of future",
        "   packing value; it goes where the loss is least, then to the tightest fit.",
        "2. **CPU and host memory are kept in step with free GPUs.** Penalty = change of",
        "   `max(0, G − C/r_cpu, G − M/r_mem)` per node (`r` = CPU, memory per GPU milli of the arrived GPU",
        "   pods): CPU-only pods go where CPU is spare, GPU pods light on CPU to CPU-poor nodes.",
        "3. **Under CPU pressure** (arrived pods ask for more of the CPU than of the GPU), FGD's CPU-threshold",
        "   fragmentation is added with weight = the excess pressure (off on the default trace).",
        "4. **Ties:** costs rounded to 10 milli; equal costs go to the first node in the seeded order.",
        "5. Whole and multi-GPU pods take the node's lowest-index free GPUs; node choice by 2–4.",
        "",
        "## Unallocated GPU % at 100 % arrived load, mean ± sd over seeds",
        "",
        "| Trace | seeds | share-pricing | FGD | BestFit | share-pricing − FGD (pp) "
        "| one run: share-pricing / FGD (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    better = 0
    for trace, entry in traces.items():
        p = entry["policies"]
        d, f = p["share-pricing"]["mean_unallocated_gpu_pct_at_100"], p["fgd"]["mean_unallocated_gpu_pct_at_100"]
        delta = "–" if d is None or f is None else f"{d - f:+.2f}"
        better += int(d is not None and f is not None and d < f)
        name = f"**{trace}**" if trace == DEFAULT_TRACE else trace
        lines.append(
            f"| {name} | {len(entry['seeds'])} | {_ms(p['share-pricing'])} | {_ms(p['fgd'])} | {_ms(p['fgd-bestfit'])} "
            f"| {delta} | {p['share-pricing']['mean_run_s']:.1f} / {p['fgd']['mean_run_s']:.1f} |"
        )
    default = traces.get(DEFAULT_TRACE)
    lines += [""]
    if default is not None:
        d = default["policies"]["share-pricing"]
        mean = d["mean_unallocated_gpu_pct_at_100"]
        target = doc["target_default_pct"]
        lines += [
            f"share-pricing is below FGD on {better} of {len(traces)} traces. Default trace: {mean:.2f} % "
            f"(target ≤ {target:.1f} %: {'met' if mean <= target else 'NOT met'}); "
            f"FGD published 4.77 %, ours 4.81 %.",
            "",
            "Per seed (default, 42–51): "
            + ", ".join(f"{v:.2f}" for v in d["unallocated_gpu_pct_at_100"] if v is not None)
            + ".",
            "",
            "Default trace, unallocated GPU % by arrived load, median over seeds:",
            "",
            "| Arrived % | " + " | ".join(str(x) for x in REPORT_BUCKETS) + " |",
            "|---|" + "---:|" * len(REPORT_BUCKETS),
        ]
        for pol in POLICIES:
            med = default["policies"][pol]["median_unallocated_gpu_pct"]
            cells = " | ".join("–" if med.get(str(x)) is None else f"{med[str(x)]:.2f}" for x in REPORT_BUCKETS)
            lines.append(f"| {LABELS[pol]} | {cells} |")
        lines.append("")
    waste = doc.get("waste_at_100_seed_42")
    if waste:
        lines += [
            "## Where the free capacity sits at 100 % arrived load (default trace, seed 42, GPUs)",
            "",
            "| Policy | beside an 810 share | other partly used GPUs | whole GPUs, node out of CPU/memory "
            "| other whole GPUs | total % |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for pol, w in waste.items():
            lines.append(
                f"| {LABELS.get(pol, pol)} | {w['beside_810']:.1f} | {w['other_partial']:.1f} | "
                f"{w['whole_cpu_or_memory_starved']:.1f} | {w['whole_other']:.1f} | {w['total_pct']:.2f} |"
            )
        lines += [
            "",
            '("out of CPU/memory": free CPU or host memory below an average arrived GPU pod\'s request per GPU.)',
            "",
        ]
    abl = doc.get("ablations")
    if abl:
        lines += [
            "## Ablations (seeds 42–51)",
            "",
            "| Variant | trace | mean ± sd | full share-pricing on that trace |",
            "|---|---|---:|---:|",
        ]
        for name, a in abl.items():
            full = traces[a["trace"]]["policies"]["share-pricing"]
            lines.append(f"| {name} | {a['trace']} | {_ms(a)} | {_ms(full)} |")
        lines.append("")
    lines += NOTES
    return "\n".join(lines) + "\n"


NOTES = [
    "## Why it works, and what limits it",
    "",
    "- **Where FGD loses capacity** (table above). Most of what it leaves free at 100 % arrived load",
    "  is the 190-milli leftovers beside 810-milli shares (13 % of all pods; only the rare ≤ 190 shares",
    "  fit there, and FGD already puts them there); then other share leftovers (470 + 320 leaves 210,",
    "  650 + 230 leaves 120 …) and whole GPUs on nodes whose CPU or host memory ran out. FGD values a",
    "  gap by the chance that the *next* typical pod fits, so it cannot tell the 530",
    "  left by a 470 (wanted by the next 470) from the 350 left by a 650 (wanted by a 320), and host",
    "  memory is not in its model at all.",
    "- **What changes.** The stranding term removes almost all CPU/memory-stranded whole GPUs and is",
    "  the largest single gain (ablations); host memory adds a little on top of CPU. The prices cut the",
    "  other share leftovers: in a GPU-only model of the same arrivals (no nodes, no CPU; exploration on",
    "  seeds 0–4) best-fit leaves 4.07 %, FGD's gap value 4.05 % and the price rule 3.69 %.",
    "- **The floor.** The 810 leftovers alone are ≈ 3 % of capacity on the default trace and no placement",
    "  rule removes them (an 810 share must be placed when a GPU can take it, and only ≈ 1.3 % of pods fit",
    "  beside it). The fractional cutting-stock bound for packing all arrived shares is ≈ 3.8 % (seed 0);",
    "  a result below it is possible only because not every arrived share is placed (at saturation some",
    "  810 shares find no GPU with 810 free and fail).",
    "- **Online.** The policy sees the pod in hand, the cluster, the typical-pod distribution (as FGD does)",
    "  and counts of the arrived pods (`observe`): CPU and memory per GPU milli and the CPU pressure are",
    "  learned from them. Learning the share-size mix as well (`learn_shares`) was measured and is no",
    "  better (ablations; 3.81 % vs 3.73 % on the tuning seeds 0–4): the LP prices sit on a knife edge",
    "  between regimes and move as counts arrive, so the default keeps the typical mix for the prices.",
    "- **Ties still matter.** Many costs are exactly equal (a whole GPU on any node with spare CPU and",
    "  memory costs 0), and the seeded first-node rule then packs nodes in a fixed order, keeping late",
    "  nodes whole; the 10-milli rounding itself changes nothing measurable (ablations). With uniformly",
    "  random ties share-pricing leaves about 8 % (FGD with random ties: 10.25 %, `fgd_reproduction.md`).",
    "- **Variance.** gpuspec33 (a third of the GPU pods pinned to a model) has the widest spread across",
    "  seeds; its mean is still 4 pp below FGD's.",
    "- **Honest caveats.** (1) The LP is degenerate: the prices are GLOP's optimal vertex, not a unique",
    "  answer. (2) The CPU-pressure weight (= excess pressure, capped at 1) was chosen after looking at",
    "  the cpu235/cpu250/cpu300 traces (seeds 0–4): a stronger weight helps cpu300 (≈ 11 %) but hurts",
    "  cpu235, whose pressure is ≈ 1.0; this one knob is fitted to the trace family, not derived.",
    "  (3) The memory prior (typical CPU × the cluster's memory per CPU) matters early in a run: an",
    "  early version that used the cluster's memory per GPU as the ratio left 4.8 % (seeds 0–4).",
    "  (4) One run is 1–3 s (2 worker processes on a shared 2-core machine, CSV loading included).",
    "",
]


def _seed_list(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m solver.fgd.dynamig_report", description=__doc__)
    ap.add_argument("--data", type=Path, default=Path("shared/data/openb"), help="directory of the openb CSVs")
    ap.add_argument("--out", type=Path, default=Path("docs"), help="where to write fgd_dynamig.{json,md}")
    ap.add_argument("--seeds", type=_seed_list, default=_seed_list("42-51"), help="default trace, e.g. 42-51")
    ap.add_argument("--variant-seeds", type=_seed_list, default=_seed_list("42-51"))
    ap.add_argument("--traces", default=None, help="comma list of trace names (default: all shipped pod lists)")
    ap.add_argument("--processes", type=int, default=None)
    ap.add_argument("--no-ablations", action="store_true")
    ap.add_argument("--render", type=Path, default=None, metavar="JSON", help="only rewrite the .md from this JSON")
    args = ap.parse_args(argv)
    if args.render is not None:
        doc = json.loads(args.render.read_text())
        (args.out / "fgd_dynamig.md").write_text(to_markdown(doc))
        return 0
    doc = evaluate(
        args.data,
        seeds=args.seeds,
        variant_seeds=args.variant_seeds,
        traces=args.traces.split(",") if args.traces else None,
        processes=args.processes,
        ablations=not args.no_ablations,
        log=lambda s: print(s, file=sys.stderr, flush=True),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fgd_dynamig.json").write_text(dumps_compact(doc) + "\n")
    (args.out / "fgd_dynamig.md").write_text(to_markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
