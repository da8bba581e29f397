"""The GPU catalog: models, MIG profiles and their legal placements, as data.

Facts come from ``reference/mig.md``. Where real NVML profile memory is not known the value is a
conservative estimate (nominal GiB x 0.97, rounded down to 128 MiB) and the profile says so in
``memory_source``; on real nodes the device plugin reports NVML's own numbers.

Profiles are keyed per model by name; names are *not* unique across models (``1g.10gb`` is the
two-memory-slice 1g on A100-40GB but the single-slice 1g on A100-80GB), so nothing compares
profile names across models.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import cache

from .errors import CatalogError

# MIG "class" of a profile: what the placement table keys on.
CLASS_1G = "1g"
CLASS_1G_ME = "1g+me"
CLASS_1G_2MEM = "1g-2mem"
CLASS_2G = "2g"
CLASS_2G_ME = "2g+me"
CLASS_3G = "3g"
CLASS_4G = "4g"
CLASS_7G = "7g"

#: Profile classes used for the default layout enumeration (``reference/mig.md`` §5: the 19 layouts).
STANDARD_CLASSES: frozenset[str] = frozenset({CLASS_1G, CLASS_2G, CLASS_3G, CLASS_4G, CLASS_7G})


@dataclass(frozen=True)
class MigProfile:
    """One GPU-instance profile of one GPU model (one CI spanning the GI)."""

    name: str
    klass: str
    gi_profile_id: int
    compute_slices: int
    memory_slices: int
    memory_mib: int
    starts: tuple[int, ...]
    max_count: int
    memory_source: str = "nvml"  # "nvml" (seen on hardware) or "estimated"

    @property
    def media(self) -> bool:
        return "+me" in self.klass


@dataclass(frozen=True)
class GpuModel:
    """A GPU model. ``compute_slices == 0`` means not MIG-capable (hami-core only)."""

    name: str
    nvml_patterns: tuple[str, ...]
    memory_mib: int
    compute_slices: int
    memory_slices: int
    profiles: tuple[MigProfile, ...]
    memory_source: str = "nvml"

    @property
    def mig_capable(self) -> bool:
        return self.compute_slices > 0

    def profile(self, name: str) -> MigProfile:
        for p in self.profiles:
            if p.name == name:
                return p
        known = ", ".join(p.name for p in self.profiles) or "none (not MIG-capable)"
        raise CatalogError(f"GPU model {self.name} has no MIG profile {name!r}; known: {known}")

    def has_profile(self, name: str) -> bool:
        return any(p.name == name for p in self.profiles)

    def core_percent(self, profile: MigProfile) -> int:
        """Compute share in % of the GPU, as HAMi's templates state it (14/28/42/57/100, 25/50/100)."""
        if profile.compute_slices >= self.compute_slices:
            return 100
        return (100 * profile.compute_slices) // self.compute_slices

    @property
    def full_profile(self) -> MigProfile | None:
        """The profile that spans the whole GPU (7g / 4g), if any."""
        best = [p for p in self.profiles if p.compute_slices == self.compute_slices and not p.media]
        return best[0] if best else None


def _est(gib: float) -> int:
    return int(gib * 1024 * 0.97) // 128 * 128


def _seven(
    mem: dict[str, tuple[str, int]], source: str = "nvml", one_g_2mem: bool = True
) -> tuple[MigProfile, ...]:
    """Profiles of a 7-compute / 8-memory-slice part. ``mem``: class -> (name, MiB)."""
    table = [
        (CLASS_1G, 19, 1, 1, (0, 1, 2, 3, 4, 5, 6), 7),
        (CLASS_1G_ME, 20, 1, 1, (0, 1, 2, 3, 4, 5, 6), 1),
        (CLASS_1G_2MEM, 15, 1, 2, (0, 2, 4, 6), 4),
        (CLASS_2G, 14, 2, 2, (0, 2, 4), 3),
        (CLASS_3G, 9, 3, 4, (0, 4), 2),
        (CLASS_4G, 5, 4, 4, (0,), 1),
        (CLASS_7G, 0, 7, 8, (0,), 1),
    ]
    out = []
    for klass, gid, c, m, starts, mx in table:
        if klass == CLASS_1G_2MEM and not one_g_2mem:
            continue
        if klass == CLASS_1G_ME:
            name, mib = mem[CLASS_1G]
            name += "+me"
        else:
            name, mib = mem[klass]
        out.append(MigProfile(name, klass, gid, c, m, mib, starts, mx, source))
    return tuple(out)


def _four(mem: dict[str, tuple[str, int]], source: str = "nvml", media: bool = True) -> tuple[MigProfile, ...]:
    """Profiles of a 4-compute / 4-memory-slice part (A30 pattern)."""
    table = [
        (CLASS_1G, 14, 1, 1, (0, 1, 2, 3), 4),
        (CLASS_1G_ME, 21, 1, 1, (0, 1, 2, 3), 1),
        (CLASS_2G, 5, 2, 2, (0, 2), 2),
        (CLASS_2G_ME, 6, 2, 2, (0, 2), 1),
        (CLASS_4G, 0, 4, 4, (0,), 1),
    ]
    out = []
    for klass, gid, c, m, starts, mx in table:
        if "+me" in klass and not media:
            continue
        base = klass.replace("+me", "")
        name, mib = mem[base]
        if "+me" in klass:
            name += "+me"
        out.append(MigProfile(name, klass, gid, c, m, mib, starts, mx, source))
    return tuple(out)


def _est_seven(g1: int, g1b: int, g3: int, g7: int) -> dict[str, tuple[str, int]]:
    return {
        CLASS_1G: (f"1g.{g1}gb", _est(g1)),
        CLASS_1G_2MEM: (f"1g.{g1b}gb", _est(g1b)),
        CLASS_2G: (f"2g.{g1b}gb", _est(g1b)),
        CLASS_3G: (f"3g.{g3}gb", _est(g3)),
        CLASS_4G: (f"4g.{g3}gb", _est(g3)),
        CLASS_7G: (f"7g.{g7}gb", _est(g7)),
    }


def _build() -> tuple[GpuModel, ...]:
    a100_40 = _seven(
        {
            CLASS_1G: ("1g.5gb", 4864),
            CLASS_1G_2MEM: ("1g.10gb", 9856),
            CLASS_2G: ("2g.10gb", 9856),
            CLASS_3G: ("3g.20gb", 19968),
            CLASS_4G: ("4g.20gb", 19968),
            CLASS_7G: ("7g.40gb", 40192),
        }
    )
    a100_80 = _seven(
        {
            CLASS_1G: ("1g.10gb", 9728),
            CLASS_1G_2MEM: ("1g.20gb", 19968),
            CLASS_2G: ("2g.20gb", 19968),
            CLASS_3G: ("3g.40gb", 40192),
            CLASS_4G: ("4g.40gb", 40192),
            CLASS_7G: ("7g.80gb", 80896),
        }
    )
    h100_80 = _seven(
        {
            CLASS_1G: ("1g.10gb", 9984),
            CLASS_1G_2MEM: ("1g.20gb", 20096),
            CLASS_2G: ("2g.20gb", 20096),
            CLASS_3G: ("3g.40gb", 40448),
            CLASS_4G: ("4g.40gb", 40448),
            CLASS_7G: ("7g.80gb", 81152),
        }
    )
    h100_94 = _seven(
        {
            CLASS_1G: ("1g.12gb", 11008),
            CLASS_1G_2MEM: ("1g.24gb", 22144),
            CLASS_2G: ("2g.24gb", 22144),
            CLASS_3G: ("3g.47gb", 47488),
            CLASS_4G: ("4g.47gb", 47488),
            CLASS_7G: ("7g.94gb", 95355),
        }
    )
    h200 = _seven(
        {
            CLASS_1G: ("1g.18gb", 16384),
            CLASS_1G_2MEM: ("1g.35gb", 33280),
            CLASS_2G: ("2g.35gb", 33280),
            CLASS_3G: ("3g.71gb", 66816),
            CLASS_4G: ("4g.71gb", 66816),
            CLASS_7G: ("7g.141gb", 143360),
        },
        source="estimated",
    )
    # H200: 2g.35gb and 7g.141gb are NVML readings; the rest are estimates (reference/mig.md §4).
    h200 = tuple(replace(p, memory_source="nvml") if p.klass in (CLASS_2G, CLASS_7G) else p for p in h200)
    gh200 = _seven(_est_seven(12, 24, 48, 96), source="estimated")
    b200 = _seven(_est_seven(23, 45, 90, 180), source="estimated")
    gb200 = _seven(_est_seven(23, 47, 93, 186), source="estimated")
    a30 = _four({CLASS_1G: ("1g.6gb", 5952), CLASS_2G: ("2g.12gb", 11968), CLASS_4G: ("4g.24gb", 24000)})
    rtx6000 = _four(
        {CLASS_1G: ("1g.24gb", _est(24)), CLASS_2G: ("2g.48gb", _est(48)), CLASS_4G: ("4g.96gb", _est(96))},
        source="estimated",
    )
    # Order matters for NVML name matching: more specific patterns first ("GH200" before
    # "H200" before "H20"), since HAMi-style matching is by substring.
    return (
        GpuModel("A30", ("A30",), 24576, 4, 4, a30),
        GpuModel("A100-SXM4-40GB", ("A100-SXM4-40GB", "A100-40GB-PCIe", "A100-PCIE-40GB"), 40960, 7, 8, a100_40),
        GpuModel("A100-SXM4-80GB", ("A100-SXM4-80GB", "A100-80GB-PCIe", "A100-PCIE-80GB"), 81920, 7, 8, a100_80),
        GpuModel("H100-80GB", ("H100-PCIE-80GB", "H100-SXM5-80GB", "H100 80GB HBM3", "H100 PCIe"), 81559, 7, 8,
                 h100_80),
        GpuModel("H100-94GB", ("H100-PCIE-94GB", "H100-SXM5-94GB", "H100 NVL"), 95830, 7, 8, h100_94),
        GpuModel("GH200", ("H100 on GH200", "GH200"), 97871, 7, 8, gh200, memory_source="estimated"),
        GpuModel("H200", ("H200 NVL", "H200-SXM5", "H200"), 143771, 7, 8, h200, memory_source="nvml"),
        GpuModel("H20", ("H20",), 97871, 7, 8, gh200, memory_source="estimated"),
        GpuModel("GB200", ("GB200",), 189471, 7, 8, gb200, memory_source="estimated"),
        GpuModel("B200", ("B200",), 183359, 7, 8, b200, memory_source="estimated"),
        GpuModel("RTX-PRO-6000", ("RTX PRO 6000 Blackwell Server Edition", "RTX PRO 6000"), 97887, 4, 4, rtx6000,
                 memory_source="estimated"),
        # Not MIG-capable: usable only in hami-core mode (and for what-if studies).
        GpuModel("L40S", ("L40S",), 46068, 0, 0, ()),
        GpuModel("L4", ("NVIDIA L4",), 23034, 0, 0, ()),
        GpuModel("A10", ("A10",), 23028, 0, 0, ()),
        GpuModel("T4", ("T4",), 15360, 0, 0, ()),
        GpuModel("V100-32GB", ("V100-SXM2-32GB", "V100-PCIE-32GB", "V100S"), 32768, 0, 0, ()),
        GpuModel("V100-16GB", ("V100",), 16384, 0, 0, ()),
        GpuModel("P100", ("P100",), 16384, 0, 0, ()),
    )


CATALOG: tuple[GpuModel, ...] = _build()
_BY_NAME = {m.name.lower(): m for m in CATALOG}


def models() -> tuple[GpuModel, ...]:
    return CATALOG


def model(name: str) -> GpuModel:
    """Look a model up by catalog name (case-insensitive), else by NVML-name matching."""
    found = _BY_NAME.get(name.lower())
    if found is not None:
        return found
    matched = match_nvml_name(name)
    if matched is not None:
        return matched
    raise CatalogError(f"unknown GPU model {name!r}; known: {', '.join(m.name for m in CATALOG)}")


def match_nvml_name(nvml_name: str, groups: Iterable[GpuModel] = CATALOG) -> GpuModel | None:
    """HAMi's rule: the first model any of whose patterns is a substring of the NVML name.

    HAMi lists ``H20`` before ``H200`` in its default table, so an ``NVIDIA H200`` matches the
    H20 group there; the catalog lists the longer names first to avoid that.
    """
    for m in groups:
        if any(p in nvml_name for p in m.nvml_patterns):
            return m
    return None


def nvml_names(m: GpuModel) -> tuple[str, ...]:
    """The NVML device names a GPU of this model reports (``NVIDIA `` + each pattern)."""
    return tuple(p if p.startswith("NVIDIA") else f"NVIDIA {p}" for p in m.nvml_patterns)


def device_name(m: GpuModel) -> str:
    """One NVML device name that the catalog maps back to ``m``: what a simulated GPU reports, and
    what type matching (HAMi: ``nvidia.com/use-gputype`` against the NVML name) sees when a node did
    not publish its GPUs' real names."""
    names = nvml_names(m)
    for name in names:
        if match_nvml_name(name) is m:
            return name
    return names[0] if names else f"NVIDIA {m.name}"


@cache
def placements(model_name: str, classes: frozenset[str] | None = None) -> tuple[tuple[MigProfile, int], ...]:
    """Every (profile, start) a model allows, optionally limited to some profile classes."""
    m = model(model_name)
    return tuple(
        (p, s) for p in m.profiles if classes is None or p.klass in classes for s in p.starts
    )
