"""The cluster side of a what-if run: scaling a node list, the seeded node order, and host CPU and
memory, which the planner does not model.

* :func:`scale_nodes` keeps a fraction of the nodes, stratified by node shape (mode, GPUs, CPU,
  host memory) with largest-remainder rounding, the first nodes by name within each shape; the
  result does not depend on the seed, so every seed and policy sees the same cluster.
* :func:`ordered_inventory` renames the nodes ``<rank>-<name>`` by a seeded permutation (README
  §7.2 step 2): the planner breaks ties by node name, so tie-breaking differs per seed as in FGD.
* :class:`Hosts`: free CPU and memory per node; the nodes a pod's host request fits (the
  candidates passed to ``solver.plan(..., nodes=...)``), and the node for a CPU-only pod
  (kube-scheduler's default ``LeastAllocated``: the highest mean free fraction of CPU and memory;
  ties to the first node in the seeded order).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from models.config import Inventory, InventoryNode

__all__ = ["UNLIMITED", "Hosts", "node_shape", "ordered_inventory", "scale_nodes"]

UNLIMITED = 1 << 60
"""CPU or memory of a node that does not state it: never the limit."""


def node_shape(n: InventoryNode) -> tuple[object, ...]:
    return (n.mode.value, n.gpus, n.cpu_milli or 0, n.memory_mib or 0, n.split)


def scale_nodes(nodes: Sequence[InventoryNode], scale: float) -> tuple[InventoryNode, ...]:
    """About ``scale × len(nodes)`` nodes (at least one), each shape kept in proportion."""
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    ordered = sorted(nodes, key=lambda n: n.name)
    if scale == 1 or not ordered:
        return tuple(ordered)
    groups: dict[tuple[object, ...], list[InventoryNode]] = {}
    for n in ordered:
        groups.setdefault(node_shape(n), []).append(n)
    want = max(1, round(scale * len(ordered)))
    exact = {k: scale * len(v) for k, v in groups.items()}
    take = {k: math.floor(x) for k, x in exact.items()}
    rest = want - sum(take.values())
    # largest remainder first; ties: larger group, then shape order
    for k in sorted(groups, key=lambda k: (-(exact[k] - take[k]), -len(groups[k]), repr(k)))[:max(rest, 0)]:
        take[k] += 1
    keep = {n.name for k, v in groups.items() for n in v[:take[k]]}
    return tuple(n for n in ordered if n.name in keep)


def ordered_inventory(inv: Inventory, rng: np.random.Generator) -> Inventory:
    """``inv`` with its nodes renamed ``<rank>-<name>`` by a permutation drawn from ``rng``."""
    nodes = sorted(inv.nodes, key=lambda n: n.name)
    order = rng.permutation(len(nodes))
    width = len(str(max(len(nodes) - 1, 0)))
    renamed = tuple(replace(nodes[i], name=f"{rank:0{width}d}-{nodes[i].name}") for rank, i in enumerate(order))
    return replace(inv, nodes=renamed)


def original_name(name: str) -> str:
    """The node name before :func:`ordered_inventory`."""
    return name.split("-", 1)[1]


class Hosts:
    """Free host CPU (milli) and memory (MiB) per node, nodes in name order."""

    def __init__(self, nodes: Sequence[InventoryNode]) -> None:
        ordered = sorted(nodes, key=lambda n: n.name)
        self.names: list[str] = [n.name for n in ordered]
        self._arr: npt.NDArray[np.object_] = np.array(self.names, dtype=object)
        self.index = {n: i for i, n in enumerate(self.names)}
        self.cpu_cap = np.array([UNLIMITED if n.cpu_milli is None else n.cpu_milli for n in ordered], dtype=np.int64)
        self.mem_cap = np.array([UNLIMITED if n.memory_mib is None else n.memory_mib for n in ordered], dtype=np.int64)
        self.cpu_free = self.cpu_cap.copy()
        self.mem_free = self.mem_cap.copy()

    def fits(self, cpu: int, mem: int) -> npt.NDArray[np.bool_]:
        return (self.cpu_free >= cpu) & (self.mem_free >= mem)  # type: ignore[no-any-return]

    def candidates(self, cpu: int, mem: int) -> list[str] | None:
        """Nodes with room for the host request; None when every node has room."""
        mask = self.fits(cpu, mem)
        if bool(mask.all()):
            return None
        return list(self._arr[mask])

    def least_allocated(self, cpu: int, mem: int) -> str | None:
        """The node for a CPU-only pod (None: no node has room)."""
        mask = self.fits(cpu, mem)
        if not bool(mask.any()):
            return None
        score = (self.cpu_free - cpu) / self.cpu_cap + (self.mem_free - mem) / self.mem_cap
        score = np.where(mask, score, -np.inf)
        return self.names[int(np.argmax(score))]

    def take(self, name: str, cpu: int, mem: int) -> None:
        i = self.index[name]
        self.cpu_free[i] -= cpu
        self.mem_free[i] -= mem
