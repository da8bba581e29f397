"""``dynamig hwcheck`` and the NVML backend: no driver here, so a fake pynvml stands in for NVML."""

from __future__ import annotations

import argparse
import ctypes
import json
from typing import Any

import pynvml
import pytest

from deviceplugin.backend import GpuBackendError
from deviceplugin.hwcheck import probe, render_text
from deviceplugin.nvml import NvmlBackend
from dynamig.commands import hwcheck

# NVML profile enum -> (nvidia-smi id, slices, memory MiB, instance count, placements) for an A100-40GB,
# with 2g.10gb memory as another driver reports it and 3g.20gb placements deliberately wrong.
_A100_PROFILES = {
    0: (19, 1, 4864, 7, [(s, 1) for s in range(7)], "1g.5gb"),
    1: (14, 2, 9984, 3, [(0, 2), (2, 2), (4, 2)], "2g.10gb"),
    2: (9, 3, 19968, 2, [(0, 4)], "3g.20gb"),
    3: (5, 4, 19968, 1, [(0, 4)], "4g.20gb"),
    4: (0, 7, 40192, 1, [(0, 8)], "7g.40gb"),
}


class _Obj:
    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


class FakeNvml:
    """The pynvml calls NvmlBackend makes, over an A100-40GB (MIG on, 2 instances, 1 process) and a T4."""

    NVMLError = pynvml.NVMLError
    NVML_DEVICE_MIG_ENABLE = 1
    NVML_GPU_INSTANCE_PROFILE_COUNT = pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT
    c_nvmlGpuInstance_t = pynvml.c_nvmlGpuInstance_t
    c_nvmlGpuInstancePlacement_t = pynvml.c_nvmlGpuInstancePlacement_t

    def __init__(self) -> None:
        self.calls: list[str] = []
        # GI id -> (NVML profile enum, start); MIG device index -> (GI id, uuid)
        self.gis = {1: (2, 4), 2: (1, 0)}
        self.migs = {0: (1, "MIG-aaaa"), 1: (2, "MIG-bbbb")}

    def __getattr__(self, name: str) -> Any:  # any mutating call would show up here
        raise AssertionError(f"unexpected NVML call {name}")

    def _err(self, code: int) -> Exception:
        return pynvml.NVMLError(code)

    def nvmlInit(self) -> None:
        self.calls.append("init")

    def nvmlShutdown(self) -> None:
        self.calls.append("shutdown")

    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.15"

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, i: int) -> Any:
        return ("gpu", i)

    def nvmlDeviceGetName(self, h: Any) -> str:
        return "NVIDIA A100-SXM4-40GB" if h == ("gpu", 0) else "Tesla T4"

    def nvmlDeviceGetUUID(self, h: Any) -> str:
        if h[0] == "mig":
            return self.migs[h[2]][1]
        return f"GPU-{h[1]:04d}"

    def nvmlDeviceGetMemoryInfo(self, h: Any) -> Any:
        if h[0] == "mig":
            gi = self.migs[h[2]][0]
            mib = _A100_PROFILES[self.gis[gi][0]][2] - 100
        else:
            mib = 40960 if h == ("gpu", 0) else 15360
        return _Obj(total=mib * 1024 * 1024)

    def nvmlDeviceGetPciInfo(self, h: Any) -> Any:
        return _Obj(pciDeviceId=0x20B010DE if h == ("gpu", 0) else 0x1EB810DE)

    def nvmlDeviceGetMigMode(self, h: Any) -> list[int]:
        if h != ("gpu", 0):
            raise self._err(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return [1, 1]

    def nvmlDeviceGetGpuInstanceProfileInfo(self, h: Any, p: int) -> Any:
        if h != ("gpu", 0) or p not in _A100_PROFILES:
            raise self._err(pynvml.NVML_ERROR_NOT_SUPPORTED)
        pid, slices, mem, count, _, name = _A100_PROFILES[p]
        return _Obj(id=pid, sliceCount=slices, memorySizeMB=mem, instanceCount=count, name=f"MIG {name}".encode())

    def _enum(self, profile_id: int) -> int:
        return next(k for k, v in _A100_PROFILES.items() if v[0] == profile_id)

    def nvmlDeviceGetGpuInstances(self, h: Any, profile_id: int, arr: Any, count_ref: Any) -> None:
        enum = self._enum(profile_id)
        ids = [gi for gi, (p, _) in self.gis.items() if p == enum]
        for k, gi in enumerate(ids):
            arr[k] = ctypes.cast(ctypes.c_void_p(1000 + gi), self.c_nvmlGpuInstance_t)
        count_ref._obj.value = len(ids)

    def nvmlGpuInstanceGetInfo(self, gi_handle: Any) -> Any:
        gi = ctypes.cast(gi_handle, ctypes.c_void_p).value - 1000
        enum, start = self.gis[gi]
        size = _A100_PROFILES[enum][4][0][1]
        return _Obj(id=gi, profileId=_A100_PROFILES[enum][0], placement=_Obj(start=start, size=size))

    def nvmlDeviceGetMaxMigDeviceCount(self, h: Any) -> int:
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h: Any, i: int) -> Any:
        if i not in self.migs:
            raise self._err(pynvml.NVML_ERROR_NOT_FOUND)
        return ("mig", h[1], i)

    def nvmlDeviceGetGpuInstanceId(self, h: Any) -> int:
        return self.migs[h[2]][0]

    def nvmlDeviceGetComputeInstanceId(self, h: Any) -> int:
        return 0

    def nvmlDeviceGetComputeRunningProcesses(self, h: Any) -> list[Any]:
        if h == ("mig", 0, 0):
            return [_Obj(pid=4242, usedGpuMemory=512 * 1024 * 1024, gpuInstanceId=1, computeInstanceId=0)]
        return []

    def nvmlDeviceGetGpuInstancePossiblePlacements(self, h: Any, profile_id: int, arr: Any, count_ref: Any) -> None:
        pl = _A100_PROFILES[self._enum(profile_id)][4]
        if arr is not None:
            for k, (s, z) in enumerate(pl):
                arr[k].start, arr[k].size = s, z
        count_ref._obj.value = len(pl)


def test_nvml_backend_reads_gpus_instances_processes() -> None:
    fake = FakeNvml()
    b = NvmlBackend(fake)
    a100, t4 = b.gpus()
    assert (a100.name, a100.uuid, a100.memory_mib, a100.pci_device_id) == (
        "NVIDIA A100-SXM4-40GB", "GPU-0000", 40960, "0x20B010DE")
    assert a100.mig_capable and a100.mig_enabled and a100.mig_pending is False
    assert [(d.profile, d.start, d.size, d.uuid, d.gi_id) for d in a100.instances] == [
        ("2g.10gb", 0, 2, "MIG-bbbb", 2), ("3g.20gb", 4, 4, "MIG-aaaa", 1)]
    assert [(p.pid, p.mig_uuid, p.used_memory_mib) for p in a100.processes] == [(4242, "MIG-aaaa", 512)]
    assert not t4.mig_capable and t4.instances == () and t4.memory_mib == 15360
    profiles = b.gi_profiles(0)
    assert [(p.name, p.profile_id, p.placements) for p in profiles][:2] == [
        ("1g.5gb", 19, tuple((s, 1) for s in range(7))), ("2g.10gb", 14, ((0, 2), (2, 2), (4, 2)))]
    assert b.gi_profiles(1) == ()
    assert b.migparted_env() == {}
    b.close()
    assert fake.calls == ["init", "shutdown"]


def test_probe_compares_with_the_catalog() -> None:
    report = probe(FakeNvml())
    assert report["driver_version"] == "550.54.15" and not report["matches_catalog"]
    a100, t4 = report["gpus"]
    assert a100["catalog_model"] == "A100-SXM4-40GB" and a100["mig_enabled"]
    by_name = {p["name"]: p for p in a100["profiles"]}
    assert by_name["1g.5gb"]["findings"] == []
    assert by_name["2g.10gb"]["findings"] == [
        "2g.10gb: NVML reports 9984 MiB, the catalog 9856 MiB (+128 MiB, catalog value nvml)"]
    assert by_name["3g.20gb"]["findings"] == ["3g.20gb: NVML placements 0:4, the catalog 0:4 4:4"]
    assert any("1g.10gb" in f and "not offered by NVML" in f for f in a100["findings"])
    assert t4["catalog_model"] == "T4" and t4["profiles"] == [] and t4["findings"] == []
    text = render_text(report)
    assert "GPU 0: NVIDIA A100-SXM4-40GB (GPU-0000) 40960 MiB, MIG enabled" in text
    assert "instance 3g.20gb@4 MIG-aaaa" in text and "differs from the catalog" in text


def test_hwcheck_json_with_fake_nvml(capsys: pytest.CaptureFixture[str]) -> None:
    rc = hwcheck.run(argparse.Namespace(json=True), nvml=FakeNvml())
    out = capsys.readouterr().out
    assert rc == 0
    doc = json.loads(out)
    assert [g["name"] for g in doc["gpus"]] == ["NVIDIA A100-SXM4-40GB", "Tesla T4"]


@pytest.mark.parametrize("as_json", [False, True])
def test_hwcheck_without_driver_exits_1(capsys: pytest.CaptureFixture[str], as_json: bool) -> None:
    try:
        NvmlBackend().close()
        pytest.skip("an NVIDIA driver is present")
    except GpuBackendError:
        pass
    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    hwcheck.add_parser(sub)
    args = p.parse_args(["hwcheck", *(["--json"] if as_json else [])])
    assert hwcheck.run(args) == 1
    out, err = capsys.readouterr()
    assert "dynamig hwcheck: no NVIDIA driver" in err
    if as_json:
        doc = json.loads(out)
        assert doc["driver_version"] is None and doc["error"].startswith("no NVIDIA driver")
    else:
        assert out == ""


def test_hwcheck_prints_possible_placements_per_profile_matching_the_catalog() -> None:
    """Over the fake pynvml (A100-80GB and H100-80GB, NVML's placement rules), every profile's
    possible placements are printed and agree with the catalog; nothing is changed."""
    from tests.fakes.fake_pynvml import FakeNvml

    fake = FakeNvml(["A100-SXM4-80GB", "H100-80GB"])
    fake.create(0, "3g.40gb", 4)
    report = probe(fake)
    assert report["matches_catalog"], [g["findings"] for g in report["gpus"]]
    a100 = report["gpus"][0]
    by_name = {p["name"]: p for p in a100["profiles"]}
    assert by_name["3g.40gb"]["placements"] == [[0, 4], [4, 4]]  # whatever is occupied
    assert by_name["1g.20gb"]["placements"] == [[0, 2], [2, 2], [4, 2], [6, 2]]
    text = render_text(report)
    assert "profile 1g.10gb     id 19    9728 MiB placements 0:1 1:1 2:1 3:1 4:1 5:1 6:1  [ok]" in text
    assert "instance 3g.40gb@4" in text and "matches the catalog" in text
    assert fake.mutations == 0


def test_the_applier_flags_resolve_the_node_applier() -> None:
    from deviceplugin.apply import resolve_applier
    from models.types import Applier, NodeMode

    assert resolve_applier("mig-parted", None, NodeMode.MIG, "n") is Applier.MIG_PARTED
    assert resolve_applier("nvml", None, NodeMode.MIG, "n") is Applier.NVML
    assert resolve_applier("mig-parted", Applier.NVML, NodeMode.MIG, "n") is Applier.NVML  # nodeconfig wins
