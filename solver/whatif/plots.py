"""Matplotlib figures of what-if results (headless: the Agg backend). Each function returns the
figure and, given ``path``, saves it as PNG."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["plot_capacity", "plot_latency", "plot_unallocated"]

LABELS = {
    "unallocated_gpu_pct": "unallocated GPU compute %",
    "unallocated_gpu_mem_pct": "unallocated GPU memory %",
    "unallocated_demand_pct": "unallocated, FGD demand-based %",
}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path | None) -> Any:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=90, bbox_inches="tight")
    return fig



def _finish(plt: Any, fig: Any, path: str | Path | None) -> Any:
    """Lay out, save (when ``path``) and close a figure; returns what :func:`_save` returns."""
    fig.tight_layout()
    out = _save(fig, path)
    plt.close(fig)
    return out

def plot_unallocated(docs: Mapping[str, Mapping[str, Any]], keys: Sequence[str] = ("unallocated_gpu_pct",),
                     title: str = "", path: str | Path | None = None, lo: int = 50) -> Any:
    """Median over seeds of each measure vs arrived load, one line per document (label → doc);
    a document is ``simulate``'s JSON (``median_over_seeds``)."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(keys), figsize=(5.2 * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for label, doc in docs.items():
            med = doc.get("median_over_seeds", {}).get(key) or {}
            xs = sorted(int(x) for x in med if int(x) >= lo)
            if xs:
                ax.plot(xs, [med[str(x)] for x in xs], label=label, lw=1.5)
        ax.set_xlabel("arrived GPU load (% of capacity)")
        ax.set_ylabel(LABELS.get(key, key))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return _finish(plt, fig, path)


def plot_latency(rows: Sequence[Mapping[str, Any]], title: str = "", path: str | Path | None = None) -> Any:
    """Planner latency (p50 and p99) vs GPUs in the cluster; ``rows``: ``policy``, ``gpus``,
    ``p50_ms``, ``p99_ms`` (``solver.bench`` summaries)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for policy in sorted({str(r["policy"]) for r in rows}):
        rs = sorted((r for r in rows if r["policy"] == policy), key=lambda r: r["gpus"])
        line = ax.plot([r["gpus"] for r in rs], [r["p99_ms"] for r in rs], marker="o", label=f"{policy} p99")
        ax.plot([r["gpus"] for r in rs], [r["p50_ms"] for r in rs], ls="--", marker=".",
                color=line[0].get_color(), label=f"{policy} p50")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("GPUs in the cluster")
    ax.set_ylabel("planner latency per pod (ms)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    if title:
        ax.set_title(title, fontsize=10)
    return _finish(plt, fig, path)


def plot_capacity(results: Sequence[Any], target_pct: float, title: str = "", path: str | Path | None = None) -> Any:
    """Unplaced pods (%) vs GPUs (node count × GPUs per node, so kinds compare) per (node kind,
    policy), the minimum node count in the legend and marked; ``results``:
    :class:`solver.whatif.capacity.CapacityResult`."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.2, 4.2))
    for r in results:
        xs, ys = r.curve()
        g = r.kind.gpus
        line = ax.plot([x * g for x in xs], ys, marker="o", ms=3, label=f"{r.kind.label} / {r.policy}: "
                       f"{r.nodes if r.nodes is not None else '>limit'} nodes")
        if r.nodes is not None:
            ax.axvline(r.nodes * g, color=line[0].get_color(), ls=":", lw=1)
    ax.axhline(target_pct, color="grey", ls="--", lw=1)
    ax.set_xlabel("GPUs (nodes × GPUs per node)")
    ax.set_ylabel("unplaced pods (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=10)
    return _finish(plt, fig, path)
