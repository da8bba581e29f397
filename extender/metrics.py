"""Prometheus metrics on their own registry (served on their own port).

HAMi's current names (``reference/hami.md`` §11; every series has ``zone="vGPU"``), the legacy
camelCase names behind ``legacy_metrics``, and dynamig's own: filter latency, per-stage solve
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


def device_type(g: Gpu) -> str:
    return f"NVIDIA-{g.model}"


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
    def __init__(self, extender: Extender, legacy: bool) -> None:
        self.extender = extender
        self.legacy = legacy

    def describe(self) -> list[Metric]:
        return []  # computed at scrape time; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        cfg = self.extender.config
        snap = self.extender.snapshot()
        state = snap.state
        new = _Families(legacy=False)
        old = _Families(legacy=True) if self.legacy else None
        for fams in (new, old):
            if fams is None:
                continue
            for n in state.nodes:
                for g in n.gpus:
                    fams.gpu(n.name, g)
            fams.vgpu(state)
            yield from fams.all()
        info = GaugeMetricFamily("hami_build_info", "Build information of the dynamig extender (HAMi-compatible).",
                                 labels=["version", "revision", "build_date", "go_version", "compiler", "platform",
                                         "zone"])
        info.add_metric([cfg.version, cfg.revision, cfg.build_date, f"python{platform.python_version()}",
                         platform.python_implementation(), f"{sys.platform}/{platform.machine()}", ZONE], 1)
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


class _Families:
    """One naming scheme (current hami_* or legacy camelCase) of the HAMi gauges."""

    def __init__(self, legacy: bool) -> None:
        self.legacy = legacy
        self.shared: GaugeMetricFamily | UnknownMetricFamily
        if legacy:
            dev = ["nodeid", "deviceuuid", "deviceidx", "devicetype", "zone"]
            self.mem_limit = GaugeMetricFamily("GPUDeviceMemoryLimit", "GPU device memory limit (bytes).", labels=dev)
            self.core_limit = GaugeMetricFamily("GPUDeviceCoreLimit", "GPU device core limit (%).", labels=dev)
            self.mem_alloc = GaugeMetricFamily(
                "GPUDeviceMemoryAllocated", "GPU device memory allocated (bytes).",
                labels=["nodeid", "deviceuuid", "deviceidx", "devicecores", "devicetype", "zone"])
            self.shared = GaugeMetricFamily("GPUDeviceSharedNum", "Units sharing the GPU.", labels=dev)
            self.core_alloc = GaugeMetricFamily("GPUDeviceCoreAllocated", "GPU device cores allocated (%).",
                                                labels=dev)
            self.overview = GaugeMetricFamily(
                "nodeGPUOverview", "GPU overview per node: memory allocated (bytes).",
                labels=["nodeid", "deviceuuid", "deviceidx", "devicecores", "devicememorylimit", "devicetype", "zone"])
            self.mem_pct = GaugeMetricFamily("nodeGPUMemoryPercentage", "GPU memory allocated / total.",
                                             labels=["nodeid", "deviceuuid", "deviceidx", "zone"])
            self.mig = GaugeMetricFamily("nodeGPUMigInstance", "MIG instance of the GPU's layout: 1 in use, 0 free.",
                                         labels=["nodeid", "deviceuuid", "deviceidx", "migname", "zone"])
            ctr = ["podnamespace", "nodename", "podname", "containeridx", "deviceuuid", "zone"]
            self.vmem = GaugeMetricFamily("vGPUMemoryAllocated", "Memory allocated to a container (bytes).",
                                          labels=ctr)
            self.vcore = GaugeMetricFamily("vGPUCoreAllocated", "Cores allocated to a container (%).", labels=ctr)
        else:
            dev = ["node", "device_uuid", "device_index", "device_type", "zone"]
            self.mem_limit = GaugeMetricFamily("hami_gpu_memory_limit_bytes", "GPU device memory limit.", labels=dev)
            self.core_limit = GaugeMetricFamily("hami_gpu_core_limit_ratio", "GPU device core limit (%).", labels=dev)
            self.mem_alloc = GaugeMetricFamily(
                "hami_gpu_memory_allocated_bytes", "GPU device memory allocated.",
                labels=["node", "device_uuid", "device_index", "device_cores", "device_type", "zone"])
            # HAMi exposes this as a gauge; promtool rejects a gauge named *_count, so it is untyped
            # here (same samples, same name; PromQL treats both alike).
            self.shared = UnknownMetricFamily("hami_gpu_shared_count",
                                              "Units (containers or MIG instances) on the GPU.", labels=dev)
            self.core_alloc = GaugeMetricFamily("hami_gpu_core_allocated_ratio", "GPU device cores allocated (%).",
                                                labels=dev)
            self.overview = GaugeMetricFamily(
                "hami_node_gpu_overview", "GPU overview per node: memory allocated (bytes).",
                labels=["node", "device_uuid", "device_index", "device_cores", "device_memory_limit", "device_type",
                        "zone"])
            self.mem_pct = GaugeMetricFamily("hami_node_gpu_memory_allocated_ratio", "GPU memory allocated / total.",
                                             labels=["node", "device_uuid", "device_index", "zone"])
            self.mig = GaugeMetricFamily("hami_node_gpu_mig_instance_info",
                                         "MIG instance of the GPU's layout: 1 in use, 0 free.",
                                         labels=["node", "device_uuid", "device_index", "mig_name", "zone"])
            ctr = ["namespace", "node", "pod", "container_index", "device_uuid", "zone"]
            self.vmem = GaugeMetricFamily("hami_vgpu_memory_allocated_bytes", "Memory allocated to a container.",
                                          labels=ctr)
            self.vcore = GaugeMetricFamily("hami_vgpu_core_allocated_ratio", "Cores allocated to a container (%).",
                                           labels=ctr)

    def gpu(self, node: str, g: Gpu) -> None:
        u = gpu_usage(g)
        idx = str(g.index)
        typ = device_type(g)
        dev = [node, g.uuid, idx, typ, ZONE]
        self.mem_limit.add_metric(dev, u.total_mib * MIB)
        self.core_limit.add_metric(dev, 100)
        self.mem_alloc.add_metric([node, g.uuid, idx, str(u.used_cores), typ, ZONE], u.used_mib * MIB)
        self.shared.add_metric(dev, u.units)
        self.core_alloc.add_metric(dev, u.used_cores)
        self.overview.add_metric([node, g.uuid, idx, str(u.used_cores), str(u.total_mib), typ, ZONE], u.used_mib * MIB)
        self.mem_pct.add_metric([node, g.uuid, idx, ZONE], u.used_mib / u.total_mib if u.total_mib else 0.0)
        if g.mode is NodeMode.MIG:
            for pos, inst in enumerate(g.instances):
                self.mig.add_metric([node, g.uuid, idx, f"{inst.slot.profile}-{pos}", ZONE], 0 if inst.free else 1)

    def vgpu(self, state: ClusterState) -> None:
        acc: dict[tuple[str, str, str, str, str], list[int]] = {}
        for n in state.nodes:
            for g in n.gpus:
                gm = g.gpu_model
                units: list[tuple[str, int, int]] = []
                for i in g.instances:
                    if i.holder:
                        p = gm.profile(i.slot.profile)
                        units.append((i.holder, p.memory_mib, gm.core_percent(p)))
                units.extend((s.holder, s.memory_mib, s.cores) for s in g.shares)
                for holder, mem, cores in units:
                    ns, name = pod_of_holder(holder).split("/", 1)
                    cidx = holder.rsplit("/", 2)[1]
                    k = (ns, n.name, name, cidx, g.uuid)
                    a = acc.setdefault(k, [0, 0])
                    a[0] += mem
                    a[1] += cores
        for (ns, node, pod, cidx, dev), (mem, cores) in sorted(acc.items()):
            self.vmem.add_metric([ns, node, pod, cidx, dev, ZONE], mem * MIB)
            self.vcore.add_metric([ns, node, pod, cidx, dev, ZONE], cores)

    def all(self) -> list[Metric]:
        return [self.mem_limit, self.core_limit, self.mem_alloc, self.shared, self.core_alloc, self.overview,
                self.mem_pct, self.mig, self.vmem, self.vcore]


class ExtenderMetrics:
    def __init__(self, extender: Extender, legacy: bool = False) -> None:
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
        self.registry.register(StateCollector(extender, legacy))
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
