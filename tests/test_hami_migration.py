"""Migration from HAMi: the allocations HAMi wrote (pod and node annotations, exactly as HAMi
writes them) count as held capacity and are never handed out again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from typing import Any

from conftest import DATA
from test_planner import mig_node, pod, share_node

from models.cluster import state_from_objects
from models.config import builtin_device_config, load_device_config
from models.hami_compat import decode_node_register, decode_pod_devices
from models.store import node_objects
from models.types import ClusterState, Node
from models.validate import validate
from solver import PlannerConfig, plan

CFG = PlannerConfig()


def hami_pod(name: str, node: str, devices: str, extra: dict[str, str] | None = None,
             phase: str = "Running") -> dict[str, Any]:
    ann = {"hami.io/vgpu-node": node, "hami.io/vgpu-devices-allocated": devices,
           "hami.io/vgpu-devices-to-allocate": ";", "hami.io/bind-phase": "success", **(extra or {})}
    return {"metadata": {"name": name, "namespace": "old", "annotations": ann},
            "spec": {"nodeName": node, "containers": [{"name": "c"}]}, "status": {"phase": phase}}


def with_layout(node: Node, template: int) -> Node:
    g = node.gpus[0]
    lay = builtin_device_config().template_layouts(g.gpu_model)[template].layout
    return replace(node, gpus=(g.with_layout(lay),))


def rebuild(node: Node, *pods: dict[str, Any]) -> tuple[ClusterState, list[str]]:
    state, problems = state_from_objects(node_objects(ClusterState((node,))), list(pods),
                                         templates=builtin_device_config())
    return state, [f"{p.obj}: {p.message}" for p in problems]


def place(state: ClusterState, mem: int | None, n: int = 1) -> Any:
    p = pod("new", mem, n=n)
    out = plan(state, p, CFG)
    assert validate(state, out, {p.key: p}, CFG.templates) == []  # in particular: no held instance given
    return out.placements[0]


def test_hami_core_share_is_held() -> None:
    node = share_node("s")  # A100-80GB, hami-core
    uuid = node.gpus[0].uuid
    state, problems = rebuild(node, hami_pod("train", "s", f"{uuid},NVIDIA,60000,50:;"))
    assert problems == []
    g = state.nodes[0].gpus[0]
    assert [(s.holder, s.memory_mib, s.cores) for s in g.shares] == [("old/train/0/hami-0", 60000, 50)]
    assert not place(state, 30000).placed  # 81920 - 60000 < 30000
    assert place(state, 20000).placed
    assert not place(state, None).placed  # an exclusive GPU cannot share with HAMi's pod


def test_legacy_mig_slot_holds_every_instance_it_may_be() -> None:
    node = with_layout(mig_node("m"), 1)  # geometry 1: 1g.5gb x1 + 2g.10gb x3
    uuid = node.gpus[0].uuid
    # [1-1]: geometry 1, flattened slot 1 = a 2g.10gb; HAMi does not say which one
    state, problems = rebuild(node, hami_pod("infer", "m", f"{uuid}[1-1],NVIDIA,10240,28:;"))
    assert problems == []
    held = sorted((i.slot.profile, i.holder is not None) for i in state.nodes[0].gpus[0].instances)
    assert held == [("1g.5gb", False), ("2g.10gb", True), ("2g.10gb", True), ("2g.10gb", True)]
    small = place(state, 3000)
    assert small.placed and small.units[0].slot is not None and small.units[0].slot.profile == "1g.5gb"
    assert not small.units[0].reconfigure  # the GPU is in use by HAMi's pod: never re-cut
    assert not place(state, 8000).placed


def test_v210_mig_allocation_holds_the_exact_instance() -> None:
    node = with_layout(mig_node("m"), 0)  # 7 x 1g.5gb
    g = node.gpus[0]
    start = sorted(i.slot.start for i in g.instances)[3]
    alloc = [{"containerIndex": 0, "deviceIndex": 0, "gpuUUID": g.uuid, "profile": "1g.5gb",
              "placement": {"start": start, "size": 1}}]
    state, problems = rebuild(node, hami_pod("v210", "m", f"{g.uuid},NVIDIA,4864,14:;",
                                             {"hami.io/vgpu-mig-allocations": json.dumps(alloc)}))
    assert problems == []
    held = [i.slot.start for i in state.nodes[0].gpus[0].instances if i.holder]
    assert held == [start]
    got = place(state, 3000, n=6)
    assert got.placed and all(u.slot is not None and u.slot.start != start for u in got.units)
    assert not place(state, 3000, n=7).placed


def test_unknown_slot_holds_the_whole_gpu_and_says_so() -> None:
    node = with_layout(mig_node("m"), 0)
    uuid = node.gpus[0].uuid
    state, problems = rebuild(node, hami_pod("odd", "m", f"{uuid}[3-0],NVIDIA,40960,100:;"))
    assert all(i.holder for i in state.nodes[0].gpus[0].instances)
    assert any("holding the whole GPU" in p for p in problems)
    assert not place(state, 1000).placed


def test_finished_failed_and_foreign_pods() -> None:
    node = share_node("s")
    uuid = node.gpus[0].uuid
    dev = f"{uuid},NVIDIA,80000,100:;"
    done = hami_pod("done", "s", dev, phase="Succeeded")
    failed = hami_pod("failed", "s", dev, {"hami.io/bind-phase": "failed"})
    moved = hami_pod("moved", "other", dev)
    moved["spec"]["nodeName"] = "s"  # annotation names another node than the binding: not trusted
    elsewhere = hami_pod("elsewhere", "gone", dev)
    state, problems = rebuild(node, done, failed, moved, elsewhere)
    assert state.nodes[0].gpus[0].shares == ()
    assert any("old/moved" in p and "bound to 's'" in p for p in problems)
    assert any("old/elsewhere" in p and "no dynamig device plugin" in p for p in problems)


def test_init_containers_come_first_in_hamis_device_list() -> None:
    units = decode_pod_devices("GPU-a,NVIDIA,1000,10:;;GPU-b,NVIDIA,2000,0:GPU-c[0-4],NVIDIA,4864,14:;")
    assert [(u.container, u.unit, u.gpu, u.geometry, u.slot) for u in units] == [
        (0, 0, "GPU-a", None, None), (2, 0, "GPU-b", None, None), (2, 1, "GPU-c", 0, 4)]


def test_node_register_json_and_text_forms_and_nvml_name_from_hami() -> None:
    j = decode_node_register('[{"id":"GPU-1","index":1,"count":10,"devmem":40960,"devcore":100,'
                             '"type":"NVIDIA A100-PCIE-40GB","mode":"mig","health":true}]')
    t = decode_node_register("GPU-1,10,40960,100,NVIDIA A100-PCIE-40GB,0,true,1,mig:")
    assert j == t
    assert (j[0].type, j[0].index, j[0].mode, j[0].health, j[0].numa) == ("NVIDIA A100-PCIE-40GB", 1, "mig", True, 0)
    node = mig_node("m")
    objs = node_objects(ClusterState((node,)))
    objs[0]["metadata"]["annotations"]["hami.io/node-nvidia-register"] = json.dumps(
        [{"id": node.gpus[0].uuid, "type": "NVIDIA A100-PCIE-40GB", "count": 10, "devmem": 40960, "mode": "mig"}])
    state, _ = state_from_objects(objs, [])
    assert state.nodes[0].gpus[0].device_name == "NVIDIA A100-PCIE-40GB"
    p = pod("pcie", 3000, ann={"nvidia.com/use-gputype": "PCIE"})
    assert plan(state, p, CFG).placements[0].placed
    p2 = pod("sxm", 3000, ann={"nvidia.com/use-gputype": "SXM4"})
    assert not plan(state, p2, CFG).placements[0].placed


HAMI_RENDERS = ["hami-v2.9.0-device-config.yaml", "hami-v2.9.0-device-configmap.yaml",
                "hami-v2.10.0-device-config.yaml", "hami-v2.10.0-device-configmap.yaml"]


def test_validate_config_accepts_hamis_default_as_rendered() -> None:
    paths = [os.path.join(DATA, n) for n in HAMI_RENDERS]
    r = subprocess.run([sys.executable, "-m", "dynamig", "validate-config", *paths], capture_output=True, text=True,
                       timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("ok (device-config") == 4
    assert "Traceback" not in r.stderr
    for name, path in zip(HAMI_RENDERS, paths, strict=True):
        cfg = load_device_config(path).config
        assert cfg.split == 10 and cfg.resources.gpu == "nvidia.com/gpu"
        assert cfg.form == ("migProfileAllowlist" if "2.10" in name else "knownMigGeometries")


def test_extender_never_hands_out_what_hami_holds() -> None:
    """End to end through the extender's filter: HAMi's pod holds the share GPU exclusively."""
    from test_extender_support import filter_body, memory_store, pod_manifest

    from extender import ExtenderConfig
    from extender.core import Extender
    from extender.wire import parse_extender_args

    store = memory_store()
    ext = Extender(store, ExtenderConfig())
    share = next(n for n in store.list_nodes() if n["metadata"]["name"] == "share-0")
    state, _ = state_from_objects([share], [])
    uuid = state.nodes[0].gpus[0].uuid
    store.create_pod(hami_pod("hami-train", "share-0", f"{uuid},NVIDIA,81920,100:;"))
    pod = store.create_pod(pod_manifest("newcomer", mem="1000"))
    out = ext.filter(parse_extender_args(filter_body(pod, ["share-0"])))
    assert out.status == "unplaceable"
    assert "share-0" in out.result["FailedNodes"]
