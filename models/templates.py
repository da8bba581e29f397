"""HAMi ``knownMigGeometries`` templates: ordered whole-GPU geometries per model group.

A geometry is a list of ``{name, core, memory, count}`` entries that together form one layout.
HAMi's rule for which group applies: the first group (file order) one of whose ``models`` strings
is a substring of the GPU's NVML device name. Geometries are tried in order (first-match), and
inside a geometry the entries are tried in order: the first entry that serves a request wins
(:func:`first_match_order`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache, cached_property

from .catalog import CATALOG, GpuModel, match_nvml_name, model, nvml_names
from .errors import CatalogError, LayoutError
from .layouts import Layout, realize
from .resources import DEFAULT_RESOURCES, ResourceNames

#: Entry positions inside a geometry stay below this (a MIG GPU has at most 7 instances, so a
#: GPU's units sum at most 7 x 6 positions): ``rank x ENTRY_STRIDE + positions`` keeps the geometry
#: order first and the entry order second.
ENTRY_STRIDE = 64


@dataclass(frozen=True)
class MigTemplate:
    """One entry of a geometry: ``count`` instances of profile ``name``."""

    name: str
    memory: int
    count: int
    core: int = 0


@dataclass(frozen=True)
class Geometry:
    entries: tuple[MigTemplate, ...]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in self.entries:
            out[e.name] = out.get(e.name, 0) + e.count
        return out

    def entry_positions(self) -> dict[str, int]:
        """Profile -> index of its first entry (HAMi walks entries in this order)."""
        out: dict[str, int] = {}
        for i, e in enumerate(self.entries):
            if e.count > 0:
                out.setdefault(e.name, min(i, ENTRY_STRIDE // 8 - 1))
        return out


@dataclass(frozen=True)
class ModelGeometries:
    """One ``knownMigGeometries`` item: model substrings and their geometries in try order."""

    models: tuple[str, ...]
    geometries: tuple[Geometry, ...]

    def matches(self, nvml_name: str) -> bool:
        """HAMi's test (``strings.Contains(device type, model)``): a model string inside the name."""
        return any(m in nvml_name for m in self.models)

    def serves_model(self, gpu_model: GpuModel) -> bool:
        """Some geometry can be cut on this model (else the group cannot apply to it)."""
        return any(cuttable(gpu_model, geo) is not None for geo in self.geometries)


def cuttable(gpu_model: GpuModel, geo: Geometry) -> Layout | None:
    """The geometry realised on the model, or None when the model cannot cut it."""
    return _realise(gpu_model.name, tuple(sorted(geo.counts().items())))


@cache
def _realise(model_name: str, counts: tuple[tuple[str, int], ...]) -> Layout | None:
    m = model(model_name)
    if not all(m.has_profile(n) for n, _ in counts) or not any(n for _, n in counts):
        return None
    try:
        return realize(m, dict(counts))
    except (LayoutError, CatalogError):
        return None


def models_named(strings: Iterable[str]) -> tuple[GpuModel, ...]:
    """Catalog models with an NVML device name that contains one of ``strings`` (HAMi's direction:
    ``A100`` names both A100 models, ``H20`` names H20 and H200)."""
    ss = tuple(strings)
    return tuple(m for m in CATALOG if any(s in n for s in ss for n in nvml_names(m)))


@dataclass(frozen=True)
class TemplateLayout:
    """A geometry realised on a concrete model: its index in config order and its slots."""

    index: int
    layout: Layout


@dataclass(frozen=True)
class DeviceConfig:
    """The parsed device-config: every group in file order, plus HAMi's NVIDIA settings that
    dynamig honours (resource names, the default ``deviceSplitCount``)."""

    groups: tuple[ModelGeometries, ...]
    resources: ResourceNames = field(default=DEFAULT_RESOURCES)
    split: int | None = None  # nvidia.deviceSplitCount (None: not set; nodes default to 10)
    form: str = "knownMigGeometries"  # or "migProfileAllowlist" (HAMi v2.10)

    def group_for_name(self, nvml_name: str, gpu_model: GpuModel | None = None) -> ModelGeometries | None:
        """HAMi's rule on an NVML device name: the first group one of whose strings it contains.
        A group none of whose geometries the GPU's model can realise is passed over (HAMi would
        take it and fail at apply time: its default ``H20`` group names every ``H200``)."""
        m = gpu_model if gpu_model is not None else match_nvml_name(nvml_name)
        for g in self.groups:
            if g.matches(nvml_name) and (m is None or g.serves_model(m)):
                return g
        return None

    def group_for(self, gpu_model: GpuModel) -> ModelGeometries | None:
        """The group for a catalog model: HAMi's rule on the model's NVML names (the first group,
        in file order, that one of them matches and that the model can realise)."""
        return self._group_of.get(gpu_model.name)

    @cached_property
    def _group_of(self) -> dict[str, ModelGeometries]:
        out: dict[str, ModelGeometries] = {}
        for m in CATALOG:
            g = next((g for g in self.groups if g.serves_model(m) and any(g.matches(n) for n in nvml_names(m))),
                     None)
            if g is not None:
                out[m.name] = g
        return out

    @cached_property
    def _layouts(self) -> dict[str, tuple[TemplateLayout, ...]]:
        out: dict[str, tuple[TemplateLayout, ...]] = {}
        for m in CATALOG:
            if not m.mig_capable:
                continue
            g = self.group_for(m)
            if g is None:
                out[m.name] = ()
                continue
            lays = []
            for i, geo in enumerate(g.geometries):
                lay = cuttable(m, geo)
                if lay is not None:
                    lays.append(TemplateLayout(i, lay))
            out[m.name] = tuple(lays)
        return out

    def template_layouts(self, gpu_model: GpuModel) -> tuple[TemplateLayout, ...]:
        """The model's geometries as concrete layouts, in config (first-match) order."""
        return self._layouts.get(gpu_model.name, ())

    def entry_positions(self, gpu_model: GpuModel, template_index: int | None) -> dict[str, int]:
        """Profile -> entry index inside geometry ``template_index`` of the model's group ({} for
        a layout that is no template)."""
        g = self.group_for(gpu_model)
        if g is None or template_index is None or not 0 <= template_index < len(g.geometries):
            return {}
        return g.geometries[template_index].entry_positions()


def first_match_order(rank: int, positions: dict[str, int], held: Iterable[tuple[str, int]]) -> int:
    """The ``template_order`` cost of cutting a GPU to the layout of rank ``rank`` and giving its
    units ``held`` ((profile, count) pairs): the geometry's rank first, then the entry positions
    of the profiles taken. Minimising it reproduces HAMi's choice for one unit: the first geometry
    with an entry that serves the request, and in it the first such entry."""
    return rank * ENTRY_STRIDE + sum(positions.get(p, 0) * n for p, n in held)


def model_for_nvml_name(nvml_name: str) -> GpuModel | None:
    return match_nvml_name(nvml_name)
