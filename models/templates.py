"""HAMi ``knownMigGeometries`` templates: ordered whole-GPU geometries per model group.

A geometry is a list of ``{name, core, memory, count}`` entries that together form one layout;
the first group whose model substring matches a GPU's NVML name applies (HAMi's rule), and the
geometries are tried in order (first-match).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from .catalog import CATALOG, GpuModel, match_nvml_name
from .layouts import Layout, realize


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


@dataclass(frozen=True)
class ModelGeometries:
    """One ``knownMigGeometries`` item: model substrings and their geometries in try order."""

    models: tuple[str, ...]
    geometries: tuple[Geometry, ...]

    def matches(self, nvml_name: str) -> bool:
        return any(m in nvml_name for m in self.models)


@dataclass(frozen=True)
class TemplateLayout:
    """A geometry realised on a concrete model: its index in config order and its slots."""

    index: int
    layout: Layout


@dataclass(frozen=True)
class DeviceConfig:
    """The parsed device-config: every group in file order."""

    groups: tuple[ModelGeometries, ...]

    def group_for(self, gpu_model: GpuModel) -> ModelGeometries | None:
        """The first group (file order, HAMi's rule) one of whose model strings names this model.

        A group string names a model when it equals the catalog name or resolves to the model by
        the catalog's NVML-name matching (so ``H20`` never captures an ``H200``).
        """
        for g in self.groups:
            for s in g.models:
                if s == gpu_model.name or match_nvml_name(s) is gpu_model:
                    return g
        return None

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
                if all(m.has_profile(n) for n in geo.counts()):
                    lays.append(TemplateLayout(i, realize(m, geo.counts())))
            out[m.name] = tuple(lays)
        return out

    def template_layouts(self, gpu_model: GpuModel) -> tuple[TemplateLayout, ...]:
        """The model's geometries as concrete layouts, in config (first-match) order."""
        return self._layouts.get(gpu_model.name, ())


def model_for_nvml_name(nvml_name: str) -> GpuModel | None:
    return match_nvml_name(nvml_name)
