"""The one rule for when a MIG GPU may change its layout (DESIGN §3: "only idle GPUs change layout").

A held instance is never moved, resized or destroyed. Two ways to change a layout exist:

* whole re-cut (``mig-parted apply``, HAMi ≤ v2.9; the default): the GPU is re-partitioned as a
  whole, so only while none of its instances is held;
* incremental (per-instance NVML create/destroy, HAMi v2.10 / DRA): free instances go and new ones
  come while every held instance stays exactly where it is (it must be in the new layout).

Planner, validator, simulator and device plugin all ask this module; nobody else decides it.
"""

from __future__ import annotations

from .layouts import Layout
from .types import Gpu, NodeMode


def held_slots(gpu: Gpu) -> list[str]:
    """The held instances of ``gpu`` as ``slot (holder)`` strings, sorted."""
    return sorted(f"{i.slot} ({i.holder})" for i in gpu.instances if not i.free)


def layout_change_problem(gpu: Gpu, new_layout: Layout | None = None, incremental: bool = False) -> str | None:
    """Why ``gpu`` may not change to ``new_layout`` (None: it may).

    ``new_layout`` None asks whether the GPU may change layout at all (for a whole re-cut: is it
    idle). The layout's own validity for the model is :func:`models.layouts.layout_problems`.
    """
    if gpu.mode is not NodeMode.MIG:
        return f"layout change on a {gpu.mode} GPU"
    if incremental:
        if new_layout is None:
            return None
        kept = set(new_layout)
        lost = sorted(f"{i.slot} ({i.holder})" for i in gpu.instances if not i.free and i.slot not in kept)
        if lost:
            return f"incremental change removes held instance(s) {', '.join(lost)}"
        return None
    if any(not i.free for i in gpu.instances):
        holders = sorted(i.holder or "" for i in gpu.instances if not i.free)
        return f"re-partitioned while held by {', '.join(holders)}"
    return None


def may_change_layout(gpu: Gpu, new_layout: Layout | None = None, incremental: bool = False) -> bool:
    """True when ``gpu`` may take ``new_layout`` (see :func:`layout_change_problem`)."""
    return layout_change_problem(gpu, new_layout, incremental) is None


__all__ = ["held_slots", "layout_change_problem", "may_change_layout"]
