"""The pods of a what-if run.

A :class:`Job` is one pod as the runner sees it: host CPU and memory (checked by the runner, since
the planner models GPUs only), its GPU demand in milli-GPU (for the arrived-load axis of the FGD
protocol), and its :class:`PodRequest` (None for a CPU-only pod).

Sources: the openb CSV (tuned with :func:`solver.fgd.workload.shuffle_and_tune`, the FGD protocol
itself, then mapped by :mod:`.mapping`), or Pod manifests in YAML (:func:`load_pod_yaml`; tuned
with :func:`shuffle_and_tune_jobs`, the same algorithm on jobs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from models import quantity
from models.errors import ConfigError, DynamigError
from models.requests import ContainerRequest, PodRequest, parse_pod
from models.yamlsrc import load_pod_manifests
from solver.fgd.workload import SimPod
from solver.openb import MILLI_PER_GPU

from .mapping import openb_request

__all__ = ["Job", "job_demand", "jobs_from_openb", "load_pod_yaml", "parse_quantity", "shuffle_and_tune_jobs"]


@dataclass(frozen=True, slots=True)
class Job:
    name: str
    cpu: int  # milli-cores
    mem: int  # MiB
    demand: int  # GPU demand, milli-GPU (num_gpu × per-GPU milli)
    request: PodRequest | None  # None: CPU-only
    unit_milli: int = 0  # per-GPU milli (the tuning stop test uses it, as upstream)

    def copy_with_suffix(self, suffix: str) -> Job:
        """A copy named ``<name><suffix>`` (its request too)."""
        req = None if self.request is None else replace(self.request, name=self.request.name + suffix)
        return replace(self, name=self.name + suffix, request=req)


def jobs_from_openb(pods: Sequence[SimPod], ref_memory_mib: int | None) -> list[Job]:
    """Openb pods (already shuffled and tuned) as jobs, in the same order."""
    return [Job(p.name, p.cpu, p.mem, p.demand, openb_request(p, ref_memory_mib), p.milli) for p in pods]


def _unit_milli(c: ContainerRequest, ref_memory_mib: int) -> int:
    if c.memory_mib is None and c.memory_percent is None:
        return MILLI_PER_GPU  # HAMi: no memory request means 100 % of the memory
    mem = c.memory_percent * 10 if c.memory_percent is not None else math.ceil(
        (c.memory_mib or 0) * MILLI_PER_GPU / ref_memory_mib)
    return min(MILLI_PER_GPU, max(mem, c.cores * 10))


def job_demand(req: PodRequest | None, ref_memory_mib: int) -> tuple[int, int]:
    """(total, per-unit maximum) GPU demand in milli-GPU of a request: per unit the larger of its
    memory fraction (of ``ref_memory_mib``) and its compute share, capped at one GPU; a unit with
    neither memory nor cores is a whole GPU."""
    if req is None:
        return 0, 0
    units = [(c.count, _unit_milli(c, ref_memory_mib)) for c in req.containers if c.count]
    return sum(n * u for n, u in units), max((u for _, u in units), default=0)


def parse_quantity(value: Any, where: str) -> float:
    """A Kubernetes quantity (``500m``, ``2``, ``5600Mi``, ``4Gi``) as a number (models.quantity)."""
    try:
        return float(quantity.parse_quantity(value))
    except quantity.QuantityError:
        raise ConfigError(f"expected a Kubernetes quantity (e.g. 500m, 2, 4Gi), got {value!r}", where) from None


def _host_requests(manifest: dict[str, Any], where: str) -> tuple[int, int]:
    """(CPU milli, memory MiB) a pod requests: max(sum over app containers, max over init ones)."""
    spec = manifest.get("spec") or {}

    def one(c: dict[str, Any], i: int) -> tuple[int, int]:
        res = c.get("resources") or {}
        req = dict(res.get("limits") or {})
        req.update(res.get("requests") or {})  # requests default to limits
        here = f"{where}.containers[{i}].resources"
        cpu = parse_quantity(req["cpu"], f"{here}.cpu") if "cpu" in req else 0.0
        mem = parse_quantity(req["memory"], f"{here}.memory") if "memory" in req else 0.0
        return math.ceil(cpu * 1000), math.ceil(mem / 2.0**20)

    app = [one(c, i) for i, c in enumerate(spec.get("containers") or [])]
    init = [one(c, i) for i, c in enumerate(spec.get("initContainers") or [])]
    cpu = max(sum(a[0] for a in app), max((x[0] for x in init), default=0))
    mem = max(sum(a[1] for a in app), max((x[1] for x in init), default=0))
    return cpu, mem


def load_pod_yaml(path: str, ref_memory_mib: int) -> list[Job]:
    """Jobs from Pod manifests (one or many YAML documents; ``kind: List`` items unpacked).

    GPU requests as :func:`models.requests.parse_pod` reads them; CPU and memory from the
    containers' requests (limits when no request). ``ref_memory_mib`` turns ``gpumem`` into a
    milli-GPU demand (see :func:`job_demand`). Raises :class:`ConfigError` naming the file.
    """
    manifests = load_pod_manifests(path)
    jobs: list[Job] = []
    seen: set[str] = set()
    for i, m in enumerate(manifests):
        try:
            req = parse_pod(m)
        except DynamigError as e:
            raise ConfigError(str(e), path) from e
        if req.key in seen:
            raise ConfigError(f"duplicate pod {req.key}", path, f"pod {i + 1}")
        seen.add(req.key)
        cpu, mem = _host_requests(m, f"{path}: pod {req.key}")
        gpu_req = req if req.wants_gpu else None
        total, unit = job_demand(gpu_req, ref_memory_mib)
        jobs.append(Job(req.key, cpu, mem, total, gpu_req, unit))
    if not jobs:
        raise ConfigError("no Pod manifests", path)
    return jobs


def shuffle_and_tune_jobs(jobs: Sequence[Job], capacity_milli: int, ratio: float,
                          rng: np.random.Generator) -> list[Job]:
    """:func:`solver.fgd.workload.shuffle_and_tune` on jobs: sort by name, shuffle; then tune the
    total demand to ``ratio ×`` capacity (copies ``<name>-tuned-<i>`` drawn with replacement, or
    random removals). ``ratio <= 0``: shuffle only."""
    originals = sorted(jobs, key=lambda j: j.name)
    out = [originals[i] for i in rng.permutation(len(originals))]
    if ratio <= 0 or not originals:
        return out
    target = ratio * float(capacity_milli)
    total = sum(j.demand for j in out)
    if total <= 0:
        raise ValueError("cannot tune a workload without GPU demand to the GPU capacity")
    if total < target:
        i = 0
        while True:
            src = originals[int(rng.integers(len(originals)))]
            if total + src.unit_milli > target:
                break
            total += src.demand
            out.append(src.copy_with_suffix(f"-tuned-{i}"))
            i += 1
    else:
        while total > target:
            total -= out.pop(int(rng.integers(len(out)))).demand
    return out
