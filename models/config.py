"""Configuration files: HAMi's device-config (``knownMigGeometries``), HAMi's nodeconfig JSON, and
the dynamig inventory YAML (DESIGN §8). Every error names the file, the line and the path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from .catalog import CATALOG, GpuModel, match_nvml_name, model
from .errors import CatalogError, LayoutError
from .layouts import realize
from .templates import DeviceConfig, Geometry, MigTemplate, ModelGeometries
from .types import Applier, NodeMode
from .yamlsrc import Located, load_file, load_text

# --------------------------------------------------------------------------- built-in templates

#: HAMi's chart default groups (``reference/hami.md`` §3): model strings and, per geometry,
#: (profile class, count) entries. Memory comes from the catalog (real instance sizes, HAMi #1054).
_DEFAULT_GROUPS: tuple[tuple[tuple[str, ...], str, tuple[tuple[tuple[str, int], ...], ...]], ...] = (
    (("A30",), "A30", ((("1g", 4),), (("2g", 2),), (("4g", 1),))),
    (("A100-SXM4-40GB", "A100-40GB-PCIe", "A100-PCIE-40GB"), "A100-SXM4-40GB", ()),
    (("A100-SXM4-80GB", "A100-80GB-PCIe", "A100-PCIE-80GB"), "A100-SXM4-80GB", ()),
    (("H100-PCIE-80GB", "H100-SXM5-80GB"), "H100-80GB", ()),
    (("H100-PCIE-94GB", "H100-SXM5-94GB"), "H100-94GB", ()),
    (("H20", "H100 on GH200"), "H20", ()),
    (("H200 NVL", "H200-SXM5"), "H200", ()),
    (("B200",), "B200", ()),
    (("RTX PRO 6000 Blackwell Server Edition",), "RTX-PRO-6000", ((("1g", 4),), (("2g", 2),), (("4g", 1),))),
)
_SEVEN_SLICE_DEFAULT = ((("1g", 7),), (("1g", 1), ("2g", 3)), (("3g", 2),), (("7g", 1),))


def _builtin() -> DeviceConfig:
    groups = []
    for names, model_name, geos in _DEFAULT_GROUPS:
        m = model(model_name)
        by_class = {p.klass: p for p in m.profiles}
        geometries = []
        for geo in geos or _SEVEN_SLICE_DEFAULT:
            entries = tuple(
                MigTemplate(by_class[k].name, by_class[k].memory_mib, n, m.core_percent(by_class[k])) for k, n in geo
            )
            geometries.append(Geometry(entries))
        groups.append(ModelGeometries(names, tuple(geometries)))
    return DeviceConfig(tuple(groups))


BUILTIN_DEVICE_CONFIG: DeviceConfig = _builtin()


def builtin_device_config() -> DeviceConfig:
    return BUILTIN_DEVICE_CONFIG


def device_config_document(cfg: DeviceConfig) -> dict[str, Any]:
    """The HAMi-format document ``{"nvidia": {"knownMigGeometries": [...]}}`` for a config."""
    return {
        "nvidia": {
            "knownMigGeometries": [
                {
                    "models": list(g.models),
                    "allowedGeometries": [
                        [{"name": e.name, "core": e.core, "memory": e.memory, "count": e.count} for e in geo.entries]
                        for geo in g.geometries
                    ],
                }
                for g in cfg.groups
            ]
        }
    }


def builtin_device_config_document() -> dict[str, Any]:
    return device_config_document(BUILTIN_DEVICE_CONFIG)


# --------------------------------------------------------------------------- device-config loading

_GROUPED_HINT = """allowedGeometries is a list of geometries, and each geometry is itself a list of entries
that together form one whole-GPU layout. Write it grouped, for example:
  allowedGeometries:
    - - {name: 1g.10gb, core: 14, memory: 9728, count: 7}
    - - {name: 1g.10gb, core: 14, memory: 9728, count: 1}
      - {name: 2g.20gb, core: 28, memory: 19968, count: 3}"""


@dataclass(frozen=True)
class ConfigWarning:
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: warning: {self.message}"


@dataclass(frozen=True)
class LoadedDeviceConfig:
    config: DeviceConfig
    warnings: tuple[ConfigWarning, ...] = ()


def _int(loc: Located, value: Any, path: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise loc.error(f"{what} must be an integer, got {value!r}", path)
    if value < 0:
        raise loc.error(f"{what} must not be negative, got {value}", path)
    return value


def _resolve_group_model(loc: Located, names: list[str], path: str) -> GpuModel:
    found: list[GpuModel] = []
    for i, s in enumerate(names):
        if not isinstance(s, str) or not s:
            raise loc.error(f"model names must be non-empty strings, got {s!r}", f"{path}.models[{i}]")
        m = match_nvml_name(s)
        if m is None:
            known = ", ".join(p for x in CATALOG for p in x.nvml_patterns)
            raise loc.error(f"unknown GPU model {s!r} (known NVML names: {known})", f"{path}.models[{i}]")
        found.append(m)
    if len({m.profiles for m in found}) > 1:
        raise loc.error(
            f"models {names} have different MIG profiles ({', '.join(m.name for m in found)}); "
            "put them in separate groups",
            f"{path}.models",
        )
    return found[0]


def parse_device_config(loc: Located) -> LoadedDeviceConfig:
    """Parse and validate HAMi's device-config (the chart's ``device-config.yaml``)."""
    data = loc.data
    if not isinstance(data, dict) or not isinstance(data.get("nvidia"), dict):
        raise loc.error("expected a mapping with key 'nvidia' holding 'knownMigGeometries'", "nvidia")
    groups_raw = data["nvidia"].get("knownMigGeometries")
    if not isinstance(groups_raw, list) or not groups_raw:
        raise loc.error("nvidia.knownMigGeometries must be a non-empty list", "nvidia.knownMigGeometries")
    warnings: list[ConfigWarning] = []
    groups: list[ModelGeometries] = []
    seen_models: dict[str, str] = {}
    for gi, graw in enumerate(groups_raw):
        gpath = f"nvidia.knownMigGeometries[{gi}]"
        if not isinstance(graw, dict):
            raise loc.error("each item must be a mapping with 'models' and 'allowedGeometries'", gpath)
        names = graw.get("models")
        if not isinstance(names, list) or not names:
            raise loc.error("'models' must be a non-empty list of NVML model names", f"{gpath}.models")
        gpu = _resolve_group_model(loc, names, gpath)
        for i, s in enumerate(names):
            if s in seen_models:
                raise loc.error(f"duplicate model {s!r}: already listed at {seen_models[s]}", f"{gpath}.models[{i}]")
            seen_models[s] = f"{gpath}.models"
        geos_raw = graw.get("allowedGeometries")
        if not isinstance(geos_raw, list) or not geos_raw:
            raise loc.error("'allowedGeometries' must be a non-empty list of geometries", f"{gpath}.allowedGeometries")
        if any(isinstance(x, dict) for x in geos_raw):
            raise loc.error("flat list of entries found; " + _GROUPED_HINT, f"{gpath}.allowedGeometries")
        geometries = []
        for xi, geo_raw in enumerate(geos_raw):
            xpath = f"{gpath}.allowedGeometries[{xi}]"
            if not isinstance(geo_raw, list) or not geo_raw:
                raise loc.error("a geometry must be a non-empty list of {name, core, memory, count}", xpath)
            entries = []
            for ei, e in enumerate(geo_raw):
                epath = f"{xpath}[{ei}]"
                if not isinstance(e, dict):
                    raise loc.error("an entry must be a mapping {name, core, memory, count}", epath)
                unknown = set(e) - {"name", "core", "memory", "count"}
                if unknown:
                    raise loc.error(f"unknown field(s) {sorted(unknown)}", epath)
                name = e.get("name")
                if not isinstance(name, str):
                    raise loc.error(f"'name' must be a profile name, got {name!r}", f"{epath}.name")
                if not gpu.has_profile(name):
                    known = ", ".join(p.name for p in gpu.profiles)
                    raise loc.error(f"unknown MIG profile {name!r} for {gpu.name} (known: {known})", f"{epath}.name")
                memory = _int(loc, e.get("memory"), f"{epath}.memory", "memory")
                count = _int(loc, e.get("count"), f"{epath}.count", "count")
                core = _int(loc, e.get("core", 0), f"{epath}.core", "core")
                if core > 100:
                    raise loc.error(f"core is a percentage of the GPU, got {core}", f"{epath}.core")
                real = gpu.profile(name).memory_mib
                if memory > real:
                    ln = loc.line(f"{epath}.memory")
                    warnings.append(
                        ConfigWarning(
                            f"{loc.source}:{ln}:{epath}.memory",
                            f"{name} declares {memory} MiB but the instance has {real} MiB; "
                            "dynamig fits requests against the real size (HAMi #1054)",
                        )
                    )
                entries.append(MigTemplate(name, memory, count, core))
            geo = Geometry(tuple(entries))
            total = sum(e.memory * e.count for e in entries)
            # HAMi's tables use nominal GiB (an H100's 2x 3g.40gb = 81920 > NVML's 81559), so the
            # bound is the GPU's nominal size: its NVML memory rounded up to whole GiB.
            nominal = -(-gpu.memory_mib // 1024) * 1024
            if total > nominal:
                raise loc.error(f"memory of the geometry sums to {total} MiB, more than the GPU's {nominal} MiB", xpath)
            if not any(geo.counts().values()):
                raise loc.error("geometry has no instance (all counts are 0)", xpath)
            try:
                realize(gpu, geo.counts())
            except (LayoutError, CatalogError) as err:
                raise loc.error(f"not a layout the MIG placement rules allow: {err}", xpath) from err
            geometries.append(geo)
        groups.append(ModelGeometries(tuple(names), tuple(geometries)))
    return LoadedDeviceConfig(DeviceConfig(tuple(groups)), tuple(warnings))


def load_device_config(path: str) -> LoadedDeviceConfig:
    return parse_device_config(load_file(path))


def load_device_config_text(text: str, source: str = "<string>") -> LoadedDeviceConfig:
    return parse_device_config(load_text(text, source))


# --------------------------------------------------------------------------- nodeconfig (HAMi)


@dataclass(frozen=True)
class NodeConfigEntry:
    name: str
    mode: NodeMode = NodeMode.HAMI_CORE
    split: int = 10
    memory_scaling: float = 1.0
    core_scaling: float = 1.0
    filter_uuids: tuple[str, ...] = ()
    filter_indexes: tuple[int, ...] = ()
    applier: Applier | None = None  # dynamig's own key "migapplier"; None: the plugin's default


def _applier(loc: Located, raw: Any, path: str) -> Applier:
    try:
        return Applier(raw)
    except ValueError:
        raise loc.error(f"must be 'mig-parted' (whole GPU, idle only) or 'nvml' (per instance), got {raw!r}",
                        path) from None


_NODECONFIG_KEYS = {
    "migapplier",
    "name",
    "operatingmode",
    "migstrategy",
    "filterdevices",
    "enablegetpreferredallocation",
    "devicesplitcount",
    "devicememoryscaling",
    "devicecorescaling",
    "preconfigureddevicememory",
    "libcudaloglevel",
    "enablenumatopology",
}


def parse_node_config(loc: Located) -> tuple[NodeConfigEntry, ...]:
    data = loc.data
    if not isinstance(data, dict) or not isinstance(data.get("nodeconfig"), list):
        raise loc.error("expected {\"nodeconfig\": [ ... ]}", "nodeconfig")
    out: list[NodeConfigEntry] = []
    seen: set[str] = set()
    for i, e in enumerate(data["nodeconfig"]):
        path = f"nodeconfig[{i}]"
        if not isinstance(e, dict):
            raise loc.error("each entry must be an object", path)
        unknown = set(e) - _NODECONFIG_KEYS
        if unknown:
            raise loc.error(f"unknown field(s) {sorted(unknown)}", path)
        name = e.get("name")
        if not isinstance(name, str) or not name:
            raise loc.error("'name' (the node name) is required", f"{path}.name")
        if name in seen:
            raise loc.error(f"duplicate node {name!r}", f"{path}.name")
        seen.add(name)
        mode_raw = e.get("operatingmode", "hami-core")
        if mode_raw == "mps":
            raise loc.error("operatingmode 'mps' is not supported by dynamig (use hami-core or mig)",
                            f"{path}.operatingmode")
        try:
            mode = NodeMode(mode_raw)
        except ValueError:
            raise loc.error(f"operatingmode must be 'mig' or 'hami-core', got {mode_raw!r}",
                            f"{path}.operatingmode") from None
        split = _int(loc, e.get("devicesplitcount", 10), f"{path}.devicesplitcount", "devicesplitcount")
        if split < 1:
            raise loc.error("devicesplitcount must be at least 1", f"{path}.devicesplitcount")
        scaling = []
        for key in ("devicememoryscaling", "devicecorescaling"):
            v = e.get(key, 1)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
                raise loc.error(f"{key} must be a positive number, got {v!r}", f"{path}.{key}")
            scaling.append(float(v))
        filt = e.get("filterdevices") or {}
        if not isinstance(filt, dict):
            raise loc.error("filterdevices must be {uuid: [...], index: [...]}", f"{path}.filterdevices")
        uuids = filt.get("uuid") or []
        idxs = filt.get("index") or []
        if not all(isinstance(u, str) for u in uuids):
            raise loc.error("filterdevices.uuid must list strings", f"{path}.filterdevices.uuid")
        if not all(isinstance(x, int) and x >= 0 for x in idxs):
            raise loc.error("filterdevices.index must list GPU indexes", f"{path}.filterdevices.index")
        applier = _applier(loc, e["migapplier"], f"{path}.migapplier") if "migapplier" in e else None
        out.append(NodeConfigEntry(name, mode, split, scaling[0], scaling[1], tuple(uuids), tuple(idxs), applier))
    return tuple(out)


def load_node_config(path: str) -> tuple[NodeConfigEntry, ...]:
    return parse_node_config(load_file(path))


# --------------------------------------------------------------------------- inventory (DESIGN §8)


@dataclass(frozen=True)
class InventoryNode:
    name: str
    mode: NodeMode
    gpus: tuple[tuple[str, int], ...]  # (catalog model name, count) in GPU index order
    cpu_milli: int | None = None
    memory_mib: int | None = None
    split: int = 10
    labels: tuple[tuple[str, str], ...] = ()
    applier: Applier = Applier.MIG_PARTED  # how its MIG GPUs change layout (models.relayout)


@dataclass(frozen=True)
class Inventory:
    nodes: tuple[InventoryNode, ...]
    templates: DeviceConfig = field(default=BUILTIN_DEVICE_CONFIG)
    layouts_any: bool = False
    source: str = ""


def _inventory_gpus(loc: Located, raw: Any, path: str, mode: NodeMode) -> tuple[tuple[str, int], ...]:
    items = raw if isinstance(raw, list) else [raw]
    out = []
    for i, g in enumerate(items):
        gpath = f"{path}[{i}]" if isinstance(raw, list) else path
        if not isinstance(g, dict) or "model" not in g:
            raise loc.error("gpus must be {model: NAME, count: N} (or a list of those)", gpath)
        try:
            m = model(str(g["model"]))
        except CatalogError as e:
            raise loc.error(str(e), f"{gpath}.model") from None
        count = _int(loc, g.get("count", 1), f"{gpath}.count", "count")
        if count < 1:
            raise loc.error("count must be at least 1", f"{gpath}.count")
        if mode is NodeMode.MIG and not m.mig_capable:
            raise loc.error(f"{m.name} is not MIG-capable; use mode hami-core", f"{gpath}.model")
        out.append((m.name, count))
    return tuple(out)


def parse_inventory(loc: Located) -> Inventory:
    data = loc.data
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list) or not data["nodes"]:
        raise loc.error("expected a mapping with a non-empty 'nodes' list", "nodes")
    unknown = set(data) - {"nodes", "templates", "layouts"}
    if unknown:
        raise loc.error(f"unknown top-level field(s) {sorted(unknown)}", "")
    nodes: list[InventoryNode] = []
    seen: set[str] = set()
    for i, n in enumerate(data["nodes"]):
        path = f"nodes[{i}]"
        if not isinstance(n, dict):
            raise loc.error("each node must be a mapping", path)
        bad = set(n) - {"name", "mode", "gpus", "cpu_milli", "memory_mib", "split", "labels", "applier"}
        if bad:
            raise loc.error(f"unknown field(s) {sorted(bad)}", path)
        name = n.get("name")
        if not isinstance(name, str) or not name:
            raise loc.error("'name' is required", f"{path}.name")
        if name in seen:
            raise loc.error(f"duplicate node name {name!r}", f"{path}.name")
        seen.add(name)
        try:
            mode = NodeMode(n.get("mode", "hami-core"))
        except ValueError:
            raise loc.error(f"mode must be 'mig' or 'hami-core', got {n.get('mode')!r}", f"{path}.mode") from None
        if "gpus" not in n:
            raise loc.error("'gpus' is required", f"{path}.gpus")
        gpus = _inventory_gpus(loc, n["gpus"], f"{path}.gpus", mode)
        cpu = n.get("cpu_milli")
        mem = n.get("memory_mib")
        cpu_v = None if cpu is None else _int(loc, cpu, f"{path}.cpu_milli", "cpu_milli")
        mem_v = None if mem is None else _int(loc, mem, f"{path}.memory_mib", "memory_mib")
        split = _int(loc, n.get("split", 10), f"{path}.split", "split")
        if split < 1:
            raise loc.error("split must be at least 1", f"{path}.split")
        labels_raw = n.get("labels") or {}
        if not isinstance(labels_raw, dict):
            raise loc.error("labels must be a mapping", f"{path}.labels")
        labels = tuple(sorted((str(k), str(v)) for k, v in labels_raw.items()))
        applier = _applier(loc, n.get("applier", Applier.MIG_PARTED.value), f"{path}.applier")
        if "applier" in n and mode is not NodeMode.MIG:
            raise loc.error("applier is only for mode mig nodes (how their MIG layouts change)", f"{path}.applier")
        nodes.append(InventoryNode(name, mode, gpus, cpu_v, mem_v, split, labels, applier))
    templates = BUILTIN_DEVICE_CONFIG
    tpl = data.get("templates")
    if tpl is not None:
        if not isinstance(tpl, str):
            raise loc.error("templates must be a path to a device-config file", "templates")
        base = os.path.dirname(loc.source) if loc.source and not loc.source.startswith("<") else "."
        tpath = tpl if os.path.isabs(tpl) else os.path.join(base, tpl)
        templates = load_device_config(tpath).config
    layouts = data.get("layouts", "templates")
    if layouts not in ("templates", "any"):
        raise loc.error(f"layouts must be 'templates' or 'any', got {layouts!r}", "layouts")
    return Inventory(tuple(nodes), templates, layouts == "any", loc.source)


def load_inventory(path: str) -> Inventory:
    return parse_inventory(load_file(path))


def load_inventory_text(text: str, source: str = "<string>") -> Inventory:
    return parse_inventory(load_text(text, source))


def detect_kind(loc: Located) -> str:
    """Which of the three config files a document is: device-config, nodeconfig or inventory."""
    d = loc.data
    if isinstance(d, dict):
        if "nvidia" in d:
            return "device-config"
        if "nodeconfig" in d:
            return "nodeconfig"
        if "nodes" in d:
            return "inventory"
    raise loc.error("not a device-config (nvidia:), nodeconfig ({\"nodeconfig\": ...}) or inventory (nodes:)", "")
