"""Configuration files: HAMi's device-config (:mod:`.deviceconfig`), HAMi's nodeconfig JSON, and
the dynamig inventory YAML (DESIGN §8). Every error names the file, the line and the path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from .catalog import model
from .deviceconfig import (
    BUILTIN_DEVICE_CONFIG,
    ConfigWarning,
    LoadedDeviceConfig,
    builtin_device_config,
    builtin_device_config_document,
    device_config_document,
    is_device_config,
    load_device_config,
    load_device_config_text,
    parse_device_config,
)
from .errors import CatalogError
from .templates import DeviceConfig
from .types import Applier, NodeMode
from .yamlsrc import Located, load_file, load_text

__all__ = [
    "BUILTIN_DEVICE_CONFIG", "ConfigWarning", "Inventory", "InventoryNode", "LoadedDeviceConfig", "NodeConfigEntry",
    "builtin_device_config", "builtin_device_config_document", "detect_kind", "device_config_document",
    "load_device_config", "load_device_config_text", "load_inventory", "load_inventory_text", "load_node_config",
    "parse_device_config", "parse_inventory", "parse_node_config",
]


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
        split = loc.non_negative_int(e.get("devicesplitcount", 10), f"{path}.devicesplitcount", "devicesplitcount")
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
        count = loc.non_negative_int(g.get("count", 1), f"{gpath}.count", "count")
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
        cpu_v = None if cpu is None else loc.non_negative_int(cpu, f"{path}.cpu_milli", "cpu_milli")
        mem_v = None if mem is None else loc.non_negative_int(mem, f"{path}.memory_mib", "memory_mib")
        split = loc.non_negative_int(n.get("split", 10), f"{path}.split", "split")
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
        if is_device_config(d):
            return "device-config"
        if "nodeconfig" in d:
            return "nodeconfig"
        if "nodes" in d:
            return "inventory"
    raise loc.error("not a device-config (nvidia:), nodeconfig ({\"nodeconfig\": ...}) or inventory (nodes:)", "")
