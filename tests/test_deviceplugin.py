"""The node device plugin over real unix-socket gRPC, against a fake kubelet and simulated GPUs."""

from __future__ import annotations

import os
from collections.abc import Iterator

import grpc
import pytest

from deviceplugin.podmatch import AllocationError, find_pod
from models.catalog import model
from models.codecs import (
    NODE_GPUS,
    POD_ALLOC_ERROR,
    POD_ALLOCATED,
    POD_BIND_PHASE,
    decode_allocated,
)
from models.layouts import realize
from models.types import NodeMode
from tests.fakes.kubelet import NodeHarness

A100 = "A100-SXM4-40GB"


@pytest.fixture
def mig_node() -> Iterator[NodeHarness]:
    with NodeHarness([(A100, 2)], mode="mig") as h:
        yield h


@pytest.fixture
def share_node() -> Iterator[NodeHarness]:
    with NodeHarness([("A100-SXM4-80GB", 2)], mode="hami-core", split=10) as h:
        yield h


# ----------------------------------------------------------------------------- registration, ListAndWatch


def test_registers_and_lists_split_replicas(mig_node: NodeHarness) -> None:
    k = mig_node.kubelet
    assert k.registrations[0] == ("nvidia.com/gpu", "dynamig-nvidia-gpu.sock")
    ep = k.endpoint()
    assert ep.options.get_preferred_allocation_available and not ep.options.pre_start_required
    devices = k.devices()
    gpus = mig_node.backend.gpus()
    assert sorted(devices) == sorted(f"{g.uuid}-{i}" for g in gpus for i in range(4))
    assert set(devices.values()) == {"Healthy"}
    assert all(len(d) <= 63 for d in devices)


def test_list_and_watch_sends_health_changes(mig_node: NodeHarness) -> None:
    k = mig_node.kubelet
    bad = mig_node.gpu(1).uuid
    mig_node.backend.set_health(1, False)
    assert k.wait_for(lambda: all(h == "Unhealthy" for d, h in k.devices().items() if d.startswith(bad)), 5)
    assert all(h == "Healthy" for d, h in k.devices().items() if not d.startswith(bad))
    mig_node.backend.set_health(1, True)
    assert k.wait_for(lambda: set(k.devices().values()) == {"Healthy"}, 5)


def test_node_registration_annotation(mig_node: NodeHarness) -> None:
    reg = mig_node.registration()
    assert reg.mode is NodeMode.MIG
    assert [g.uuid for g in reg.gpus] == [g.uuid for g in mig_node.backend.gpus()]
    assert {g.model for g in reg.gpus} == {A100} and all(g.split == 4 for g in reg.gpus)
    assert all(g.instances == () for g in reg.gpus)
    assert reg.nvml_names == ("NVIDIA A100-SXM4-40GB",) * 2


def test_kubelet_restart_reregisters_on_a_fresh_socket(mig_node: NodeHarness) -> None:
    k = mig_node.kubelet
    sock = mig_node.agent.socket_path
    k.restart()  # deletes every socket (ours included) and recreates kubelet.sock
    assert k.wait_registered(2, 10)
    assert mig_node.agent.wait_registered(2, 5)
    assert os.path.exists(sock)
    assert k.wait_for(lambda: len(k.devices()) == 8, 5)
    # the new endpoint serves: a second restart works too
    k.restart()
    assert k.wait_registered(3, 10)
    assert k.wait_for(lambda: len(k.devices()) == 8, 5)


def test_registers_when_kubelet_comes_up_late() -> None:
    with NodeHarness([(A100, 1)], start=False) as h:
        h.agent.start()
        assert not h.agent.wait_registered(1, 0.3)
        h.kubelet.start()
        assert h.kubelet.wait_registered(1, 10)
        assert h.kubelet.wait_for(lambda: len(h.kubelet.devices()) == 4, 5)


# ----------------------------------------------------------------------------- Allocate: MIG


def test_allocate_mig_applies_layout_and_returns_mig_uuid(mig_node: NodeHarness) -> None:
    h = mig_node
    lay = realize(model(A100), {"3g.20gb": 2})
    slots = [(s.profile, s.start) for s in lay]
    h.pod("p1", [{"gpu": 0, "profile": "3g.20gb", "start": 4}], [{"gpu": 0, "slots": slots}])
    ids, resp = h.kubelet.admit(1)
    g = h.gpu(0)
    assert g.profile_counts() == {"3g.20gb": 2}
    inst = g.instance_at("3g.20gb", 4)
    assert inst is not None
    assert dict(resp.envs) == {"NVIDIA_VISIBLE_DEVICES": inst.uuid}
    assert list(resp.mounts) == []
    # the config mig-parted got: GPU 0 changes, GPU 1 listed as it is
    cfg = h.agent.applier.last_config or ""
    assert "version: v1" in cfg and "- devices: [0]" in cfg and '"3g.20gb": 2' in cfg
    assert "- devices: [1]\n      mig-enabled: true\n      mig-devices: {}" in cfg
    ann = h.annotations("p1")
    assert ann[POD_BIND_PHASE] == "success"
    assert [u.device for u in decode_allocated(ann[POD_ALLOCATED])] == [inst.uuid]
    assert h.lock_holder() is None
    # registration now carries the new instances with their MIG UUIDs
    assert h.kubelet.wait_for(lambda: bool(h.registration().gpus[0].instances), 5)
    assert {(i.slot.profile, i.slot.start, i.uuid) for i in h.registration().gpus[0].instances} == {
        (d.profile, d.start, d.uuid) for d in g.instances}
    # preferred allocation answered with replicas of the planned GPU
    assert ids[0].startswith(g.uuid)


def test_allocate_mig_reuses_free_instance_without_apply(mig_node: NodeHarness) -> None:
    h = mig_node
    lay = [("2g.10gb", 0), ("2g.10gb", 2), ("2g.10gb", 4), ("1g.5gb", 6)]
    h.pod("p1", [{"gpu": 1, "profile": "2g.10gb", "start": 0}], [{"gpu": 1, "slots": lay}])
    h.kubelet.admit(1)
    assert h.agent.applier.applies == 1
    h.pod("p2", [{"gpu": 1, "profile": "1g.5gb", "start": 6}])
    _, resp = h.kubelet.admit(1)
    assert h.agent.applier.applies == 1  # no re-partition
    assert dict(resp.envs)["NVIDIA_VISIBLE_DEVICES"] == h.gpu(1).instance_at("1g.5gb", 6).uuid


def test_two_containers_get_their_own_units(mig_node: NodeHarness) -> None:
    h = mig_node
    lay = [("1g.5gb", s) for s in range(7)]
    h.pod("p1", [{"gpu": 0, "profile": "1g.5gb", "start": 0, "c": 0, "u": 0},
                 {"gpu": 0, "profile": "1g.5gb", "start": 1, "c": 1, "u": 0},
                 {"gpu": 0, "profile": "1g.5gb", "start": 2, "c": 1, "u": 1}],
          [{"gpu": 0, "slots": lay}], containers=[{"name": "a"}, {"name": "b"}])
    _, r0 = h.kubelet.admit(1)
    assert h.annotations("p1")[POD_BIND_PHASE] == "allocating"  # one container to go
    assert h.lock_holder() == "default/p1"
    _, r1 = h.kubelet.admit(2)
    g = h.gpu(0)
    assert r0.envs["NVIDIA_VISIBLE_DEVICES"] == g.instance_at("1g.5gb", 0).uuid
    assert r1.envs["NVIDIA_VISIBLE_DEVICES"] == ",".join(g.instance_at("1g.5gb", s).uuid for s in (1, 2))
    assert h.annotations("p1")[POD_BIND_PHASE] == "success" and h.lock_holder() is None
    assert h.agent.applier.applies == 1


def test_instance_already_allocated_is_refused(mig_node: NodeHarness) -> None:
    h = mig_node
    lay = [("3g.20gb", 0), ("3g.20gb", 4)]
    h.pod("p1", [{"gpu": 0, "profile": "3g.20gb", "start": 0}], [{"gpu": 0, "slots": lay}])
    h.kubelet.admit(1)
    h.pod("p2", [{"gpu": 0, "profile": "3g.20gb", "start": 0}])
    with pytest.raises(grpc.RpcError) as err:
        h.kubelet.admit(1)
    assert "already allocated to default/p1" in err.value.details()
    ann = h.annotations("p2")
    assert ann[POD_BIND_PHASE] == "failed" and "already allocated" in ann[POD_ALLOC_ERROR]
    assert h.lock_holder() is None


# ----------------------------------------------------------------------------- Allocate: hami-core


def test_allocate_hami_core_envs_and_mounts(share_node: NodeHarness) -> None:
    h = share_node
    h.pod("s1", [{"gpu": 0, "kind": "share", "memory": 8000, "cores": 30},
                 {"gpu": 1, "kind": "share", "memory": 4000, "cores": 30}],
          containers=[{"name": "main", "env": [{"name": "X", "value": "1"}]}])
    _, resp = h.kubelet.admit(2)
    g0, g1 = h.gpu(0), h.gpu(1)
    envs = dict(resp.envs)
    assert envs["NVIDIA_VISIBLE_DEVICES"] == f"{g0.uuid},{g1.uuid}"
    assert envs["CUDA_DEVICE_MEMORY_LIMIT_0"] == "8000m" and envs["CUDA_DEVICE_MEMORY_LIMIT_1"] == "4000m"
    assert envs["CUDA_DEVICE_SM_LIMIT"] == "30"
    vgpu = os.path.join(h.dir, "hook", "vgpu")
    assert envs["CUDA_DEVICE_MEMORY_SHARED_CACHE"].startswith(vgpu + "/") and envs[
        "CUDA_DEVICE_MEMORY_SHARED_CACHE"].endswith(".cache")
    mounts = {m.container_path: (m.host_path, m.read_only) for m in resp.mounts}
    uid = h.store.get_pod("default", "s1")["metadata"]["uid"]
    assert mounts[f"{vgpu}/libvgpu.so"] == (f"{vgpu}/libvgpu.so", True)
    assert mounts[vgpu] == (f"{vgpu}/containers/{uid}_main", False)
    assert mounts["/tmp/vgpulock"] == ("/tmp/vgpulock", False)
    assert mounts["/etc/ld.so.preload"] == (f"{vgpu}/ld.so.preload", True)
    assert os.path.isdir(f"{vgpu}/containers/{uid}_main")
    assert h.annotations("s1")[POD_BIND_PHASE] == "success"
    assert [u.device for u in decode_allocated(h.annotations("s1")[POD_ALLOCATED])] == [g0.uuid, g1.uuid]
    reg = h.registration()
    assert reg.mode is NodeMode.HAMI_CORE and all(g.split == 10 and not g.instances for g in reg.gpus)


def test_hami_core_disable_control_skips_preload(share_node: NodeHarness) -> None:
    h = share_node
    h.pod("s1", [{"gpu": 0, "kind": "share", "memory": 1000, "cores": 0}],
          containers=[{"name": "main", "env": [{"name": "CUDA_DISABLE_CONTROL", "value": "true"}]}])
    _, resp = h.kubelet.admit(1)
    assert "/etc/ld.so.preload" not in {m.container_path for m in resp.mounts}
    assert resp.envs["CUDA_DEVICE_SM_LIMIT"] == "0"


# ----------------------------------------------------------------------------- finding the pod


def test_allocation_copied_from_another_pod_is_never_served(mig_node: NodeHarness) -> None:
    h = mig_node
    lay = [("7g.40gb", 0)]
    h.pod("victim", [{"gpu": 0, "profile": "7g.40gb", "start": 0}], [{"gpu": 0, "slots": lay}],
          alloc_pod="default/other")
    with pytest.raises(grpc.RpcError) as err:
        h.kubelet.admit(1)
    assert "allocation made for pod default/other" in err.value.details()
    assert h.annotations("victim")[POD_BIND_PHASE] == "failed"
    assert h.agent.applier.applies == 0


def test_count_mismatch_fails_the_locked_pod(mig_node: NodeHarness) -> None:
    h = mig_node
    h.pod("p1", [{"gpu": 0, "profile": "7g.40gb", "start": 0}], [{"gpu": 0, "slots": [("7g.40gb", 0)]}])
    with pytest.raises(grpc.RpcError) as err:
        h.kubelet.admit(2)
    assert "device number not matched" in err.value.details()
    assert h.annotations("p1")[POD_BIND_PHASE] == "failed" and h.lock_holder() is None


def test_ambiguous_pods_are_refused(mig_node: NodeHarness) -> None:
    h = mig_node
    h.pod("p1", [{"gpu": 0, "profile": "7g.40gb", "start": 0}], [{"gpu": 0, "slots": [("7g.40gb", 0)]}],
          lock=False)
    h.pod("p2", [{"gpu": 1, "profile": "7g.40gb", "start": 0}], [{"gpu": 1, "slots": [("7g.40gb", 0)]}])
    with pytest.raises(AllocationError, match="refusing to guess"):
        find_pod(h.store, h.node, 1)
    # without any lock, a single waiting pod is found
    h.store.patch_pod_annotations("default", "p2", {POD_BIND_PHASE: "failed"})
    from models import nodelock

    nodelock.release(h.store, h.node, "default/p2")
    assert find_pod(h.store, h.node, 1).key == "default/p1"


def test_unknown_device_ids_are_rejected(mig_node: NodeHarness) -> None:
    with pytest.raises(grpc.RpcError) as err:
        mig_node.kubelet.allocate(["GPU-nope-0"])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_no_pod_waiting(mig_node: NodeHarness) -> None:
    with pytest.raises(grpc.RpcError) as err:
        mig_node.kubelet.admit(1)
    assert "no pod awaits 1 device(s)" in err.value.details()
    # the plugin keeps serving
    assert mig_node.kubelet.preferred(sorted(mig_node.kubelet.devices())[:3], [], 2)


def test_registration_is_republished_when_overwritten(mig_node: NodeHarness) -> None:
    h = mig_node
    good = h.store.get_node(h.node)["metadata"]["annotations"][NODE_GPUS]
    h.store.patch_node_annotations(h.node, {NODE_GPUS: None})
    assert h.kubelet.wait_for(
        lambda: h.store.get_node(h.node)["metadata"]["annotations"].get(NODE_GPUS) == good, 5)


# ----------------------------------------------------------------------------- the command


def test_deviceplugin_command_runs_and_stops_on_sigterm(tmp_path: os.PathLike[str]) -> None:
    import signal
    import subprocess
    import sys
    import tempfile

    from tests.fakes.kubelet import FakeKubelet

    inv = os.path.join(str(tmp_path), "inv.yaml")
    with open(inv, "w") as fh:
        fh.write("nodes:\n  - name: n1\n    mode: mig\n    split: 3\n    gpus: {model: A100-SXM4-40GB, count: 2}\n")
    plugin_dir = tempfile.mkdtemp(prefix="dpc-", dir="/tmp")
    launcher = ("import argparse, sys\nfrom dynamig.commands import deviceplugin as d\n"
                "p = argparse.ArgumentParser(); d.add_parser(p.add_subparsers())\n"
                "sys.exit(d.run(p.parse_args(sys.argv[1:])))\n")
    with FakeKubelet(plugin_dir) as k:
        proc = subprocess.Popen(
            [sys.executable, "-c", launcher, "deviceplugin", "--backend", "sim", "--inventory", inv, "--node", "n1",
             "--store", "memory", "--device-plugin-dir", plugin_dir, "--sim-state",
             os.path.join(str(tmp_path), "gpus.json")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert k.wait_registered(1, 20)
            assert k.wait_for(lambda: len(k.devices()) == 6, 10)
        finally:
            proc.send_signal(signal.SIGTERM)
            _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    import shutil

    shutil.rmtree(plugin_dir, ignore_errors=True)


def test_deviceplugin_command_sim_needs_inventory(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from dynamig.commands import deviceplugin
    from models.errors import ConfigError

    p = argparse.ArgumentParser()
    deviceplugin.add_parser(p.add_subparsers())
    args = p.parse_args(["deviceplugin", "--backend", "sim", "--node", "zz", "--store", "memory",
                         "--sim-state", "/nonexistent/x.json"])
    with pytest.raises(ConfigError, match="--backend sim needs --inventory"):
        deviceplugin.run(args)
