"""HAMi's device-config.yaml, read verbatim: the file as HAMi's chart renders it (v2.9
``knownMigGeometries`` or v2.10 ``migProfileAllowlist``), or the whole ``hami-scheduler-device``
ConfigMap manifest. What HAMi accepts, dynamig accepts; where dynamig reads a value differently it
says so in a warning (file, line, path) instead of rejecting the file (docs/hami-compatibility.md).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache
from typing import Any

from .catalog import GpuModel, model, nvml_names
from .errors import CatalogError, LayoutError
from .layouts import enumerate_layouts, realize
from .resources import DEFAULT_RESOURCES, DEVICE_CONFIG_KEYS, ResourceNames
from .templates import DeviceConfig, Geometry, MigTemplate, ModelGeometries, models_named
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


# --------------------------------------------------------------------------- loading

_GROUPED_HINT = """allowedGeometries is a list of geometries, and each geometry is itself a list of entries
that together form one whole-GPU layout. Write it grouped, for example:
  allowedGeometries:
    - - {name: 1g.10gb, core: 14, memory: 9728, count: 7}
    - - {name: 1g.10gb, core: 14, memory: 9728, count: 1}
      - {name: 2g.20gb, core: 28, memory: 19968, count: 3}"""

#: ``nvidia`` keys of HAMi's NvidiaConfig (v2.9 and v2.10) that dynamig reads as HAMi does (resource
#: names, deviceSplitCount, the MIG tables), or ignores without harm (HAMi-core knobs the device
#: plugin sets itself, webhook knobs): key -> HAMi's chart default.
_IGNORED_KEYS: dict[str, Any] = {
    "overwriteEnv": False,
    "preConfiguredDeviceMemory": 0,
    "deviceMemoryScaling": 1,
    "deviceCoreScaling": 1,
    "enableNumaTopology": False,
    "gpuCorePolicy": "default",
    "libCudaLogLevel": 1,
    "runtimeClassName": "",
    "disableCoreLimit": False,
}
#: Request defaults dynamig applies exactly as HAMi's chart sets them; any other value would change
#: what a pod means, which dynamig does not implement: rejected with the key named.
_FIXED_KEYS: dict[str, int] = {"defaultMemory": 0, "defaultCores": 0, "defaultGPUNum": 1, "memoryFactor": 1}
_TABLE_KEYS = ("knownMigGeometries", "migProfileAllowlist")


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


@cache
def _realisable(model_name: str, counts: tuple[tuple[str, int], ...]) -> str | None:
    """Why a geometry cannot be cut on a model (None: it can)."""
    m = model(model_name)
    for name, _ in counts:
        if not m.has_profile(name):
            known = ", ".join(p.name for p in m.profiles)
            return f"unknown MIG profile {name!r} for {m.name} (known: {known})"
    if not any(n for _, n in counts):
        return "geometry has no instance (all counts are 0)"
    try:
        realize(m, dict(counts))
    except (LayoutError, CatalogError) as err:
        return f"not a layout the MIG placement rules allow on {m.name}: {err}"
    return None


class _Reader:
    """One pass over one document; collects warnings."""

    def __init__(self, loc: Located) -> None:
        self.loc = loc
        self.warnings: list[ConfigWarning] = []
        self.skipped: list[tuple[str, dict[str, str]]] = []  # per geometry: model -> why it cannot be cut

    def warn(self, path: str, message: str) -> None:
        ln = self.loc.line(path)
        where = f"{self.loc.source}:{ln}:{path}" if ln else f"{self.loc.source}:{path}"
        self.warnings.append(ConfigWarning(where, message))

    # ---- settings
    def settings(self, nv: dict[str, Any]) -> tuple[ResourceNames, int | None]:
        loc = self.loc
        names: dict[str, str] = {}
        for key, fld in DEVICE_CONFIG_KEYS.items():
            if key in nv:
                v = nv[key]
                if not isinstance(v, str) or not v.strip() or "/" not in v:
                    raise loc.error(f"{key} must be an extended resource name like 'nvidia.com/gpu', got {v!r}",
                                    f"nvidia.{key}")
                names[fld] = v.strip()
        resources = replace(DEFAULT_RESOURCES, **names)
        if len(set(resources.all)) != 4:
            raise loc.error(f"resource names must differ, got {list(resources.all)}", "nvidia")
        split = None
        if nv.get("deviceSplitCount") is not None:
            split = loc.non_negative_int(nv["deviceSplitCount"], "nvidia.deviceSplitCount", "deviceSplitCount")
            if split < 1:
                raise loc.error("deviceSplitCount must be at least 1", "nvidia.deviceSplitCount")
        for key, default in _FIXED_KEYS.items():
            if key in nv and nv[key] != default:
                raise loc.error(f"{key}: {nv[key]!r} is not supported: dynamig applies HAMi's default {default} "
                                f"(remove the key or set {default})", f"nvidia.{key}")
        for key, default in _IGNORED_KEYS.items():
            if key in nv and nv[key] not in (default, str(default).lower(), None):
                self.warn(f"nvidia.{key}", f"{key}: {nv[key]!r} is read by HAMi only; dynamig ignores it "
                                           "(docs/hami-compatibility.md)")
        known = {*DEVICE_CONFIG_KEYS, "deviceSplitCount", *_FIXED_KEYS, *_IGNORED_KEYS, *_TABLE_KEYS}
        for key in sorted(set(nv) - known):
            self.warn(f"nvidia.{key}", f"unknown key {key!r} (HAMi ignores unknown keys; so does dynamig)")
        return resources, split

    # ---- groups
    def covered(self, names: Any, gpath: str) -> tuple[tuple[str, ...], tuple[GpuModel, ...]]:
        loc = self.loc
        if not isinstance(names, list) or not names:
            raise loc.error("'models' must be a non-empty list of NVML model names", f"{gpath}.models")
        for i, s in enumerate(names):
            if not isinstance(s, str) or not s:
                raise loc.error(f"model names must be non-empty strings, got {s!r}", f"{gpath}.models[{i}]")
        mig = tuple(m for m in models_named(names) if m.mig_capable)
        if not mig:
            self.warn(f"{gpath}.models", f"{names} is part of no known MIG-capable GPU's NVML name (HAMi: a "
                                         "substring of the device name); the group applies to no GPU")
        return tuple(names), mig

    def geometry(self, raw: Any, xpath: str, covered: tuple[GpuModel, ...]) -> Geometry:
        loc = self.loc
        if not isinstance(raw, list) or not raw:
            raise loc.error("a geometry must be a non-empty list of {name, core, memory, count}", xpath)
        entries = []
        for ei, e in enumerate(raw):
            epath = f"{xpath}[{ei}]"
            if not isinstance(e, dict):
                raise loc.error("an entry must be a mapping {name, core, memory, count}", epath)
            unknown = set(e) - {"name", "core", "memory", "count"}
            if unknown:
                self.warn(epath, f"unknown field(s) {sorted(unknown)} (HAMi ignores them; so does dynamig)")
            name = e.get("name")
            if not isinstance(name, str) or not name:
                raise loc.error(f"'name' must be a profile name, got {name!r}", f"{epath}.name")
            memory = loc.non_negative_int(e.get("memory", 0), f"{epath}.memory", "memory")
            count = loc.non_negative_int(e.get("count", 0), f"{epath}.count", "count")
            core = loc.non_negative_int(e.get("core", 0), f"{epath}.core", "core")
            if core > 100:
                raise loc.error(f"core is a percentage of the GPU, got {core}", f"{epath}.core")
            entries.append(MigTemplate(name, memory, count, core))
        geo = Geometry(tuple(entries))
        counts = tuple(sorted(geo.counts().items()))
        why = {m.name: _realisable(m.name, counts) for m in covered}
        ok = [m for m in covered if why[m.name] is None]
        if covered and not ok:
            first = why[covered[0].name] or ""
            path = xpath
            if first.startswith("unknown MIG profile"):
                bad = next(i for i, e in enumerate(entries) if not covered[0].has_profile(e.name))
                path = f"{xpath}[{bad}].name"
            raise loc.error(first if len(covered) == 1 else "; ".join(f"{w}" for w in why.values() if w), path)
        self.skipped.append((xpath, {m.name: w for m, w in zip(covered, why.values(), strict=True) if w}))
        for m in ok:
            for ei, e in enumerate(entries):
                p = m.profile(e.name)
                if e.memory != p.memory_mib:
                    more = ("dynamig fits requests against the real size (HAMi #1054)" if e.memory > p.memory_mib
                            else "dynamig fits requests against the real size (HAMi books the declared one)")
                    self.warn(f"{xpath}[{ei}].memory", f"{e.name} declares {e.memory} MiB but the instance has "
                                                       f"{p.memory_mib} MiB on {m.name}; {more}")
                real_core = m.core_percent(p)
                if "core" in raw[ei] and e.core != real_core:
                    self.warn(f"{xpath}[{ei}].core", f"{e.name} declares core {e.core} but the instance has "
                                                     f"{real_core}% of {m.name}'s SMs; dynamig uses {real_core}")
        return geo

    def known_geometries(self, groups_raw: Any, path: str) -> tuple[ModelGeometries, ...]:
        loc = self.loc
        if not isinstance(groups_raw, list):
            raise loc.error(f"{path.rsplit('.', 1)[-1]} must be a list", path)
        groups: list[ModelGeometries] = []
        seen: dict[str, str] = {}
        for gi, graw in enumerate(groups_raw):
            gpath = f"{path}[{gi}]"
            if not isinstance(graw, dict):
                raise loc.error("each item must be a mapping with 'models' and 'allowedGeometries'", gpath)
            names, covered = self.covered(graw.get("models"), gpath)
            self._duplicates(names, gpath, seen)
            geos_raw = graw.get("allowedGeometries")
            if not isinstance(geos_raw, list) or not geos_raw:
                raise loc.error("'allowedGeometries' must be a non-empty list of geometries",
                                f"{gpath}.allowedGeometries")
            if any(isinstance(x, dict) for x in geos_raw):
                raise loc.error("flat list of entries found; " + _GROUPED_HINT, f"{gpath}.allowedGeometries")
            self.skipped = []
            geos = tuple(self.geometry(x, f"{gpath}.allowedGeometries[{xi}]", covered)
                         for xi, x in enumerate(geos_raw))
            for m in covered:
                bad = [(xp, why[m.name]) for xp, why in self.skipped if m.name in why]
                if len(bad) == len(geos):
                    hit = next(n for n in names if any(n in x for x in nvml_names(m)))
                    self.warn(f"{gpath}.models", f"{hit!r} is also part of {m.name}'s NVML name, but no geometry "
                                                 f"here can be cut on a {m.name}: HAMi would apply this group to "
                                                 "it and fail; dynamig passes it over for that model")
                else:
                    for xp, w in bad:
                        self.warn(xp, f"{w}: {m.name} GPUs skip this geometry (HAMi would try to apply it)")
            groups.append(ModelGeometries(names, geos))
        return tuple(groups)

    def allowlist(self, groups_raw: Any, path: str) -> tuple[ModelGeometries, ...]:
        """v2.10: allowed profile names per group. dynamig offers every maximal layout of the
        allowed profiles, finest first (HAMi v2.10 takes the smallest allowed profile that fits)."""
        loc = self.loc
        if not isinstance(groups_raw, list):
            raise loc.error("migProfileAllowlist must be a list", path)
        groups: list[ModelGeometries] = []
        seen: dict[str, str] = {}
        for gi, graw in enumerate(groups_raw):
            gpath = f"{path}[{gi}]"
            if not isinstance(graw, dict):
                raise loc.error("each item must be a mapping with 'models' and 'profiles'", gpath)
            profiles = graw.get("profiles")
            if not isinstance(profiles, list) or not profiles or not graw.get("models"):
                raise loc.error("MIG profile allowlist must define models and profiles", gpath)
            names, covered = self.covered(graw.get("models"), gpath)
            self._duplicates(names, gpath, seen)
            for pi, prof in enumerate(profiles):
                head = str(prof).split(".", 1)
                if not isinstance(prof, str) or len(head) != 2 or len(head[0]) < 2 or not head[0].endswith("g"):
                    raise loc.error(f"invalid MIG profile {prof!r} (HAMi: <N>g.<memory>gb)", f"{gpath}.profiles[{pi}]")
            for m in covered:
                allowed = {p for p in profiles if m.has_profile(p)}
                for pi, prof in enumerate(profiles):
                    if prof not in allowed:
                        self.warn(f"{gpath}.profiles[{pi}]", f"{prof!r} is not a MIG profile of {m.name}; "
                                                             "HAMi never offers it there, nor does dynamig")
                if not allowed:
                    continue
                classes = frozenset(m.profile(p).klass for p in allowed)
                maximal = sorted({tuple(sorted(_count(lay).items()))
                                  for lay in enumerate_layouts(m.name, classes, maximal_only=True)})
                maximal.sort(key=lambda c: (max(m.profile(p).memory_slices for p, _ in c), -sum(n for _, n in c), c))
                geos = tuple(Geometry(tuple(MigTemplate(p, m.profile(p).memory_mib, n, m.core_percent(m.profile(p)))
                                            for p, n in sorted(c, key=lambda x: m.profile(x[0]).memory_mib)))
                             for c in maximal)
                groups.append(ModelGeometries(names, geos))
        return tuple(groups)

    def _duplicates(self, names: tuple[str, ...], gpath: str, seen: dict[str, str]) -> None:
        for i, s in enumerate(names):
            if s in seen:
                self.warn(f"{gpath}.models[{i}]", f"duplicate model {s!r}: already listed at {seen[s]} "
                                                  "(the first group that matches wins, as in HAMi)")
            else:
                seen[s] = f"{gpath}.models"


def _count(lay: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in lay:
        out[s.profile] = out.get(s.profile, 0) + 1
    return out


def _unwrap_configmap(loc: Located) -> Located:
    """The device-config.yaml inside a ConfigMap manifest, with line numbers of the outer file."""
    data = loc.data
    if not (isinstance(data, dict) and data.get("kind") == "ConfigMap"):
        return loc
    files = data.get("data")
    text = files.get("device-config.yaml") if isinstance(files, dict) else None
    if not isinstance(text, str):
        raise loc.error("ConfigMap has no data key 'device-config.yaml' (HAMi's hami-scheduler-device "
                        "ConfigMap has one)", "data")
    inner = load_text(text, loc.source)
    offset = loc.line("data.device-config.yaml") or 0  # the key's line: a block scalar starts below it
    return Located(inner.data, {k: v + offset for k, v in inner.lines.items()}, loc.source)


def parse_device_config(loc: Located) -> LoadedDeviceConfig:
    """Parse and validate HAMi's device-config (file or ConfigMap manifest)."""
    loc = _unwrap_configmap(loc)
    data = loc.data
    if not isinstance(data, dict) or not isinstance(data.get("nvidia"), dict):
        raise loc.error("expected a mapping with key 'nvidia' holding 'knownMigGeometries' or "
                        "'migProfileAllowlist' (or a ConfigMap with data 'device-config.yaml')", "nvidia")
    nv = data["nvidia"]
    r = _Reader(loc)
    resources, split = r.settings(nv)
    present = [k for k in _TABLE_KEYS if nv.get(k) is not None]
    if len(present) == 2:
        raise loc.error("set knownMigGeometries (HAMi <= v2.9) or migProfileAllowlist (v2.10), not both",
                        "nvidia.migProfileAllowlist")
    form = present[0] if present else "knownMigGeometries"
    if not present:
        r.warn("nvidia", "no knownMigGeometries or migProfileAllowlist: GPUs in mode mig get no MIG layouts")
        groups: tuple[ModelGeometries, ...] = ()
    elif form == "knownMigGeometries":
        groups = r.known_geometries(nv[form], f"nvidia.{form}")
    else:
        groups = r.allowlist(nv[form], f"nvidia.{form}")
    return LoadedDeviceConfig(DeviceConfig(groups, resources, split, form), tuple(r.warnings))


def load_device_config(path: str) -> LoadedDeviceConfig:
    return parse_device_config(load_file(path))


def load_device_config_text(text: str, source: str = "<string>") -> LoadedDeviceConfig:
    return parse_device_config(load_text(text, source))


def is_device_config(data: Any) -> bool:
    """A device-config document, or a ConfigMap manifest that carries one."""
    if not isinstance(data, dict):
        return False
    if "nvidia" in data:
        return True
    return data.get("kind") == "ConfigMap" and isinstance(data.get("data"), dict) and \
        "device-config.yaml" in data["data"]
