"""Figures of churn results (headless, Agg): delay vs offered load per policy, utilisation over
time, reconfigurations per 1,000 pods. Each function saves a PNG when given ``path`` and returns
the figure (closed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["plot_delay_vs_load", "plot_reconfigurations", "plot_utilisation"]

MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(plt: Any, fig: Any, path: str | Path | None) -> Any:
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return fig


def plot_delay_vs_load(docs: Mapping[str, Mapping[str, Any]], path: str | Path | None = None) -> Any:
    """One panel per cluster (``docs``: title → churn document): p95 wait (log scale) against ρ,
    one line per policy, the SLO as a dashed line and the fluid limit as a dotted one."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(docs), figsize=(6.0 * len(docs), 4.4), squeeze=False)
    for ax, (title, doc) in zip(axes[0], docs.items(), strict=True):
        for k, pol in enumerate(doc["policies"]):
            xs = [r["load"] for r in pol["loads"]]
            ys = [max(r["p95_wait_s"], 1.0) for r in pol["loads"]]
            ax.plot(xs, ys, marker=MARKERS[k % len(MARKERS)], label=pol["policy"])
        ax.axhline(doc["slo_s"], color="grey", linestyle="--", linewidth=1, label=f"SLO {doc['slo_s']:g} s")
        if doc.get("fluid_limit_load"):
            ax.axvline(doc["fluid_limit_load"], color="black", linestyle=":", linewidth=1,
                       label=f"fluid limit ρ={doc['fluid_limit_load']:.2f}")
        ax.set_yscale("log")
        ax.set_xlabel("offered load ρ (fraction of GPU capacity, milli-GPU demand)")
        ax.set_ylabel("p95 queueing delay (s, log; 0 shown as 1)")
        ax.set_title(f"{title}: {len(doc['seeds'])} seed(s), mean of per-seed p95")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _finish(plt, fig, path)


def plot_utilisation(runs: Sequence[Mapping[str, Any]], path: str | Path | None = None,
                     title: str = "") -> Any:
    """Allocated compute and demand-based utilisation over simulated time, one line pair per run
    (each run document's ``timeline``: time s, allocated %, demand %, queue length)."""
    plt = _plt()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10.5, 6.4), sharex=True)
    for k, r in enumerate(runs):
        tl = r["timeline"]
        hours = [row[0] / 3600.0 for row in tl]
        color = f"C{k % 10}"
        top.plot(hours, [row[1] for row in tl], color=color, label=f"{r['policy']} allocated compute")
        top.plot(hours, [row[2] for row in tl], color=color, linestyle="--", label=f"{r['policy']} demand")
        bottom.plot(hours, [row[3] for row in tl], color=color, label=r["policy"])
    if runs:
        start = runs[0]["measured_from_s"] / 3600.0
        for ax in (top, bottom):
            ax.axvline(start, color="grey", linestyle=":", linewidth=1)
        top.annotate("warm-up ends", (start, 2), fontsize=8, color="grey")
    top.set_ylabel("% of GPU capacity")
    top.set_ylim(0, 105)
    top.set_title(title or "utilisation over time (solid: allocated compute, dashed: demand held)")
    top.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    top.grid(True, alpha=0.3)
    bottom.set_ylabel("pods waiting")
    bottom.set_xlabel("simulated time (h)")
    bottom.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    bottom.grid(True, alpha=0.3)
    return _finish(plt, fig, path)


def plot_reconfigurations(doc: Mapping[str, Any], path: str | Path | None = None, title: str = "") -> Any:
    """Layout changes per 1,000 placed pods, idle GPUs (solid) and busy GPUs (hatched, only the
    policies that keep held instances), grouped by policy, one bar per load."""
    plt = _plt()
    pols = doc["policies"]
    loads = doc["loads"]
    fig, ax = plt.subplots(figsize=(9.0, 4.4))
    width = 0.8 / max(1, len(loads))
    for j, load in enumerate(loads):
        idle, busy = [], []
        for pol in pols:
            row = next((r for r in pol["loads"] if r["load"] == load), None)
            idle.append(row["reconf_per_1000_idle"] if row else 0.0)
            busy.append(row["reconf_per_1000_busy"] if row else 0.0)
        xs = [i + (j - (len(loads) - 1) / 2) * width for i in range(len(pols))]
        color = f"C{j % 10}"
        ax.bar(xs, idle, width, color=color, label=f"ρ={load:g} idle GPU")
        ax.bar(xs, busy, width, bottom=idle, color=color, alpha=0.45, hatch="//", label=f"ρ={load:g} busy GPU")
    ax.set_xticks(range(len(pols)))
    ax.set_xticklabels([p["policy"] for p in pols])
    ax.set_ylabel("layout changes per 1,000 placed pods")
    ax.set_title(title or "reconfigurations (hatched: busy GPU, held instances kept)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(True, axis="y", alpha=0.3)
    return _finish(plt, fig, path)
