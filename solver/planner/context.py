"""Per-configuration tables, built once and cached: objective weights, per-model layout options,
per-GPU-class summaries. Everything here depends on the configuration and the catalog only."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from models.catalog import GpuModel, model
from models.errors import CatalogError
from models.layouts import Layout, enumerate_layouts
from models.relayout import layouts_keeping, may_change_layout
from models.templates import first_match_order
from models.types import Gpu, NodeMode

from .config import OBJECTIVES, PlannerConfig
from .costs import PERMILLE, mig_usage, share_usage
from .objective import fragmentation
from .objective.policy import NODE_POLICY_MULT

#: The cost components every candidate carries, in this fixed order.
COMPONENTS: tuple[str, ...] = ("reconfigurations", "template_order", "fragmentation", "policy", "waste")
#: Radix of the lexicographic encoding: every component's sum stays far below RADIX / 2.
RADIX = 1 << 52

Counts = tuple[tuple[str, int], ...]

#: Entries the caches may hold before :meth:`Context.trim` drops them.
CACHE_LIMIT = 400_000


def counts_of(profiles: Iterable[str]) -> Counts:
    return tuple(sorted(Counter(profiles).items()))


@dataclass(frozen=True)
class LayoutOption:
    """A layout an idle GPU may be re-partitioned to: ``rank`` orders them (templates first)."""

    rank: int
    layout: Layout
    template_index: int | None
    counts: Counts
    positions: tuple[tuple[str, int], ...] = ()  # profile -> entry index in its geometry (first match)

    def order(self, held: Iterable[tuple[str, int]]) -> int:
        """The template_order cost of cutting this layout for units of ``held`` profiles."""
        return first_match_order(self.rank, self._positions, held)

    @cached_property
    def _positions(self) -> dict[str, int]:
        return dict(self.positions)


@dataclass
class ModelInfo:
    gpu_model: GpuModel
    pm: dict[str, int]  # profile -> per-mille of the GPU's memory slices
    options: tuple[LayoutOption, ...]
    template_of: dict[Layout, int]  # exact template layout -> template index


@dataclass
class ClassInfo:
    """What the planner needs of one GPU class (identical GPUs collapse into one)."""

    key: tuple[Any, ...]
    kind: str  # "mig" | "share" | "unknown"
    gpu: Gpu  # a representative
    model_info: ModelInfo | None = None
    layout: dict[str, int] = field(default_factory=dict)
    held: dict[str, int] = field(default_factory=dict)
    free: dict[str, int] = field(default_factory=dict)
    frag: int = 0
    usage: int = 0
    uid: int = 0  # small integer id, for cheap cache keys
    recut: bool = False  # the GPU may be re-partitioned as a whole (models.relayout)
    partial: tuple[tuple[Layout, dict[str, int]], ...] = ()  # busy GPU, nvml node: layouts keeping the held

    @property
    def idle(self) -> bool:
        return self.recut


def gpu_class_key(g: Gpu, partial: bool = False) -> tuple[Any, ...]:
    """The GPU's class. ``partial``: its node may change a busy GPU in part (applier ``nvml``), so
    a busy GPU's class also names its exact slots (the partial layouts depend on the placements)."""
    if g.mode is NodeMode.MIG:
        lay = counts_of(i.slot.profile for i in g.instances)
        held = counts_of(i.slot.profile for i in g.instances if i.holder is not None)
        slots = None
        if partial and held:
            slots = (tuple(sorted(i.slot for i in g.instances)),
                     tuple(sorted(i.slot for i in g.instances if i.holder is not None)))
        return ("mig", g.model, lay, held, g.health, g.split, g.nvml_name, slots)
    excl = any(s.cores >= 100 for s in g.shares)
    return ("share", g.model, g.memory_mib, g.split, len(g.shares), g.used_memory_mib, g.used_cores, excl,
            g.health, g.nvml_name)


class Context:
    """Tables for one (configuration, layouts-any) pair."""

    def __init__(self, config: PlannerConfig, layouts_any: bool) -> None:
        self.config = config
        self.layouts_any = layouts_any
        self.workload = config.workload
        self.host_terms = bool(config.workload.cpu_per_gpu_milli or config.workload.mem_per_gpu_milli)
        self.shared: dict[Any, Any] = {}  # per-node answers by GPU-class signature (nodesolve)
        self._share_values: dict[int, fragmentation.ShareValues] = {}
        self._mig_values: dict[str, fragmentation.MigValues] = {}
        self.weights = self._weights(config.objective)
        self._models: dict[str, ModelInfo | None] = {}
        self._classes: dict[tuple[Any, ...], ClassInfo] = {}
        self._ids: dict[Any, int] = {}
        self._next = itertools.count(1)  # ids are never reused, even after a trim
        self.cache: dict[Any, Any] = {}  # pattern tables, per-node views and other derived tables

    def trim(self, limit: int = CACHE_LIMIT) -> None:
        """Forget every derived table when the caches grow past ``limit`` entries (a long-running
        extender sees ever new GPU usages and pod shapes). Safe between and during calls: ids are
        never reused, so a stale id can never name a new object."""
        if len(self.cache) + len(self._ids) + len(self._classes) > limit:
            self.cache = {}
            self.shared = {}
            self._ids = {}
            self._classes = {}

    @staticmethod
    def _weights(objective: tuple[str, ...]) -> tuple[int, ...]:
        levels = [o for o in objective if o != "placed"]
        w = {name: RADIX ** (len(levels) - 1 - i) for i, name in enumerate(levels)}
        return tuple(w.get(c, 0) for c in COMPONENTS)

    def encode(self, comps: tuple[int, ...]) -> int:
        return sum(c * w for c, w in zip(comps, self.weights, strict=True))

    # ---- models
    def model_info(self, name: str) -> ModelInfo | None:
        if name in self._models:
            return self._models[name]
        try:
            m = model(name)
        except CatalogError:
            self._models[name] = None
            return None
        info = self._build_model(m) if m.mig_capable else ModelInfo(m, {}, (), {})
        self._models[name] = info
        return info

    def _build_model(self, m: GpuModel) -> ModelInfo:
        pm = {p.name: p.memory_slices * PERMILLE // m.memory_slices for p in m.profiles}
        opts: list[LayoutOption] = []
        seen: set[Layout] = set()
        template_of: dict[Layout, int] = {}
        for t in self.config.templates.template_layouts(m):
            template_of.setdefault(t.layout, t.index)
            if t.layout in seen:
                continue
            seen.add(t.layout)
            pos = tuple(sorted(self.config.templates.entry_positions(m, t.index).items()))
            opts.append(LayoutOption(t.index, t.layout, t.index, counts_of(s.profile for s in t.layout), pos))
        if self.layouts_any:
            # after the templates, smallest largest-instance first, then more instances: first match
            # then picks the finest layout that serves, as the default tables do (small to large)
            base = max((o.rank for o in opts), default=-1) + 1
            extra = sorted(enumerate_layouts(m.name, maximal_only=True),
                           key=lambda lay: (max(m.profile(s.profile).memory_slices for s in lay), -len(lay), lay))
            for i, lay in enumerate(extra):
                if lay not in seen:
                    seen.add(lay)
                    opts.append(LayoutOption(base + i, lay, None, counts_of(s.profile for s in lay)))
        return ModelInfo(m, pm, tuple(opts), template_of)

    # ---- what free capacity is worth (objective.fragmentation)
    def share_values(self, memory_mib: int) -> fragmentation.ShareValues:
        got = self._share_values.get(memory_mib)
        if got is None:
            got = fragmentation.share_values(self.workload, memory_mib)
            self._share_values[memory_mib] = got
        return got

    def mig_values(self, mi: ModelInfo) -> fragmentation.MigValues:
        name = mi.gpu_model.name
        got = self._mig_values.get(name)
        if got is None:
            got = fragmentation.mig_values(self.workload, mi)
            self._mig_values[name] = got
        return got

    # ---- GPU classes
    def class_info(self, key: tuple[Any, ...], g: Gpu) -> ClassInfo:
        info = self._classes.get(key)
        if info is None:
            info = self._build_class(key, g)
            info.uid = next(self._next)
            self._classes[key] = info
        return info

    def intern(self, obj: Any) -> int:
        """A small integer standing for ``obj`` (hash it once, then compare ints)."""
        got = self._ids.get(obj)
        if got is None:
            got = next(self._next)
            self._ids[obj] = got
        return got

    def _build_class(self, key: tuple[Any, ...], g: Gpu) -> ClassInfo:
        mi = self.model_info(g.model)
        if mi is None:
            return ClassInfo(key, "unknown", g)
        if key[0] == "mig":
            if not mi.gpu_model.mig_capable:
                return ClassInfo(key, "unknown", g, mi)
            layout = dict(key[2])
            held = dict(key[3])
            if any(p not in mi.pm for p in layout):
                return ClassInfo(key, "unknown", g, mi)
            free = {p: n - held.get(p, 0) for p, n in layout.items() if n - held.get(p, 0) > 0}
            recut = may_change_layout(g)
            frag = fragmentation.mig_frag(self, mi, layout, held, recut)
            partial = self._partial_layouts(mi, key[7]) if len(key) > 7 and key[7] else ()
            return ClassInfo(key, "mig", g, mi, layout, held, free, frag, mig_usage(mi.pm, held), recut=recut,
                             partial=partial)
        excl = bool(key[7])
        frag = fragmentation.share_frag(self, g.memory_mib, g.used_memory_mib, len(g.shares), g.split, g.used_cores,
                                        excl)
        return ClassInfo(key, "share", g, mi, frag=frag, usage=share_usage(g.memory_mib, g.used_memory_mib))

    def _partial_layouts(self, mi: ModelInfo, slots: tuple[Layout, Layout]
                         ) -> tuple[tuple[Layout, dict[str, int]], ...]:
        """The partial changes of a busy GPU with ``slots`` = (layout, held slots): every maximal
        valid layout that keeps the held slots (``models.relayout.layouts_keeping``), other than the
        current one. Maximal: a smaller one only leaves slices no instance can use."""
        current, held = slots
        keep = [lay for lay in layouts_keeping(mi.gpu_model.name, held) if lay != current]
        sets = [frozenset(lay) for lay in keep]
        out = [lay for lay, s in zip(keep, sets, strict=True) if not any(s < t for t in sets)]
        return tuple((lay, dict(counts_of(x.profile for x in lay))) for lay in out)

    def mig_frag_after(self, mi: ModelInfo, layout: Mapping[str, int], held: Mapping[str, int]) -> int:
        """``F`` of a GPU of model ``mi`` with ``layout`` once ``held`` are held (re-cuttable
        again only if nothing is held)."""
        key = ("frag", mi.gpu_model.name, tuple(sorted(layout.items())), tuple(sorted(held.items())))
        got = self.cache.get(key)
        if got is None:
            got = fragmentation.mig_frag(self, mi, layout, held, not any(held.values()))
            self.cache[key] = got
        return got  # type: ignore[no-any-return]


_CONTEXTS: dict[tuple[PlannerConfig, bool], Context] = {}


_LAST: list[tuple[PlannerConfig, bool, Context]] = []


def context_for(config: PlannerConfig, layouts_any: bool) -> Context:
    """The cached tables of ``config`` (the same object as last time: no hashing at all; hashing a
    configuration with its templates costs most of a millisecond)."""
    if _LAST and _LAST[0][0] is config and _LAST[0][1] == layouts_any:
        return _LAST[0][2]
    ctx = _context_for(config, layouts_any)
    _LAST[:] = [(config, layouts_any, ctx)]
    return ctx


def _context_for(config: PlannerConfig, layouts_any: bool) -> Context:
    key = (config, layouts_any)
    ctx = _CONTEXTS.get(key)
    if ctx is None:
        if len(_CONTEXTS) > 32:
            _CONTEXTS.clear()
        ctx = Context(config, layouts_any)
        _CONTEXTS[key] = ctx
    return ctx


__all__ = ["COMPONENTS", "NODE_POLICY_MULT", "OBJECTIVES", "ClassInfo", "Context", "LayoutOption", "ModelInfo",
           "context_for", "counts_of", "gpu_class_key"]
