"""Per-node summaries (GPU classes with counts), cached by node identity.

``models.apply_plan`` keeps every untouched ``Node`` object as it is, so after a placement only the
touched node is summarised again; everything else is a dictionary lookup.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from models.types import Applier, Gpu, Node

from .context import ClassInfo, Context, gpu_class_key
from .costs import PERMILLE

T = TypeVar("T")
K = TypeVar("K")


class IdentityCache(Generic[K, T]):
    """Values keyed by an object's identity; an entry goes when its object is collected."""

    def __init__(self) -> None:
        self._data: dict[int, tuple[weakref.ref[Any], T]] = {}

    def get(self, obj: K) -> T | None:
        hit = self._data.get(id(obj))
        if hit is not None and hit[0]() is obj:
            return hit[1]
        return None

    def put(self, obj: K, value: T) -> None:
        oid = id(obj)
        data = self._data

        def gone(_: weakref.ref[Any], oid: int = oid) -> None:
            cur = data.get(oid)
            if cur is not None and cur[0]() is None:
                del data[oid]

        data[oid] = (weakref.ref(obj, gone), value)

    def __len__(self) -> int:
        return len(self._data)


@dataclass
class GpuGroup:
    info: ClassInfo
    gpus: tuple[Gpu, ...]  # sorted by index


@dataclass
class NodeView:
    node: Node
    groups: tuple[GpuGroup, ...]
    usage: int  # mean GPU usage, per-mille
    results: dict[Any, Any] = field(default_factory=dict)  # per-shape node results
    _free_gpu: int | None = None
    _signature: tuple[tuple[int, int], ...] | None = None

    @property
    def signature(self) -> tuple[tuple[int, int], ...]:
        """(class id, GPU count) per group: nodes with equal signatures answer alike."""
        if self._signature is None:
            self._signature = tuple((gr.info.uid, len(gr.gpus)) for gr in self.groups)
        return self._signature

    def free_gpu(self, ctx: Context) -> int:
        """Free GPU capacity of the node, per-mille (the stranding term's ``G``)."""
        if self._free_gpu is None:
            from .objective.fragmentation import node_free_gpu

            self._free_gpu = node_free_gpu(ctx, self.node)
        return self._free_gpu


def node_view(ctx: Context, node: Node) -> NodeView:
    cache = ctx.cache.get("views")
    if cache is None:
        cache = IdentityCache()
        ctx.cache["views"] = cache
    v = cache.get(node)
    if v is None:
        v = build_view(ctx, node)
        cache.put(node, v)
    return v


def build_view(ctx: Context, node: Node, split: Callable[[Gpu], object] | None = None) -> NodeView:
    by_key: dict[tuple[Any, ...], list[Gpu]] = {}
    infos: dict[tuple[Any, ...], ClassInfo] = {}
    partial = node.applier is Applier.NVML  # busy GPUs may change in part (models.relayout)
    for g in sorted(node.gpus, key=lambda g: g.index):
        key = gpu_class_key(g, partial)
        if split is not None:
            key = (*key, split(g))
        by_key.setdefault(key, []).append(g)
        if key not in infos:
            infos[key] = ctx.class_info(key, g)
    groups = tuple(GpuGroup(infos[k], tuple(gs)) for k, gs in by_key.items())
    total = sum(gr.info.usage * len(gr.gpus) for gr in groups)
    usage = total // len(node.gpus) if node.gpus else PERMILLE
    return NodeView(node, groups, usage)
