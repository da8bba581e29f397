"""``dynamig validate-config``: check device-config, nodeconfig and inventory files."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from models.config import detect_kind, parse_device_config, parse_inventory, parse_node_config
from models.errors import ConfigError
from models.yamlsrc import load_file


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "validate-config", help="check device-config (HAMi's file or ConfigMap, v2.9 knownMigGeometries or "
                                "v2.10 migProfileAllowlist), nodeconfig or inventory files"
    )
    p.add_argument("files", nargs="+", metavar="FILE")
    return p


def check(path: str) -> str:
    loc = load_file(path)
    kind = detect_kind(loc)
    if kind == "device-config":
        loaded = parse_device_config(loc)
        for w in loaded.warnings:
            print(str(w), file=sys.stderr)
        cfg = loaded.config
        n = sum(len(g.geometries) for g in cfg.groups)
        warned = f", {len(loaded.warnings)} warnings" if loaded.warnings else ""
        return (f"{path}: ok (device-config: {len(cfg.groups)} model groups, {n} geometries; {cfg.form}, "
                f"resources {cfg.resources.gpu} {cfg.resources.gpumem}{warned})")
    if kind == "nodeconfig":
        entries = parse_node_config(loc)
        return f"{path}: ok (nodeconfig: {len(entries)} nodes)"
    inv = parse_inventory(loc)
    gpus = sum(c for n in inv.nodes for _, c in n.gpus)
    return f"{path}: ok (inventory: {len(inv.nodes)} nodes, {gpus} GPUs)"


def run(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.files:
        try:
            print(check(path))
        except ConfigError as e:
            print(f"dynamig validate-config: {e}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0
