"""A pod's request reduced to what placement depends on (its *shape*), and per-model unit demands.

Two pods with the same shape get the same per-node answers, so per-node results are cached by shape.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.catalog import GpuModel, MigProfile
from models.requests import ContainerRequest, PodRequest, mig_unit_memory, profile_serves
from models.types import Gpu, NodeMode


@dataclass(frozen=True)
class Shape:
    containers: tuple[tuple[int, int | None, int | None, int], ...]  # (count, MiB, percent, cores)
    modes: frozenset[NodeMode]
    use_types: tuple[str, ...]
    nouse_types: tuple[str, ...]
    use_uuids: tuple[str, ...]
    nouse_uuids: tuple[str, ...]
    node_policy: str
    gpu_policy: str
    host: tuple[int, int] = (0, 0)  # (host CPU milli, host memory MiB): checked per node

    @property
    def node_free(self) -> Shape:
        """The shape without the node policy and the host request: per-node GPU answers depend on
        neither (host fit and the host terms are checked per node, outside the cached answer)."""
        return Shape(self.containers, self.modes, self.use_types, self.nouse_types, self.use_uuids,
                     self.nouse_uuids, "", self.gpu_policy)

    @property
    def counts(self) -> tuple[int, ...]:
        return tuple(c[0] for c in self.containers)

    @property
    def filter_key(self) -> tuple[object, ...]:
        """What class-level GPU eligibility depends on (UUID filters are per GPU)."""
        return (self.modes, self.use_types, self.nouse_types)

    @property
    def uuid_filtered(self) -> bool:
        return bool(self.use_uuids or self.nouse_uuids)


def shape_of(pod: PodRequest) -> Shape:
    return Shape(
        tuple((c.count, c.memory_mib, c.memory_percent, c.cores) for c in pod.containers if c.count > 0),
        pod.modes, pod.use_types, pod.nouse_types, pod.use_uuids, pod.nouse_uuids, pod.node_policy, pod.gpu_policy,
        (pod.cpu_milli, pod.host_memory_mib),
    )


def gpu_containers(pod: PodRequest) -> tuple[ContainerRequest, ...]:
    """The containers that ask for GPUs, in the order of :attr:`Shape.containers`."""
    return tuple(c for c in pod.containers if c.count > 0)


_MIG_TOTAL: dict[str, int] = {}


def mig_demand(c: ContainerRequest, m: GpuModel) -> tuple[int, int]:
    """(memory MiB, cores %) one unit of ``c`` needs from a MIG instance of model ``m``."""
    if c.memory_mib is not None:
        return c.memory_mib, c.cores
    total = _MIG_TOTAL.get(m.name)
    if total is None:
        total = mig_unit_memory(ContainerRequest("", 0, 1, None, 100, 0), m)
        _MIG_TOTAL[m.name] = total
    return c.memory_for(total), c.cores


def share_demand(c: ContainerRequest, g: Gpu) -> tuple[int, int]:
    return c.memory_for(g.memory_mib), c.cores


def serves(m: GpuModel, p: MigProfile, c: ContainerRequest) -> bool:
    return profile_serves(m, p, c)


_SERVE: dict[tuple[str, int, int], frozenset[str]] = {}


def serving(m: GpuModel, c: ContainerRequest) -> frozenset[str]:
    """The profiles of ``m`` whose instances serve one unit of ``c`` (cached per demand)."""
    mem, cores = mig_demand(c, m)
    key = (m.name, mem, cores)
    got = _SERVE.get(key)
    if got is None:
        got = frozenset(p.name for p in m.profiles if profile_serves(m, p, c))
        _SERVE[key] = got
    return got
