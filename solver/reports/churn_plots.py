"""Figures of churn results (headless, Agg): delay vs offered load per policy, utilisation over
time, reconfigurations per 1,000 pods. Each function saves a PNG when given ``path`` and returns
the figure (closed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["plot_delay_vs_load", "plot_reconfigurations", "plot_utilisation"]

MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def policy_style(policy: str, k: int) -> dict[str, Any]:
    """The policy's look in the what-if figures too (solver.whatif.plots.style)."""
    from solver.whatif.plots import style

    return style(policy, k)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(plt: Any, fig: Any, path: str | Path | None, layout: bool = True) -> Any:
    if layout:
        fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return fig


def plot_delay_vs_load(docs: Mapping[str, Mapping[str, Any]], path: str | Path | None = None) -> Any:
    """One panel per cluster (``docs``: title → churn document): p95 wait (log scale) against ρ,
    one line per policy (its colour, line style and marker in every figure), the SLO as a dashed
    line and the fluid limit as a dotted one; one legend for all panels, below them."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(docs), figsize=(5.6 * len(docs), 4.2), squeeze=False)
    handles: dict[str, Any] = {}
    for ax, (title, doc) in zip(axes[0], docs.items(), strict=True):
        for k, pol in enumerate(doc["policies"]):
            xs = [r["load"] for r in pol["loads"]]
            ys = [max(r["p95_wait_s"], 1.0) for r in pol["loads"]]
            (h,) = ax.plot(xs, ys, lw=1.6, ms=6, mfc="none", mew=1.5, label=pol["policy"],
                           **policy_style(pol["policy"], k))
            handles.setdefault(pol["policy"], h)
        ax.axhline(doc["slo_s"], color="grey", linestyle="--", linewidth=1)
        ax.annotate(f"SLO {doc['slo_s']:g} s", (0.99, doc["slo_s"]), xycoords=("axes fraction", "data"),
                    ha="right", va="bottom", fontsize=8, color="grey")  # right: the lines are far above
        if doc.get("fluid_limit_load"):
            ax.axvline(doc["fluid_limit_load"], color="black", linestyle=":", linewidth=1)
            ax.annotate(f"fluid limit ρ={doc['fluid_limit_load']:.2f}", (doc["fluid_limit_load"], 0.02),
                        xycoords=("data", "axes fraction"), rotation=90, ha="right", va="bottom", fontsize=8)
        ax.set_yscale("log")
        ax.set_xlabel("offered load ρ (fraction of GPU capacity)")
        ax.set_ylabel("p95 queueing delay (s, log; 0 shown as 1)")
        ax.set_title(f"{title}\n{len(doc['seeds'])} seed(s), mean of per-seed p95", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    fig.legend(handles=list(handles.values()), loc="lower center", ncol=len(handles), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return _finish(plt, fig, path, layout=False)


def plot_utilisation(runs: Sequence[Mapping[str, Any]], path: str | Path | None = None,
                     title: str = "") -> Any:
    """Allocated compute (solid) and demand-based utilisation (dashed, thinner) over simulated time,
    and the pods waiting, one colour per run's policy (each run document's ``timeline``: time s,
    allocated %, demand %, queue length); one legend entry per policy."""
    from matplotlib.lines import Line2D

    plt = _plt()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10.5, 6.4), sharex=True)
    handles = []
    for k, r in enumerate(runs):
        tl = r["timeline"]
        hours = [row[0] / 3600.0 for row in tl]
        color = policy_style(r["policy"], k)["color"]
        top.plot(hours, [row[1] for row in tl], color=color, lw=1.4)
        top.plot(hours, [row[2] for row in tl], color=color, lw=0.9, linestyle="--", alpha=0.8)
        bottom.plot(hours, [row[3] for row in tl], color=color, lw=1.4)
        handles.append(Line2D([], [], color=color, lw=2, label=r["policy"]))
    handles += [Line2D([], [], color="black", lw=1.4, label="allocated compute"),
                Line2D([], [], color="black", lw=0.9, ls="--", label="demand held")]
    if runs:
        start = runs[0]["measured_from_s"] / 3600.0
        for ax in (top, bottom):
            ax.axvline(start, color="grey", linestyle=":", linewidth=1)
        top.annotate("warm-up ends ", (start, 4), ha="right", fontsize=8, color="grey")
    top.set_ylabel("% of GPU capacity")
    top.set_ylim(0, 105)
    top.set_title(title or "utilisation over time (solid: allocated compute, dashed: demand held)", fontsize=10)
    top.grid(True, alpha=0.3)
    bottom.set_ylabel("pods waiting")
    bottom.set_xlabel("simulated time (h)")
    bottom.grid(True, alpha=0.3)
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return _finish(plt, fig, path, layout=False)


def plot_reconfigurations(doc: Mapping[str, Any], path: str | Path | None = None, title: str = "") -> Any:
    """Layout changes per 1,000 placed pods, idle GPUs (solid) and busy GPUs (hatched, only the
    policies that keep held instances), grouped by policy, one bar per load, each bar's total
    written on it (a policy with none shows 0s, not a gap)."""
    from matplotlib.patches import Patch

    plt = _plt()
    pols = doc["policies"]
    loads = doc["loads"]
    fig, ax = plt.subplots(figsize=(9.0, 4.6))
    width = 0.8 / max(1, len(loads))
    handles = []
    for j, load in enumerate(loads):
        idle, busy = [], []
        for pol in pols:
            row = next((r for r in pol["loads"] if r["load"] == load), None)
            idle.append(row["reconf_per_1000_idle"] if row else 0.0)
            busy.append(row["reconf_per_1000_busy"] if row else 0.0)
        xs = [i + (j - (len(loads) - 1) / 2) * width for i in range(len(pols))]
        color = f"C{j % 10}"
        ax.bar(xs, idle, width, color=color)
        ax.bar(xs, busy, width, bottom=idle, color=color, alpha=0.45, hatch="//")
        for x, a, b in zip(xs, idle, busy, strict=True):
            ax.text(x, a + b, f"{a + b:.0f}", ha="center", va="bottom", fontsize=6.5, rotation=90)
        handles.append(Patch(color=color, label=f"ρ={load:g}"))
    handles += [Patch(facecolor="white", edgecolor="black", label="idle GPU"),
                Patch(facecolor="white", edgecolor="black", hatch="//", label="busy GPU (held kept)")]
    ax.set_xticks(range(len(pols)))
    ax.set_xticklabels([p["policy"] for p in pols])
    ax.set_ylabel("layout changes per 1,000 placed pods")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.1)  # room for the numbers
    ax.set_title(title or "reconfigurations (hatched: busy GPU, held instances kept)", fontsize=10)
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="offered load",
              title_fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    return _finish(plt, fig, path)
