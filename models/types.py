"""Frozen domain values: GPUs, nodes, MIG instances, hami-core shares, the cluster snapshot."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from .catalog import GpuModel, device_name, model
from .layouts import Layout, Slot, make_layout


class NodeMode(StrEnum):
    MIG = "mig"
    HAMI_CORE = "hami-core"


class UnitKind(StrEnum):
    MIG = "mig"
    SHARE = "share"


class Applier(StrEnum):
    """How a MIG node changes a GPU's layout (``models.relayout`` decides what each may do).

    ``mig-parted``: the whole GPU is re-cut (``nvidia-mig-parted apply`` clears every instance), so
    only while none of its instances is held (HAMi <= v2.9; the default). ``nvml``: free instances
    are destroyed and new ones created at explicit placements while held ones keep running.
    """

    MIG_PARTED = "mig-parted"
    NVML = "nvml"


@dataclass(frozen=True)
class MigInstance:
    """One MIG instance of a GPU's current layout; ``holder`` is the unit holding it, or None."""

    slot: Slot
    holder: str | None = None
    uuid: str | None = None  # MIG UUID once realised on the node

    @property
    def free(self) -> bool:
        return self.holder is None


@dataclass(frozen=True)
class ShareUsage:
    """One hami-core unit on a whole GPU."""

    holder: str
    memory_mib: int
    cores: int


@dataclass(frozen=True)
class HostUsage:
    """The host CPU and memory one pod on a node requests (kube-scheduler's NodeResourcesFit view)."""

    pod: str  # namespace/name
    cpu_milli: int
    memory_mib: int


@dataclass(frozen=True)
class Gpu:
    uuid: str
    index: int
    model: str  # catalog model name
    mode: NodeMode
    memory_mib: int
    split: int = 10
    health: bool = True
    instances: tuple[MigInstance, ...] = ()  # mig mode: the current layout, free and held
    shares: tuple[ShareUsage, ...] = ()  # hami-core mode
    nvml_name: str = ""  # the NVML device name the node published ("" = not known)

    @property
    def gpu_model(self) -> GpuModel:
        return model(self.model)

    @property
    def device_name(self) -> str:
        """The NVML device name (HAMi's device ``type``): as published, else the catalog's."""
        return self.nvml_name or device_name(self.gpu_model)

    @property
    def layout(self) -> Layout:
        return make_layout(i.slot for i in self.instances)

    @property
    def busy(self) -> bool:
        return any(not i.free for i in self.instances) or bool(self.shares)

    @property
    def used_memory_mib(self) -> int:
        return sum(s.memory_mib for s in self.shares)

    @property
    def used_cores(self) -> int:
        return sum(s.cores for s in self.shares)

    def instance(self, slot: Slot) -> MigInstance | None:
        for i in self.instances:
            if i.slot == slot:
                return i
        return None

    def with_layout(self, layout: Layout) -> Gpu:
        return replace(self, instances=tuple(MigInstance(s) for s in layout))


@dataclass(frozen=True)
class Node:
    name: str
    mode: NodeMode
    gpus: tuple[Gpu, ...]
    cpu_milli: int | None = None  # allocatable host CPU; None = unknown (not checked)
    memory_mib: int | None = None  # allocatable host memory; None = unknown (not checked)
    labels: tuple[tuple[str, str], ...] = ()
    host: tuple[HostUsage, ...] = ()  # host requests of the pods placed here
    applier: Applier = Applier.MIG_PARTED  # how its MIG GPUs change layout (models.relayout)

    @property
    def cpu_used_milli(self) -> int:
        return sum(h.cpu_milli for h in self.host)

    @property
    def memory_used_mib(self) -> int:
        return sum(h.memory_mib for h in self.host)

    def host_fit_problem(self, cpu_milli: int, memory_mib: int) -> str | None:
        """Why a pod asking for this much host CPU and memory does not fit here (None: it fits)."""
        if cpu_milli and self.cpu_milli is not None and self.cpu_used_milli + cpu_milli > self.cpu_milli:
            return f"host CPU: needs {cpu_milli}m, {self.cpu_milli - self.cpu_used_milli}m free"
        if memory_mib and self.memory_mib is not None and self.memory_used_mib + memory_mib > self.memory_mib:
            return f"host memory: needs {memory_mib} MiB, {self.memory_mib - self.memory_used_mib} MiB free"
        return None

    def gpu(self, uuid: str) -> Gpu:
        for g in self.gpus:
            if g.uuid == uuid:
                return g
        raise KeyError(f"node {self.name} has no GPU {uuid}")


@dataclass(frozen=True)
class ClusterState:
    """A frozen snapshot of every GPU node; the planner's and the validator's input."""

    nodes: tuple[Node, ...]
    layouts_any: bool = False
    _index: dict[str, int] = field(default_factory=dict, compare=False, repr=False, hash=False)

    def __post_init__(self) -> None:
        self._index.update({n.name: i for i, n in enumerate(self.nodes)})

    def node(self, name: str) -> Node:
        try:
            return self.nodes[self._index[name]]
        except KeyError:
            raise KeyError(f"unknown node {name!r}") from None

    def has_node(self, name: str) -> bool:
        return name in self._index

    def gpu(self, node: str, uuid: str) -> Gpu:
        return self.node(node).gpu(uuid)

    def with_nodes(self, nodes: tuple[Node, ...]) -> ClusterState:
        return ClusterState(nodes, self.layouts_any)

    def with_replaced(self, changed: Mapping[str, Node]) -> ClusterState:
        """This state with the nodes named in ``changed`` replaced (same names, same order): one
        tuple copy and the name index shared, not rebuilt, so a plan touching a few of 1,000 nodes
        costs O(touched). ``self`` when nothing changes. Equals ``with_nodes`` of the same tuple."""
        if not changed:
            return self
        if len(self._index) != len(self.nodes):  # duplicate names: positions are ambiguous
            return self.with_nodes(tuple(changed.get(n.name, n) for n in self.nodes))
        nodes = list(self.nodes)
        for name, node in changed.items():
            if node.name != name:
                raise ValueError(f"with_replaced: node {node.name!r} given for {name!r}")
            nodes[self._index[name]] = node  # KeyError: not a node of this state
        out = object.__new__(ClusterState)
        object.__setattr__(out, "nodes", tuple(nodes))
        object.__setattr__(out, "layouts_any", self.layouts_any)
        object.__setattr__(out, "_index", self._index)  # never mutated after construction
        return out


def gpu_uuid(node: str, index: int) -> str:
    """A stable, UUID-shaped identifier for a simulated GPU (real nodes report NVML's)."""
    h = hashlib.sha1(f"{node}/{index}".encode()).hexdigest()
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def mig_uuid(gpu: str, slot: Slot, generation: int = 0) -> str:
    h = hashlib.sha1(f"{gpu}/{slot.profile}/{slot.start}/{generation}".encode()).hexdigest()
    return f"MIG-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
