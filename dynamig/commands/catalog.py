"""``dynamig catalog``: GPU models, MIG profiles, placements, valid layouts, default templates."""

from __future__ import annotations

import argparse
import json
from typing import Any

from models.catalog import CATALOG, GpuModel, model
from models.config import builtin_device_config
from models.layouts import enumerate_layouts


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("catalog", help="GPU models, MIG profiles, placements, layouts, default templates")
    p.add_argument("--model", help="one model (catalog name or NVML name), e.g. H200")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    return p


def describe(m: GpuModel) -> dict[str, Any]:
    cfg = builtin_device_config()
    doc: dict[str, Any] = {
        "name": m.name,
        "nvml_names": list(m.nvml_patterns),
        "memory_mib": m.memory_mib,
        "memory_source": m.memory_source,
        "mig_capable": m.mig_capable,
        "compute_slices": m.compute_slices,
        "memory_slices": m.memory_slices,
        "profiles": [
            {
                "name": p.name,
                "class": p.klass,
                "gi_profile_id": p.gi_profile_id,
                "compute_slices": p.compute_slices,
                "memory_slices": p.memory_slices,
                "memory_mib": p.memory_mib,
                "memory_source": p.memory_source,
                "core_percent": m.core_percent(p),
                "max_count": p.max_count,
                "placements": [{"start": s, "size": p.memory_slices} for s in p.starts],
            }
            for p in m.profiles
        ],
    }
    if m.mig_capable:
        full = enumerate_layouts(m.name, maximal_only=True)
        doc["layouts"] = {
            "valid": len(enumerate_layouts(m.name)),
            "maximal": [[{"profile": s.profile, "start": s.start} for s in lay] for lay in full],
        }
        doc["default_templates"] = [
            {"index": t.index, "layout": [{"profile": s.profile, "start": s.start} for s in t.layout]}
            for t in cfg.template_layouts(m)
        ]
    return doc


def run(args: argparse.Namespace) -> int:
    chosen = [model(args.model)] if args.model else list(CATALOG)
    if args.json:
        docs = [describe(m) for m in chosen]
        print(json.dumps(docs[0] if args.model else {"models": docs}, indent=2))
        return 0
    for m in chosen:
        d = describe(m)
        mig = f"MIG {m.compute_slices}c/{m.memory_slices}m" if m.mig_capable else "no MIG (hami-core only)"
        print(f"{m.name}  {m.memory_mib} MiB  {mig}  NVML: {', '.join(m.nvml_patterns)}")
        for p in d["profiles"]:
            starts = ",".join(str(x["start"]) for x in p["placements"])
            est = " (estimated)" if p["memory_source"] != "nvml" else ""
            print(f"  {p['name']:<12} {p['compute_slices']}c {p['memory_slices']}m {p['memory_mib']:>7} MiB{est}"
                  f"  {p['core_percent']:>3}%  starts {starts}  max {p['max_count']}")
        if m.mig_capable:
            print(f"  layouts: {d['layouts']['valid']} valid, {len(d['layouts']['maximal'])} maximal")
            for t in d["default_templates"]:
                slots = " + ".join(f"{s['profile']}@{s['start']}" for s in t["layout"])
                print(f"  template {t['index']}: {slots}")
    return 0
