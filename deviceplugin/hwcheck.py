"""Read-only NVML probe of the local GPUs, compared with the catalog (``dynamig hwcheck``).

Reads the driver version, GPUs, names, memory, MIG mode and every GPU-instance profile with its memory
and possible placements, and reports where the catalog differs: unknown model, MIG capability,
profile memory (drivers differ, ``reference/mig.md`` §1) and placements. Changes nothing.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from models.catalog import GpuModel, match_nvml_name

from .backend import GiProfile, GpuInfo
from .nvml import NvmlBackend


def _profile_doc(p: GiProfile, m: GpuModel | None) -> dict[str, Any]:
    cat = None
    findings: list[str] = []
    if m is not None:
        found = [c for c in m.profiles if c.gi_profile_id == p.profile_id]
        if not found:
            findings.append(f"profile {p.name} (id {p.profile_id}) is not in the catalog of {m.name}")
        else:
            c = found[0]
            cat = {"name": c.name, "memory_mib": c.memory_mib, "memory_source": c.memory_source,
                   "placements": [[s, c.memory_slices] for s in c.starts], "max_count": c.max_count}
            if c.name != p.name:
                findings.append(f"profile id {p.profile_id}: NVML calls it {p.name}, the catalog {c.name}")
            if c.memory_mib != p.memory_mib:
                delta = p.memory_mib - c.memory_mib
                findings.append(f"{p.name}: NVML reports {p.memory_mib} MiB, the catalog {c.memory_mib} MiB "
                                f"({delta:+d} MiB, catalog value {c.memory_source})")
            nv = sorted(p.placements)
            ct = sorted((s, c.memory_slices) for s in c.starts)
            if nv and nv != ct:
                findings.append(f"{p.name}: NVML placements {_fmt(nv)}, the catalog {_fmt(ct)}")
            if p.max_count and p.max_count != c.max_count:
                findings.append(f"{p.name}: NVML allows {p.max_count} instances, the catalog {c.max_count}")
    return {"name": p.name, "id": p.profile_id, "compute_slices": p.slice_count, "memory_mib": p.memory_mib,
            "max_count": p.max_count, "placements": [list(x) for x in p.placements], "catalog": cat,
            "findings": findings}


def _fmt(pl: list[tuple[int, int]]) -> str:
    return " ".join(f"{s}:{z}" for s, z in pl) or "none"


def gpu_report(g: GpuInfo, profiles: tuple[GiProfile, ...]) -> dict[str, Any]:
    m = match_nvml_name(g.name)
    findings: list[str] = []
    if m is None:
        findings.append(f"{g.name} is not in the catalog: dynamig can use it only in hami-core mode")
    else:
        if m.memory_mib != g.memory_mib:
            findings.append(f"memory: NVML reports {g.memory_mib} MiB, the catalog {m.memory_mib} MiB "
                            f"({g.memory_mib - m.memory_mib:+d} MiB)")
        if m.mig_capable != g.mig_capable:
            findings.append(f"MIG: NVML says {'capable' if g.mig_capable else 'not capable'}, the catalog "
                            f"{'capable' if m.mig_capable else 'not capable'}")
    profs = [_profile_doc(p, m) for p in profiles]
    if m is not None and profiles:
        seen = {p.profile_id for p in profiles}
        for c in m.profiles:
            if c.gi_profile_id not in seen:
                findings.append(f"catalog profile {c.name} (id {c.gi_profile_id}) is not offered by NVML "
                                "(driver too old, or not on this part)")
    if g.mig_pending:
        findings.append("a MIG mode change is pending (GPU reset needed)")
    return {
        "index": g.index, "uuid": g.uuid, "name": g.name, "memory_mib": g.memory_mib,
        "pci_device_id": g.pci_device_id, "mig_capable": g.mig_capable, "mig_enabled": g.mig_enabled,
        "mig_pending": bool(g.mig_pending), "catalog_model": m.name if m else None,
        "instances": [{"profile": d.profile, "start": d.start, "size": d.size, "uuid": d.uuid,
                       "gpu_instance_id": d.gi_id, "compute_instance_id": d.ci_id, "memory_mib": d.memory_mib}
                      for d in g.instances],
        "processes": len(g.processes), "profiles": profs, "findings": findings,
    }


def probe(nvml: ModuleType | Any | None = None) -> dict[str, Any]:
    """The report. Raises :class:`~deviceplugin.backend.GpuBackendError` when there is no driver."""
    backend = NvmlBackend(nvml)
    try:
        driver = backend.driver_version()
        gpus = [gpu_report(g, backend.gi_profiles(g.index) if g.mig_capable else ()) for g in backend.gpus()]
    finally:
        backend.close()
    ok = all(not g["findings"] and all(not p["findings"] for p in g["profiles"]) for g in gpus)
    return {"driver_version": driver, "gpus": gpus, "matches_catalog": ok}


def render_text(report: dict[str, Any]) -> str:
    lines = [f"NVIDIA driver {report['driver_version']}, {len(report['gpus'])} GPU(s)"]
    for g in report["gpus"]:
        mig = ("MIG enabled" if g["mig_enabled"] else "MIG disabled") if g["mig_capable"] else "no MIG"
        lines.append(f"GPU {g['index']}: {g['name']} ({g['uuid']}) {g['memory_mib']} MiB, {mig}; "
                     f"catalog model: {g['catalog_model'] or 'unknown'}")
        for d in g["instances"]:
            lines.append(f"  instance {d['profile']}@{d['start']} {d['uuid']}")
        for p in g["profiles"]:
            tag = "ok" if p["catalog"] is not None and not p["findings"] else "differs"
            lines.append(f"  profile {p['name']:<11} id {p['id']:>2} {p['memory_mib']:>7} MiB "
                         f"placements {_fmt([tuple(x) for x in p['placements']])}  [{tag}]")
            lines.extend(f"    - {f}" for f in p["findings"])
        lines.extend(f"  - {f}" for f in g["findings"])
    lines.append("matches the catalog" if report["matches_catalog"] else "differs from the catalog (see above)")
    return "\n".join(lines)
