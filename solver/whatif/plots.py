"""Matplotlib figures of what-if results (headless: the Agg backend). Each function returns the
figure and, given ``path``, saves it as PNG."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["plot_capacity", "plot_gpus_needed", "plot_latency", "plot_unallocated", "style"]

LABELS = {
    "unallocated_gpu_pct": "unallocated GPU compute %",
    "unallocated_gpu_mem_pct": "unallocated GPU memory %",
    "unallocated_demand_pct": "unallocated, FGD demand-based %",
}


#: One look per policy, the same in every figure: colour, line style, marker.
STYLES = {
    "dynamig": ("tab:blue", "-", "o"),
    "hami-legacy": ("tab:orange", "--", "s"),
    "hami-v210": ("tab:green", "-.", "^"),
    "bestfit": ("tab:red", ":", "D"),
    "dra-firstfit": ("tab:purple", (0, (5, 1, 1, 1)), "v"),
}
_EXTRA = (("tab:purple", "-", "v"), ("tab:brown", "--", "P"), ("tab:pink", "-.", "X"), ("tab:gray", ":", "*"))


#: A ``variant/policy`` label (e.g. ``any/dynamig``) keeps the policy's colour and marker; the
#: variant sets the line style, so the same policy under two variants reads as a pair.
VARIANT_LS = ("-", "--", ":", "-.")


def style(policy: str, i: int = 0, variants: Sequence[str] = ()) -> dict[str, Any]:
    variant, _, name = policy.rpartition("/")
    color, ls, marker = STYLES.get(name, _EXTRA[i % len(_EXTRA)])
    if variant:
        k = list(variants).index(variant) if variant in variants else 0
        ls = VARIANT_LS[k % len(VARIANT_LS)]
    return {"color": color, "ls": ls, "marker": marker}


def _plt() -> Any:
    try:
        import matplotlib
    except ImportError:
        from models.errors import DynamigError

        raise DynamigError("plots need matplotlib: pip install 'dynamig[plots]'") from None

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
                     title: str = "", path: str | Path | None = None, lo: int = 50,
                     versus: str | None = None) -> Any:
    """Median over seeds of each measure vs arrived load, one line per document (label → doc);
    a document is ``simulate``'s JSON (``median_over_seeds``). Policies get distinct colours, line
    styles and markers. With ``versus`` (a label in ``docs``), a second row shows each other line
    minus that one, in percentage points: curves that lie on top of each other become readable."""
    plt = _plt()
    rows = 2 if versus in docs and len(docs) > 1 else 1
    fig, axes = plt.subplots(rows, len(keys), figsize=(5.4 * len(keys), 3.3 * rows + 0.6), squeeze=False,
                             sharex=True, gridspec_kw={"height_ratios": [3, 2][:rows]})

    def series(doc: Mapping[str, Any], key: str) -> dict[int, float]:
        med = doc.get("median_over_seeds", {}).get(key) or {}
        return {int(x): float(v) for x, v in med.items() if int(x) >= lo and v is not None}

    handles: list[Any] = []
    variants = list(dict.fromkeys(label.rpartition("/")[0] for label in docs if "/" in label))
    for col, key in enumerate(keys):
        ax = axes[0][col]
        base = series(docs[versus], key) if rows == 2 and versus is not None else {}
        for i, (label, doc) in enumerate(docs.items()):
            pts = series(doc, key)
            xs = sorted(pts)
            if not xs:
                continue
            st = style(label, i, variants)
            every = max(1, len(xs) // 8)
            (h,) = ax.plot(xs, [pts[x] for x in xs], label=label, lw=1.6, ms=5, mfc="none", mew=1.3,
                           markevery=(i % every, every), **st)
            if col == 0:
                handles.append(h)
            if rows == 2 and label != versus:
                common = [x for x in xs if x in base]
                axes[1][col].plot(common, [pts[x] - base[x] for x in common], lw=1.4, ms=4,
                                  markevery=(i % every, every), **st)
        ax.set_ylabel(LABELS.get(key, key))
        ax.grid(alpha=0.3)
        if rows == 2:
            axes[1][col].axhline(0, color=style(versus or "")["color"], lw=1.2)
            axes[1][col].set_ylabel(f"minus {versus} (pp)")
            axes[1][col].grid(alpha=0.3)
        axes[-1][col].set_xlabel("arrived GPU load (% of capacity)")
    ncol = min(len(handles), 4) if len(handles) > 5 else max(1, len(handles))
    legend_rows = -(-len(handles) // ncol) if handles else 1
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.035 + 0.035 * legend_rows / rows, 1, 1))
    out = _save(fig, path)
    plt.close(fig)
    return out


def plot_latency(rows: Sequence[Mapping[str, Any]], title: str = "", path: str | Path | None = None) -> Any:
    """Planner latency (p50 and p99) vs GPUs in the cluster, one panel each; ``rows``: ``policy``,
    ``gpus``, ``p50_ms``, ``p99_ms`` (``solver.bench`` summaries)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.8), sharey=True)
    policies = sorted({str(r["policy"]) for r in rows})
    for ax, q in zip(axes, ("p50_ms", "p99_ms"), strict=True):
        for i, policy in enumerate(policies):
            rs = sorted((r for r in rows if r["policy"] == policy), key=lambda r: r["gpus"])
            ax.plot([r["gpus"] for r in rs], [r[q] for r in rs], label=policy, lw=1.6, ms=6, **style(policy, i))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("GPUs in the cluster")
        ax.set_title(q.replace("_ms", ""), fontsize=10)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("planner latency per pod (ms)")
    axes[1].legend(fontsize=8, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=10)
    return _finish(plt, fig, path)


def plot_capacity(results: Sequence[Any], target_pct: float, title: str = "", path: str | Path | None = None) -> Any:
    """Unplaced pods (%) vs GPUs (node count × GPUs per node), one panel per node kind, one line per
    policy; each policy's fewest nodes meeting the target is a large open marker (nested when several
    meet it at the same count), labelled with the node count in the legend. ``results``:
    :class:`solver.whatif.capacity.CapacityResult`."""
    plt = _plt()
    kinds: list[Any] = []
    for r in results:
        if r.kind not in kinds:
            kinds.append(r.kind)
    cols = min(2, len(kinds))
    nrows = -(-len(kinds) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.6 * cols, 3.4 * nrows + 0.4), squeeze=False, sharey=True)
    for k, kind in enumerate(kinds):
        ax = axes[k // cols][k % cols]
        for i, r in enumerate(x for x in results if x.kind == kind):
            xs, ys = r.curve()
            g = kind.gpus
            st = style(r.policy, i)
            found = f"{r.nodes} nodes ({r.nodes * g} GPUs)" if r.nodes is not None else "target not met"
            ax.plot([x * g for x in xs], ys, lw=1.4, ms=4, label=f"{r.policy}: {found}", **st)
            if r.nodes is not None:
                y = next((p.unplaced_pct for p in r.points if p.nodes == r.nodes), target_pct)
                # shrinking sizes: policies that meet the target at the same count stay visible, nested
                ax.plot([r.nodes * g], [y], marker=st["marker"], ms=max(6.0, 14 - 3 * i), mfc="none", mew=2,
                        color=st["color"], ls="none")
        ax.axhline(target_pct, color="grey", ls="--", lw=1)
        ax.text(0.01, target_pct, f"target {target_pct:g} %", transform=ax.get_yaxis_transform(), ha="left",
                va="bottom", fontsize=8, color="grey")
        ax.set_title(kind.label, fontsize=10)
        ax.set_xlabel("GPUs (nodes × GPUs per node)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper right", title="fewest nodes at the target (large open marker)",
                  title_fontsize=7)
    for k in range(len(kinds), nrows * cols):
        axes[k // cols][k % cols].set_visible(False)
    for row in axes:
        row[0].set_ylabel("unplaced pods (%)")
    if title:
        fig.suptitle(title, fontsize=11)
    return _finish(plt, fig, path)


def plot_gpus_needed(results: Sequence[Any], demand_gpus: float, target_pct: float, title: str = "",
                     path: str | Path | None = None) -> Any:
    """GPUs each (node kind, policy) needs at the target, as horizontal bars (labels never collide),
    MIG and HAMi-core in two colours, the value and its ratio to the requested GPUs at each bar."""
    plt = _plt()
    found = [r for r in results if r.nodes]
    fig, ax = plt.subplots(figsize=(8.4, 0.42 * len(found) + 1.4))
    labels = [f"{r.kind.label} · {r.policy}" for r in found]
    gpus = [r.nodes * r.kind.gpus for r in found]
    colors = ["tab:blue" if r.kind.mode.value == "mig" else "tab:orange" for r in found]
    ys = list(range(len(found)))[::-1]
    ax.barh(ys, gpus, color=colors, height=0.65)
    for y, g in zip(ys, gpus, strict=True):
        ax.text(g, y, f" {g} ({g / demand_gpus:.2f}×)", va="center", fontsize=8)
    ax.set_yticks(ys, labels, fontsize=8)
    ax.axvline(demand_gpus, color="grey", ls="--", lw=1)
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color="tab:blue", label="MIG"), Patch(color="tab:orange", label="HAMi-core"),
                       Line2D([], [], color="grey", ls="--", label=f"GPUs requested ({demand_gpus:.0f})")],
              fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.6 / max(1, len(found))), ncol=3,
              frameon=False)
    ax.set_xlabel(f"GPUs for ≤ {target_pct:g} % unplaced pods")
    ax.set_xlim(0, max(gpus, default=1) * 1.18)
    if title:
        ax.set_title(title, fontsize=10)
    return _finish(plt, fig, path)
