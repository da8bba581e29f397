"""``dynamig hwcheck``: read-only NVML probe of the local GPUs, compared with the catalog.

Driver version, GPUs, names, memory, MIG mode, GPU-instance profiles with memory and placements;
then where the catalog differs (model, profile memory, placements). Never changes GPU or MIG state.
Exit 0 when the probe ran (differences are reported, not errors), 1 when there is no NVIDIA driver.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from deviceplugin.backend import GpuBackendError
from deviceplugin.hwcheck import probe, render_text


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("hwcheck", help="read-only NVML probe of the local GPUs, compared with the catalog")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    return p


def run(args: argparse.Namespace, nvml: Any = None) -> int:
    try:
        report = probe(nvml)
    except GpuBackendError as e:
        msg = str(e) if str(e).startswith("no NVIDIA driver") else f"no NVIDIA driver: {e}"
        print(f"dynamig hwcheck: {msg}", file=sys.stderr)
        if args.json:
            print(json.dumps({"driver_version": None, "gpus": [], "matches_catalog": False, "error": msg}))
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render_text(report))
    return 0
