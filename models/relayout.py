"""When a MIG GPU may change layout: the one definition the validator and the device plugin use.

A change from ``old`` to ``new`` is one of:

- ``none``: the same layout;
- ``whole``: no instance of the GPU is held, so the GPU may be re-cut as a whole (any applier);
- ``partial``: some instances are held, every held one keeps its profile *and* placement (its
  :class:`~models.layouts.Slot`), and the new instances fit the memory slices the held ones leave
  free (the new layout is valid for the model). Only a node whose applier is ``nvml`` can do this:
  ``nvidia-mig-parted apply`` destroys every instance of a GPU before creating the new set;
- :class:`Illegal` otherwise (a held instance would move, shrink, grow or go; the new layout is
  invalid; a partial change on a ``mig-parted`` node; a plan that re-cuts a busy GPU as a whole).

Pure; no I/O. ``reference/mig.md`` §1-3 for the placement rules (in :mod:`models.layouts`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from .catalog import GpuModel
from .layouts import Layout, Slot, enumerate_layouts, layout_problems, make_layout
from .types import Applier, Gpu, Node, NodeMode

ChangeKind = Literal["none", "whole", "partial"]

#: Baseline policies that model another system's node agent, which creates and destroys single
#: instances through NVML on every node (HAMi v2.10's plugin, NVIDIA's DRA driver): in their plans
#: every node behaves as ``nvml``, whatever dynamig's own applier setting says.
POLICY_APPLIERS: dict[str, Applier] = {"hami-v210": Applier.NVML, "dra-firstfit": Applier.NVML}


@dataclass(frozen=True)
class Illegal:
    """A layout change that may not happen, and why (a sentence naming the instances)."""

    reason: str
    kind: str = "layout-busy"  # the validator's violation kind


def _fmt(slots: Iterable[Slot]) -> str:
    return ", ".join(str(s) for s in sorted(slots)) or "none"


def change_kind(gpu_model: GpuModel, old_layout: Iterable[Slot], new_layout: Iterable[Slot],
                held: Iterable[Slot]) -> ChangeKind | Illegal:
    """What changing ``old_layout`` into ``new_layout`` is, given the ``held`` instances (slots of
    ``old_layout`` that a unit holds or a process runs on)."""
    old, new, held_set = make_layout(old_layout), make_layout(new_layout), set(held)
    stray = held_set - set(old)
    if stray:
        return Illegal(f"held instance(s) {_fmt(stray)} are not in the current layout", "layout-invalid")
    if new == old:
        return "none"
    lost = held_set - set(new)
    if lost:
        return Illegal(f"the change would move, resize or destroy held instance(s) {_fmt(lost)}")
    problems = layout_problems(gpu_model, new)
    if problems:
        return Illegal("; ".join(problems), "layout-invalid")
    if not held_set:
        return "whole"
    # Every held slot is in ``new`` and ``new`` is valid, so the created instances use only memory
    # slices the held ones leave free; checked again explicitly since this is the rule itself.
    used = {i for s in held_set for i in _slices(gpu_model, s)}
    clash = [s for s in set(new) - set(old) if used & set(_slices(gpu_model, s))]
    if clash:  # pragma: no cover - implied by layout validity
        return Illegal(f"new instance(s) {_fmt(clash)} overlap held memory slices")
    return "partial"


def _slices(gpu_model: GpuModel, s: Slot) -> range:
    return range(s.start, s.start + gpu_model.profile(s.profile).memory_slices)


def held_slots(gpu: Gpu) -> tuple[Slot, ...]:
    return tuple(sorted(i.slot for i in gpu.instances if not i.free))


def node_applier(node: Node, policy: str | None = None) -> Applier:
    """The applier that realises a plan of ``policy`` on ``node`` (see :data:`POLICY_APPLIERS`)."""
    return POLICY_APPLIERS.get(policy or "", node.applier)


def applier_allows(applier: Applier, kind: ChangeKind) -> bool:
    return kind != "partial" or applier is Applier.NVML


def gpu_change(node: Node, gpu: Gpu, new_layout: Layout, incremental: bool = True,
               policy: str | None = None) -> ChangeKind | Illegal:
    """What re-laying out ``gpu`` of ``node`` into ``new_layout`` is, for this node's applier.

    ``incremental=False`` is a plan that asks for a whole-GPU re-cut (a template, applied with
    mig-parted): legal only while nothing is held, whatever the applier and even when the layout
    stays the same (the plan re-cuts it).
    """
    held = held_slots(gpu)
    if held and not incremental:
        holders = sorted(i.holder or "" for i in gpu.instances if not i.free)
        return Illegal(f"re-partitioned as a whole while held by {', '.join(holders)}")
    kind = change_kind(gpu.gpu_model, gpu.layout, new_layout, held)
    if isinstance(kind, Illegal) or kind == "none":
        return kind
    applier = node_applier(node, policy)
    if not applier_allows(applier, kind):
        return Illegal(f"node {node.name} changes layouts with {applier.value}, which re-cuts the whole GPU; "
                       f"a partial change keeping held instance(s) {_fmt(held_slots(gpu))} needs applier nvml",
                       "layout-applier")
    return kind


def change_violations(node: Node, gpu: Gpu, new_layout: Layout, incremental: bool,
                      policy: str | None = None) -> list[tuple[str, str]]:
    """The validator's view: ``(kind, message)`` for a change that may not happen, else nothing.

    Layout validity itself is reported by the validator (``layout-invalid``), so it is left out here.
    """
    kind = gpu_change(node, gpu, new_layout, incremental, policy)
    if isinstance(kind, Illegal) and kind.kind != "layout-invalid":
        return [(kind.kind, kind.reason)]
    return []


def layouts_keeping(model_name: str, held: Iterable[Slot]) -> tuple[Layout, ...]:
    """Every valid layout of the model's standard profiles that keeps the ``held`` slots: the
    candidates of a partial change (for a planner), smallest first. Empty ``held``: every layout."""
    keep = set(held)
    return tuple(lay for lay in enumerate_layouts(model_name) if keep <= set(lay))


def layout_change_problem(gpu: Gpu, new_layout: Layout | None = None, incremental: bool = False) -> str | None:
    """Why ``gpu`` may not change to ``new_layout`` (None: it may), whatever the node's applier.

    ``new_layout`` None asks whether the GPU may change layout at all (for a whole re-cut: is it
    idle). ``incremental``: a per-instance change (held instances stay where they are). The layout's
    own validity for the model is :func:`models.layouts.layout_problems`. The planner asks this; the
    validator asks :func:`change_violations`, which adds the node's applier.
    """
    if gpu.mode is not NodeMode.MIG:
        return f"layout change on a {gpu.mode} GPU"
    held = held_slots(gpu)
    if not incremental:
        if held:
            holders = sorted(i.holder or "" for i in gpu.instances if not i.free)
            return f"re-partitioned as a whole while held by {', '.join(holders)}"
        return None
    if new_layout is None:
        return None
    lost = sorted(set(held) - set(new_layout))
    if lost:
        return f"incremental change removes held instance(s) {_fmt(lost)}"
    return None


def may_change_layout(gpu: Gpu, new_layout: Layout | None = None, incremental: bool = False) -> bool:
    """True when ``gpu`` may take ``new_layout`` (see :func:`layout_change_problem`)."""
    return layout_change_problem(gpu, new_layout, incremental) is None
