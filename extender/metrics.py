"""Prometheus metrics on their own registry (served on their own port).

HAMi's current names (``reference/hami.md`` §11; every HAMi gauge has ``zone="vGPU"``) in the label
set of HAMi v2.9 or v2.10 (``hami_version``), the legacy camelCase names behind ``legacy_metrics``,
and dynamig's own: filter latency, per-stage solve
time, reconfigurations, fragmentation and unplaceable pods. Gauges are computed at scrape time
from the current cluster state (a collector), so they never drift from the annotations.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric, UnknownMetricFamily
from prometheus_client.registry import Collector

from models.plan import Plan
from models.requests import pod_of_holder
from models.templates import DeviceConfig
from models.types import ClusterState, Gpu, NodeMode

if TYPE_CHECKING:
    from .core import Extender, FilterOutcome

MIB = 1 << 20
ZONE = "vGPU"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class GpuUsage:
    total_mib: int
    used_mib: int
    used_cores: int
    units: int


def gpu_usage(g: Gpu) -> GpuUsage:
    if g.mode is NodeMode.MIG:
        gm = g.gpu_model
        held = [i for i in g.instances if i.holder]
        mem = sum(gm.profile(i.slot.profile).memory_mib for i in held)
        cores = sum(gm.core_percent(gm.profile(i.slot.profile)) for i in held)
        return GpuUsage(g.memory_mib, mem, min(100, cores), len(held))
    return GpuUsage(g.memory_mib, g.used_memory_mib, g.used_cores, len(g.shares))


#: Core capacity of every GPU: dynamig schedules hami-core shares and MIG compute shares against
#: 100 % of a GPU (HAMi's Totalcore with deviceCoreScaling 1; other scalings are not supported).
CORE_LIMIT = 100


def device_type(g: Gpu) -> str:
    """HAMi's ``device_type``: the NVML device name the node registered (``NVIDIA A100-PCIE-40GB``)."""
    return g.device_name


def fragmentation_ratio(state: ClusterState) -> float:
    """Share of free GPU memory that no single new unit can reach: free memory minus, per GPU, the
    largest unit it could still grant (an idle MIG GPU can be re-partitioned to its whole-GPU
    instance; a busy one only offers its free instances; a shared GPU offers its free memory while
    it has a free share and cores), over all free memory. 0 = no stranded memory."""
    free_total = 0
    reachable = 0
    for n in state.nodes:
        for g in n.gpus:
            if not g.health:
                continue
            if g.mode is NodeMode.MIG:
                gm = g.gpu_model
                if not gm.mig_capable:
                    continue
                full = gm.full_profile.memory_mib if gm.full_profile else g.memory_mib
                if not g.busy:
                    free_total += full
                    reachable += full
                    continue
                slice_mib = full // max(1, gm.memory_slices)
                used_slices = sum(gm.profile(i.slot.profile).memory_slices for i in g.instances)
                free_inst = [gm.profile(i.slot.profile).memory_mib for i in g.instances if i.free]
                free_total += sum(free_inst) + max(0, gm.memory_slices - used_slices) * slice_mib
                reachable += max(free_inst, default=0)
            else:
                free = max(0, g.memory_mib - g.used_memory_mib)
                free_total += free
                usable = len(g.shares) < g.split and g.used_cores < 100 and not any(s.cores >= 100 for s in g.shares)
                reachable += free if usable else 0
    if free_total <= 0:
        return 0.0
    return max(0.0, 1.0 - reachable / free_total)


class StateCollector(Collector):
    def __init__(self, extender: Extender, legacy: bool, hami_version: str = "v2.9") -> None:
        self.extender = extender
        self.legacy = legacy
        self.hami_version = hami_version
        _Families(False, hami_version)  # a bad version fails here, at start-up, not at scrape time

    def describe(self) -> list[Metric]:
        return []  # computed at scrape time; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        cfg = self.extender.config
        snap = self.extender.snapshot()
        state = snap.state
        new = _Families(False, self.hami_version)
        old = _Families(True, self.hami_version) if self.legacy else None
        for fams in (new, old):
            if fams is None:
                continue
            for n in state.nodes:
                for g in n.gpus:
                    fams.gpu(n.name, g)
            fams.vgpu(state, cfg.templates)
            yield from fams.all()
        # HAMi registers its build info outside the zone="vGPU" wrapper: no zone label here either
        info = GaugeMetricFamily("hami_build_info", "Build information of the dynamig extender (HAMi-compatible).",
                                 labels=["version", "revision", "build_date", "go_version", "compiler", "platform"])
        info.add_metric([cfg.version, cfg.revision, cfg.build_date, f"python{platform.python_version()}",
                         platform.python_implementation(), f"{sys.platform}/{platform.machine()}"], 1)
        yield info
        frag = GaugeMetricFamily("dynamig_fragmentation_ratio",
                                 "Share of free GPU memory that no single new unit can reach (0..1).")
        frag.add_metric([], fragmentation_ratio(state))
        yield frag
        un = GaugeMetricFamily("dynamig_unplaceable_pods",
                               "GPU pods whose last filter found no node and that are still pending.")
        un.add_metric([], len(self.extender.unplaceable()))
        yield un
        probs = GaugeMetricFamily("dynamig_state_problems",
                                  "Annotations that could not be honoured when rebuilding the cluster state.")
        probs.add_metric([], len(snap.problems))
        yield probs


#: HAMi scheduler metric label sets (``cmd/scheduler/metrics.go``), selectable because dashboards
#: built on one release break on the other: v2.10 dropped ``shared_containers`` from the overview,
#: added ``device_type`` to the memory ratio and made the MIG gauge one series per realised instance.
HAMI_VERSIONS = ("v2.9", "v2.10")


class _Families:
    """One naming scheme (current hami_* or legacy camelCase) of the HAMi gauges, in the label set
    of one HAMi release."""

    def __init__(self, legacy: bool, version: str = "v2.9") -> None:
        if version not in HAMI_VERSIONS:
            raise ValueError(f"HAMi metrics version must be one of {', '.join(HAMI_VERSIONS)}, got {version!r}")
        self.legacy = legacy
        self.v210 = version == "v2.10"
        self.shared: GaugeMetricFamily | UnknownMetricFamily
        z = ["zone"]
        if legacy:
            dev = ["nodeid", "deviceuuid", "deviceidx", "devicetype", *z]
            over = ["nodeid", "deviceuuid", "deviceidx", "devicecores", *([] if self.v210 else ["sharedcontainers"]),
                    "devicememorylimit", "devicetype", *z]
            self.mem_limit = GaugeMetricFamily("GPUDeviceMemoryLimit", "Device memory limit for a certain GPU",
                                               labels=dev)
            self.core_limit = GaugeMetricFamily("GPUDeviceCoreLimit", "Device memory core limit for a certain GPU",
                                                labels=dev)
            self.mem_alloc = GaugeMetricFamily(
                "GPUDeviceMemoryAllocated", "Device memory allocated for a certain GPU",
                labels=["nodeid", "deviceuuid", "deviceidx", "devicecores", "devicetype", *z])
            self.shared = GaugeMetricFamily("GPUDeviceSharedNum", "Number of containers sharing this GPU", labels=dev)
            self.core_alloc = GaugeMetricFamily("GPUDeviceCoreAllocated", "Device core allocated for a certain GPU",
                                                labels=dev)
            self.overview = GaugeMetricFamily("nodeGPUOverview", "GPU overview on a certain node", labels=over)
            self.mem_pct = GaugeMetricFamily("nodeGPUMemoryPercentage",
                                             "GPU Memory Allocated Percentage on a certain GPU",
                                             labels=["nodeid", "deviceuuid", "deviceidx", *z])
            self.mig = GaugeMetricFamily("nodeGPUMigInstance",
                                         "GPU Sharing mode. 0 for hami-core, 1 for mig, 2 for mps",
                                         labels=["nodeid", "deviceuuid", "deviceidx", "migname", *z])
            ctr = ["podnamespace", "nodename", "podname", "containeridx", "deviceuuid", *z]
            self.vmem = GaugeMetricFamily("vGPUMemoryAllocated", "vGPU memory allocated from a container", labels=ctr)
            self.vcore = GaugeMetricFamily("vGPUCoreAllocated", "vGPU core allocated from a container", labels=ctr)
        else:
            dev = ["node", "device_uuid", "device_index", "device_type", *z]
            over = ["node", "device_uuid", "device_index", "device_cores",
                    *([] if self.v210 else ["shared_containers"]), "device_memory_limit", "device_type", *z]
            self.mem_limit = GaugeMetricFamily("hami_gpu_memory_limit_bytes", "Device memory limit for a certain GPU",
                                               labels=dev)
            self.core_limit = GaugeMetricFamily("hami_gpu_core_limit_ratio", "Device core limit for a certain GPU",
                                                labels=dev)
            self.mem_alloc = GaugeMetricFamily(
                "hami_gpu_memory_allocated_bytes", "Device memory allocated for a certain GPU",
                labels=["node", "device_uuid", "device_index", "device_cores", "device_type", *z])
            # HAMi exposes this as a gauge; promtool rejects a gauge named *_count, so it is untyped
            # here (same samples, same name; PromQL treats both alike).
            self.shared = UnknownMetricFamily("hami_gpu_shared_count", "Number of containers sharing this GPU",
                                              labels=dev)
            self.core_alloc = GaugeMetricFamily("hami_gpu_core_allocated_ratio",
                                                "Device core allocated for a certain GPU", labels=dev)
            self.overview = GaugeMetricFamily("hami_node_gpu_overview", "GPU overview on a certain node", labels=over)
            self.mem_pct = GaugeMetricFamily(
                "hami_node_gpu_memory_allocated_ratio", "GPU Memory Allocated Percentage on a certain GPU",
                labels=["node", "device_uuid", "device_index", *(["device_type"] if self.v210 else []), *z])
            mig = (["mig_uuid", "profile", "gpu_instance_id", "compute_instance_id", "placement_start",
                    "placement_size"] if self.v210 else ["mig_name"])
            self.mig = GaugeMetricFamily(
                "hami_node_gpu_mig_instance_info",
                "Realized MIG instance identity and scheduler placement" if self.v210 else
                "MIG instance of the GPU's layout: 1 in use, 0 free", labels=["node", "device_uuid", "device_index",
                                                                              *mig, *z])
            ctr = ["namespace", "node", "pod", "container_index", "device_uuid", *z]
            self.vmem = GaugeMetricFamily("hami_vgpu_memory_allocated_bytes", "vGPU memory allocated from a container",
                                          labels=ctr)
            self.vcore = GaugeMetricFamily("hami_vgpu_core_allocated_ratio", "vGPU core allocated from a container",
                                           labels=ctr)

    def gpu(self, node: str, g: Gpu) -> None:
        u = gpu_usage(g)
        idx = str(g.index)
        typ = device_type(g)
        dev = [node, g.uuid, idx, typ, ZONE]
        self.mem_limit.add_metric(dev, u.total_mib * MIB)
        self.core_limit.add_metric(dev, CORE_LIMIT)
        self.mem_alloc.add_metric([node, g.uuid, idx, str(u.used_cores), typ, ZONE], u.used_mib * MIB)
        self.shared.add_metric(dev, u.units)
        self.core_alloc.add_metric(dev, u.used_cores)
        shared = [] if self.v210 else [str(u.units)]
        self.overview.add_metric([node, g.uuid, idx, str(u.used_cores), *shared, str(u.total_mib), typ, ZONE],
                                 u.used_mib * MIB)
        ratio = u.used_mib / u.total_mib if u.total_mib else 0.0
        self.mem_pct.add_metric([node, g.uuid, idx, *([typ] if self.v210 and not self.legacy else []), ZONE], ratio)
        if g.mode is not NodeMode.MIG:
            return
        if not self.v210:  # one series per slot of the active layout, 1 while held
            for pos, inst in enumerate(g.instances):
                self.mig.add_metric([node, g.uuid, idx, f"{inst.slot.profile}-{pos}", ZONE], 0 if inst.free else 1)
            return
        gm = g.gpu_model
        for inst in g.instances:  # v2.10: held instances only, with their identity and placement
            if inst.free:
                continue
            size = gm.profile(inst.slot.profile).memory_slices if gm.has_profile(inst.slot.profile) else 0
            if self.legacy:  # HAMi: profile-<GI id>; dynamig does not track GI ids, so the placement start
                self.mig.add_metric([node, g.uuid, idx, f"{inst.slot.profile}-{inst.slot.start}", ZONE], 1)
            else:
                self.mig.add_metric([node, g.uuid, idx, inst.uuid or "", inst.slot.profile, "", "",
                                     str(inst.slot.start), str(size), ZONE], 1)

    def vgpu(self, state: ClusterState, templates: DeviceConfig) -> None:
        """One series per device a container holds, as HAMi (a MIG unit's device is named like
        HAMi's ``GPU-…[<template>-<slot>]``, so two instances of one container stay apart)."""
        rows: list[tuple[str, str, str, str, str, int, int]] = []
        for n in state.nodes:
            for g in n.gpus:
                gm = g.gpu_model
                for pos, i in enumerate(g.instances):
                    if i.holder:
                        p = gm.profile(i.slot.profile)
                        dev = f"{g.uuid}[{_template(g, templates)}-{pos}]"
                        rows.append((*_ctr(i.holder), n.name, dev, p.memory_mib, gm.core_percent(p)))
                rows.extend((*_ctr(s.holder), n.name, g.uuid, s.memory_mib, s.cores) for s in g.shares)
        for ns, pod, cidx, node, dev, mem, cores in sorted(rows):
            self.vmem.add_metric([ns, node, pod, cidx, dev, ZONE], mem * MIB)
            self.vcore.add_metric([ns, node, pod, cidx, dev, ZONE], cores)

    def all(self) -> list[Metric]:
        return [self.mem_limit, self.core_limit, self.mem_alloc, self.shared, self.core_alloc, self.overview,
                self.mem_pct, self.mig, self.vmem, self.vcore]


def _ctr(holder: str) -> tuple[str, str, str]:
    ns, name = pod_of_holder(holder).split("/", 1)
    return ns, name, holder.rsplit("/", 2)[1]


def _template(g: Gpu, templates: DeviceConfig) -> int:
    """The template index of the GPU's layout (-1: not a template)."""
    for t in templates.template_layouts(g.gpu_model):
        if t.layout == g.layout:
            return t.index
    return -1


class ExtenderMetrics:
    def __init__(self, extender: Extender, legacy: bool = False, hami_version: str = "v2.9") -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.filter_duration = Histogram(
            "dynamig_filter_duration_seconds", "Time to answer a filter request (plan and reservation included).",
            ["result"], registry=self.registry, buckets=LATENCY_BUCKETS)
        self.solve_stage = Histogram(
            "dynamig_solve_stage_seconds", "Planner time per objective stage ('total' = whole solve).",
            ["stage"], registry=self.registry, buckets=LATENCY_BUCKETS)
        self.reconfigurations = Counter(
            "dynamig_reconfigurations", "GPU re-partitionings in reservations made by this extender.",
            registry=self.registry)
        self.requests = Counter("dynamig_extender_requests", "Extender requests by verb and outcome.",
                                ["verb", "outcome"], registry=self.registry)
        self.registry.register(StateCollector(extender, legacy, hami_version))
        extender.metrics = self

    def observe_plan(self, plan: Plan) -> None:
        for s in plan.stages:
            self.solve_stage.labels(s.name).observe(max(0.0, s.wall_ms) / 1000.0)
        self.solve_stage.labels("total").observe(max(0.0, plan.solve_ms) / 1000.0)

    def observe_filter(self, outcome: FilterOutcome, seconds: float) -> None:
        self.filter_duration.labels(outcome.status).observe(seconds)
        if outcome.status == "placed" and outcome.plan is not None:
            n = len({c.gpu for c in outcome.plan.layout_changes})
            if n:
                self.reconfigurations.inc(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def start_metrics_server(metrics: ExtenderMetrics, host: str = "0.0.0.0", port: int = 9395,
                         certfile: str | None = None, keyfile: str | None = None) -> Any:
    """Serve ``/metrics`` on its own port in a daemon thread (TLS when ``certfile``/``keyfile``):
    ``prometheus_client.start_wsgi_server``. Returns the WSGI server: ``.server_address``,
    ``.shutdown()``, ``.server_close()``."""
    from prometheus_client import start_wsgi_server

    httpd, _ = start_wsgi_server(port, host, metrics.registry, certfile=certfile, keyfile=keyfile)
    return httpd
