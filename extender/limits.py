"""Bounds on the work one request may cause (issue 15, finding 5).

Checked before anything expensive runs: the body size while it streams in (``app``), the JSON
nesting depth right after decoding, and the shape of the Pod (containers per pod, GPU units per
container) before it is parsed into units and planned. Each violation is one sentence naming the
limit, answered with a 4xx by the HTTP layer (or as the filter's reason for every node).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from models.requests import RES_GPU


def depth_exceeds(doc: Any, limit: int) -> bool:
    """True when ``doc`` nests objects/lists deeper than ``limit`` (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        obj, d = stack.pop()
        if isinstance(obj, dict):
            if d > limit:
                return True
            stack.extend((v, d + 1) for v in obj.values() if isinstance(v, (dict, list)))
        elif isinstance(obj, list):
            if d > limit:
                return True
            stack.extend((v, d + 1) for v in obj if isinstance(v, (dict, list)))
    return False


def _units(value: Any) -> int | None:
    """The integer a ``nvidia.com/gpu`` quantity names (None when it is not one: parse_pod says why)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        s = value.strip()
        if s.isdigit():
            return int(s)
        if s.endswith("k") and s[:-1].isdigit():
            return int(s[:-1]) * 1000
    return None


def pod_limit_problem(pod: Mapping[str, Any], max_units: int, max_containers: int) -> str | None:
    """Why ``pod`` exceeds the request limits, or None. ``pod`` has passed ``wire.check_pod_shape``."""
    meta = pod.get("metadata") or {}
    key = f"{meta.get('namespace') or 'default'}/{meta.get('name') or meta.get('generateName') or '?'}"
    spec = pod.get("spec") or {}
    containers = [c for part in ("initContainers", "containers") for c in (spec.get(part) or [])
                  if isinstance(c, dict)]
    if len(containers) > max_containers:
        return (f"pod {key} has {len(containers)} containers; dynamig accepts at most {max_containers} "
                "(init containers included)")
    for c in containers:
        res = c.get("resources") or {}
        for part in ("limits", "requests"):
            vals = res.get(part) if isinstance(res, dict) else None
            if not isinstance(vals, dict) or RES_GPU not in vals:
                continue
            n = _units(vals[RES_GPU])
            if n is not None and n > max_units:
                return (f"pod {key} container {str(c.get('name') or '?')!r} asks for {n} {RES_GPU} units "
                        f"({part}); dynamig accepts at most {max_units} per container")
    return None
