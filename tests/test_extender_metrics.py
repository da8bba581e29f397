"""Metrics: HAMi names and labels, legacy names behind the flag, dynamig's own, promtool-clean."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_extender_support import filter_body, memory_store, pod_manifest

from extender import ExtenderConfig
from extender.core import Extender
from extender.metrics import ExtenderMetrics, fragmentation_ratio
from extender.wire import parse_extender_args
from models.store import InMemoryStore

HAMI = ["hami_gpu_memory_limit_bytes", "hami_gpu_core_limit_ratio", "hami_gpu_memory_allocated_bytes",
        "hami_gpu_shared_count", "hami_gpu_core_allocated_ratio", "hami_node_gpu_overview",
        "hami_node_gpu_memory_allocated_ratio", "hami_node_gpu_mig_instance_info",
        "hami_vgpu_memory_allocated_bytes", "hami_vgpu_core_allocated_ratio", "hami_build_info"]
LEGACY = ["GPUDeviceMemoryLimit", "GPUDeviceCoreLimit", "GPUDeviceMemoryAllocated", "GPUDeviceSharedNum",
          "GPUDeviceCoreAllocated", "nodeGPUOverview", "nodeGPUMemoryPercentage", "nodeGPUMigInstance",
          "vGPUMemoryAllocated", "vGPUCoreAllocated"]


def busy_cluster(legacy: bool, version: str = "v2.9") -> tuple[InMemoryStore, Extender, ExtenderMetrics]:
    store = memory_store()
    ext = Extender(store, ExtenderConfig(legacy_metrics=legacy))
    m = ExtenderMetrics(ext, legacy=legacy, hami_version=version)
    for name, nodes, kw in (("mig", ["mig-0"], {"mem": "8000"}), ("share", ["share-0"], {"mem": "4000", "cores": "30"}),
                            ("huge", ["mig-0"], {"mem": "99999"})):
        pod = store.create_pod(pod_manifest(name, **kw))
        out = ext.filter(parse_extender_args(filter_body(pod, nodes)))
        m.observe_filter(out, 0.01)
    return store, ext, m


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def test_hami_names_labels_and_values() -> None:
    _, _, m = busy_cluster(legacy=False)
    got = samples(m.render().decode())
    for name in HAMI:
        assert name in got, name
        # HAMi wraps its collector with zone="vGPU"; its build info is registered outside the wrapper
        assert all(("zone" in lb) is (name != "hami_build_info") for lb, _ in got[name]), name
        assert all(lb.get("zone", "vGPU") == "vGPU" for lb, _ in got[name]), name
    assert not any(n in got for n in LEGACY)
    limit = {lb["node"]: v for lb, v in got["hami_gpu_memory_limit_bytes"] if lb["device_index"] == "0"}
    assert limit["mig-0"] == 40960 * 2**20 and limit["share-0"] == 81920 * 2**20
    assert set(got["hami_gpu_memory_limit_bytes"][0][0]) == {"node", "device_uuid", "device_index", "device_type",
                                                             "zone"}
    shared = {lb["node"]: v for lb, v in got["hami_gpu_shared_count"] if lb["device_index"] == "0"}
    assert shared["mig-0"] == 1 and shared["share-0"] == 1
    mig = [(lb["mig_name"], v) for lb, v in got["hami_node_gpu_mig_instance_info"] if lb["node"] == "mig-0"]
    assert sum(v for _, v in mig) == 1 and len(mig) >= 2
    assert all("-" in n for n, _ in mig)  # "<profile>-<flattened index>"
    vmem = {lb["pod"]: (lb, v) for lb, v in got["hami_vgpu_memory_allocated_bytes"]}
    assert vmem["share"][1] == 4000 * 2**20 and vmem["share"][0]["namespace"] == "ml"
    assert vmem["share"][0]["container_index"] == "0" and vmem["mig"][1] >= 8000 * 2**20
    assert {lb["pod"]: v for lb, v in got["hami_vgpu_core_allocated_ratio"]}["share"] == 30
    core = {lb["node"]: v for lb, v in got["hami_gpu_core_allocated_ratio"] if lb["device_index"] == "0"}
    assert core["share-0"] == 30
    assert got["hami_build_info"][0][1] == 1


#: HAMi's label sets per release (cmd/scheduler/metrics.go at v2.9.0 and v2.10.0), zone added by its
#: WrapRegistererWith.
LABELS_V29 = {
    "hami_gpu_memory_limit_bytes": ["node", "device_uuid", "device_index", "device_type"],
    "hami_gpu_core_limit_ratio": ["node", "device_uuid", "device_index", "device_type"],
    "hami_gpu_memory_allocated_bytes": ["node", "device_uuid", "device_index", "device_cores", "device_type"],
    "hami_gpu_shared_count": ["node", "device_uuid", "device_index", "device_type"],
    "hami_gpu_core_allocated_ratio": ["node", "device_uuid", "device_index", "device_type"],
    "hami_node_gpu_overview": ["node", "device_uuid", "device_index", "device_cores", "shared_containers",
                               "device_memory_limit", "device_type"],
    "hami_node_gpu_memory_allocated_ratio": ["node", "device_uuid", "device_index"],
    "hami_node_gpu_mig_instance_info": ["node", "device_uuid", "device_index", "mig_name"],
    "hami_vgpu_memory_allocated_bytes": ["namespace", "node", "pod", "container_index", "device_uuid"],
    "hami_vgpu_core_allocated_ratio": ["namespace", "node", "pod", "container_index", "device_uuid"],
    "hami_build_info": ["version", "revision", "build_date", "go_version", "compiler", "platform"],
}
LABELS_V210 = {
    **LABELS_V29,
    "hami_node_gpu_overview": ["node", "device_uuid", "device_index", "device_cores", "device_memory_limit",
                               "device_type"],
    "hami_node_gpu_memory_allocated_ratio": ["node", "device_uuid", "device_index", "device_type"],
    "hami_node_gpu_mig_instance_info": ["node", "device_uuid", "device_index", "mig_uuid", "profile",
                                        "gpu_instance_id", "compute_instance_id", "placement_start",
                                        "placement_size"],
}


@pytest.mark.parametrize(("version", "want"), [("v2.9", LABELS_V29), ("v2.10", LABELS_V210)])
def test_label_sets_are_hamis_per_release(version: str, want: dict[str, list[str]]) -> None:
    _, _, m = busy_cluster(legacy=False, version=version)
    got = samples(m.render().decode())
    for name, labels in want.items():
        zone = [] if name == "hami_build_info" else ["zone"]
        assert {frozenset(lb) for lb, _ in got[name]} == {frozenset(labels + zone)}, name
    types = {lb["device_type"] for lb, _ in got["hami_gpu_memory_limit_bytes"]}
    assert types == {"NVIDIA A100-SXM4-40GB", "NVIDIA A100-SXM4-80GB"}  # the NVML name, as HAMi
    if version == "v2.9":
        over = {lb["node"]: lb["shared_containers"] for lb, _ in got["hami_node_gpu_overview"]
                if lb["device_index"] == "0"}
        assert over["mig-0"] == "1" and over["share-0"] == "1"
    else:
        mig = got["hami_node_gpu_mig_instance_info"]  # one series per held instance, value 1
        assert len(mig) == 1 and mig[0][1] == 1 and mig[0][0]["profile"] == "2g.10gb"
    vdev = [lb["device_uuid"] for lb, _ in got["hami_vgpu_memory_allocated_bytes"] if lb["pod"] == "mig"]
    assert len(vdev) == 1 and vdev[0].endswith("]") and "[" in vdev[0]  # HAMi's GPU-…[template-slot]


def test_unknown_hami_version_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match=r"v2\.9, v2\.10"):
        busy_cluster(legacy=False, version="v3")


def test_dynamig_metrics() -> None:
    _, ext, m = busy_cluster(legacy=False)
    got = samples(m.render().decode())
    counts = {lb["result"]: v for lb, v in got["dynamig_filter_duration_seconds_count"]}
    assert counts == {"placed": 2, "unplaceable": 1}
    stages = {lb["stage"] for lb, _ in got["dynamig_solve_stage_seconds_count"]}
    assert {"total", "placed", "reconfigurations"} <= stages
    assert got["dynamig_reconfigurations_total"][0][1] == 1  # the MIG GPU was partitioned once
    assert got["dynamig_unplaceable_pods"][0][1] == 1
    frag = got["dynamig_fragmentation_ratio"][0][1]
    assert 0 < frag < 1
    assert frag == pytest.approx(fragmentation_ratio(ext.snapshot().state))


def test_fragmentation_ratio_bounds() -> None:
    store = memory_store()
    ext = Extender(store, ExtenderConfig())
    assert fragmentation_ratio(ext.snapshot().state) == 0.0  # all idle: everything reachable


def test_legacy_names_behind_flag() -> None:
    _, _, m = busy_cluster(legacy=True)
    got = samples(m.render().decode())
    for name in LEGACY + HAMI:
        assert name in got, name
    lb = next(lb for lb, v in got["nodeGPUMigInstance"] if v == 1)
    assert set(lb) == {"deviceidx", "deviceuuid", "migname", "nodeid", "zone"} and lb["zone"] == "vGPU"
    assert set(got["vGPUMemoryAllocated"][0][0]) == {"podnamespace", "nodename", "podname", "containeridx",
                                                     "deviceuuid", "zone"}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian package prometheus)")
def test_promtool_check_metrics() -> None:
    _, _, m = busy_cluster(legacy=False)
    r = subprocess.run(["promtool", "check", "metrics"], input=m.render(), capture_output=True, timeout=60)
    assert r.returncode == 0, (r.stdout + r.stderr).decode()
    assert not (r.stdout + r.stderr).strip()
    # legacy names are camelCase by HAMi's definition: that is the only thing promtool may flag
    _, _, m = busy_cluster(legacy=True)
    r = subprocess.run(["promtool", "check", "metrics"], input=m.render(), capture_output=True, timeout=60)
    problems = [ln for ln in (r.stdout + r.stderr).decode().splitlines() if ln.strip()]
    assert problems and all("camelCase" in ln and ln.split()[0] in LEGACY for ln in problems), problems
