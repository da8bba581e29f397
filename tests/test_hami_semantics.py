"""HAMi's semantics reproduced: first-match inside a geometry (entry order), model/type matching on
the NVML device name in HAMi's direction, deviceSplitCount capping MIG units."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import pytest
import yaml
from conftest import DATA
from hypothesis import given, settings
from hypothesis import strategies as st
from test_planner import mig_node, pod

from models.catalog import model
from models.deviceconfig import load_device_config, load_device_config_text
from models.errors import RequestError
from models.requests import gpu_allowed, parse_pod
from models.resources import ResourceNames
from models.templates import DeviceConfig
from models.types import ClusterState, Gpu, MigInstance, NodeMode, gpu_uuid
from models.validate import validate
from solver import PlannerConfig, plan

A100_40 = model("A100-SXM4-40GB")


def _cfg(geometries: list[list[dict[str, Any]]], models: tuple[str, ...] = ("A100-SXM4-40GB",)) -> DeviceConfig:
    doc = {"nvidia": {"knownMigGeometries": [{"models": list(models), "allowedGeometries": geometries}]}}
    return load_device_config_text(yaml.safe_dump(doc)).config


def _e(name: str, count: int) -> dict[str, Any]:
    return {"name": name, "memory": A100_40.profile(name).memory_mib, "count": count}


def _plan_one(cfg: DeviceConfig, mem: int, state: ClusterState | None = None) -> tuple[str, int | None]:
    st_ = state or ClusterState((mig_node("a"),))
    p = pod("p", mem)
    out = plan(st_, p, PlannerConfig(templates=cfg))
    assert validate(st_, out, {p.key: p}, cfg) == []
    u = out.placements[0].units[0]
    assert u.slot is not None
    return u.slot.profile, u.template_index


def test_issue_reproducer_first_entry_of_first_geometry() -> None:
    # A100-40GB, first geometry [2g.10gb x1, 1g.5gb x5], gpu 1 gpumem 3000 -> HAMi takes 2g.10gb
    cfg = _cfg([[_e("2g.10gb", 1), _e("1g.5gb", 5)], [_e("1g.5gb", 7)]])
    assert _plan_one(cfg, 3000) == ("2g.10gb", 0)


def test_entry_order_reversed_takes_the_small_one() -> None:
    cfg = _cfg([[_e("1g.5gb", 5), _e("2g.10gb", 1)], [_e("1g.5gb", 7)]])
    assert _plan_one(cfg, 3000) == ("1g.5gb", 0)


def test_entry_that_does_not_serve_is_passed_over() -> None:
    # 6000 MiB: 1g.5gb (4864) does not serve, so the 2g.10gb entry is the first that does
    cfg = _cfg([[_e("1g.5gb", 5), _e("2g.10gb", 1)]])
    assert _plan_one(cfg, 6000) == ("2g.10gb", 0)


def test_first_geometry_with_a_serving_entry_wins_over_a_better_fit() -> None:
    cfg = _cfg([[_e("3g.20gb", 2)], [_e("1g.5gb", 7)]])
    assert _plan_one(cfg, 3000) == ("3g.20gb", 0)


def hami_first_match(geos: list[list[tuple[str, int]]], req: int) -> tuple[str, int] | None:
    """HAMi's AddResourceUsage reset branch, on real instance memory (#1054): the first entry, over
    geometries in order, whose memory >= the request."""
    for t, geo in enumerate(geos):
        for name, count in geo:
            if count and A100_40.profile(name).memory_mib >= req:
                return name, t
    return None


# Legal A100-40GB geometries with distinct profiles, entries in any order.
_GEOS = [[("1g.5gb", 7)], [("1g.5gb", 1), ("2g.10gb", 3)], [("2g.10gb", 1), ("1g.5gb", 5)], [("3g.20gb", 2)],
         [("7g.40gb", 1)], [("4g.20gb", 1), ("3g.20gb", 1)], [("3g.20gb", 1), ("2g.10gb", 1), ("1g.5gb", 2)]]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(_GEOS), min_size=1, max_size=4, unique_by=lambda g: tuple(g)).flatmap(
    lambda gs: st.tuples(st.just(gs), st.permutations(range(len(gs))))),
    st.sampled_from([1000, 4864, 5000, 9856, 12000, 19968, 30000, 40192]))
def test_selection_matches_hami_on_geometries_in_any_entry_order(case: Any, req: int) -> None:
    geos, perm = case
    shuffled = [list(reversed(g)) if i % 2 else g for i, g in enumerate(geos[j] for j in perm)]
    cfg = _cfg([[_e(n, c) for n, c in g] for g in shuffled])
    want = hami_first_match(shuffled, req)
    st_ = ClusterState((mig_node("a"),))
    p = pod("p", req)
    out = plan(st_, p, PlannerConfig(templates=cfg))
    assert validate(st_, out, {p.key: p}, cfg) == []
    if want is None:
        assert not out.placements[0].placed
        return
    u = out.placements[0].units[0]
    assert u.slot is not None
    assert (u.slot.profile, u.template_index) == want


# --------------------------------------------------------------------------- type matching


def _gpu(nvml: str, catalog: str) -> Gpu:
    m = model(catalog)
    return Gpu(gpu_uuid("n", 0), 0, m.name, NodeMode.MIG, m.memory_mib, nvml_name=nvml)


def _allowed(ann: dict[str, str], g: Gpu) -> bool:
    p = parse_pod({"metadata": {"name": "p", "annotations": ann},
                   "spec": {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": 1}}}]}})
    return gpu_allowed(p, g) is None


@pytest.mark.parametrize(("ann", "nvml", "catalog", "ok"), [
    ({"nvidia.com/use-gputype": "A100"}, "NVIDIA A100-PCIE-40GB", "A100-SXM4-40GB", True),
    ({"nvidia.com/nouse-gputype": "A100"}, "NVIDIA A10", "A10", True),  # A100 does not exclude an A10
    ({"nvidia.com/nouse-gputype": "A10"}, "NVIDIA A100-SXM4-40GB", "A100-SXM4-40GB", False),  # HAMi: substring
    ({"nvidia.com/use-gputype": "H200"}, "NVIDIA H20", "H20", False),  # H200 never admits an H20
    ({"nvidia.com/use-gputype": "H20"}, "NVIDIA H200 NVL", "H200", True),  # HAMi's direction: H20 in H200
    ({"nvidia.com/use-gputype": "GH200"}, "NVIDIA GH200 480GB", "GH200", True),
    ({"nvidia.com/use-gputype": "GH200"}, "NVIDIA H200", "H200", False),
    ({"nvidia.com/use-gputype": "NVIDIA"}, "NVIDIA A30", "A30", True),  # the vendor prefix is in the name
    ({"nvidia.com/use-gputype": "pcie"}, "NVIDIA A100-PCIE-40GB", "A100-SXM4-40GB", True),  # case-insensitive
    ({"nvidia.com/use-gputype": "PCIE"}, "NVIDIA A100-SXM4-40GB", "A100-SXM4-40GB", False),  # SXM4 != PCIe
    ({"nvidia.com/nouse-gputype": "SXM4"}, "NVIDIA A100-SXM4-80GB", "A100-SXM4-80GB", False),
    ({"nvidia.com/use-gputype": ""}, "NVIDIA A30", "A30", True),  # HAMi: "" is in every name
    ({"nvidia.com/nouse-gputype": ""}, "NVIDIA A30", "A30", False),  # ... so nouse "" excludes every GPU
])
def test_type_annotations_match_the_nvml_name_as_hami_does(ann: dict[str, str], nvml: str, catalog: str,
                                                           ok: bool) -> None:
    assert _allowed(ann, _gpu(nvml, catalog)) is ok


def test_unpublished_name_falls_back_to_the_catalogs_nvml_name() -> None:
    g = replace(_gpu("", "A100-SXM4-40GB"))
    assert g.device_name == "NVIDIA A100-SXM4-40GB"
    assert _allowed({"nvidia.com/use-gputype": "A100-SXM4"}, g)


def test_group_a100_names_both_a100_models_like_hami() -> None:
    # HAMi's own test config: models ["A100"] with 40GB profiles; it must not resolve to the A10
    loaded = load_device_config_text(yaml.safe_dump({"nvidia": {"knownMigGeometries": [
        {"models": ["A100"], "allowedGeometries": [[{"name": "1g.5gb", "memory": 5120, "count": 7}],
                                                   [{"name": "1g.10gb", "memory": 9728, "count": 7}]]}]}}))
    cfg = loaded.config
    assert [t.index for t in cfg.template_layouts(model("A100-SXM4-40GB"))] == [0]
    assert [t.index for t in cfg.template_layouts(model("A100-SXM4-80GB"))] == [1]
    assert cfg.group_for(model("A10")) is None


def test_h200_is_not_captured_by_hamis_h20_group() -> None:
    loaded = load_device_config(os.path.join(DATA, "hami-v2.9.0-device-config.yaml"))
    cfg = loaded.config
    h200 = cfg.template_layouts(model("H200"))
    assert [s.profile for s in h200[0].layout] == ["1g.18gb"] * 7
    assert cfg.group_for_name("NVIDIA H200 NVL") is cfg.groups[6]
    assert cfg.group_for_name("NVIDIA H20") is cfg.groups[5]
    assert any("'H20' is also part of H200's NVML name" in w.message for w in loaded.warnings)


# --------------------------------------------------------------------------- deviceSplitCount


def test_device_split_count_caps_mig_units_per_gpu() -> None:
    node = mig_node("a")
    g = node.gpus[0]
    cfg = PlannerConfig()
    tpl = cfg.templates.template_layouts(A100_40)[0].layout  # 7 x 1g.5gb
    g2 = replace(g, split=2, instances=tuple(MigInstance(s, f"t/old{i}/0/0" if i < 2 else None)
                                             for i, s in enumerate(tpl)))
    state = ClusterState((replace(node, gpus=(g2,)),))
    p = pod("p", 3000)
    out = plan(state, p, cfg)
    assert not out.placements[0].placed  # HAMi: CardTimeSlicingExhausted
    assert "deviceSplitCount" in " ".join(why for _, why in out.reasons)
    g3 = replace(g2, split=3)
    state3 = ClusterState((replace(node, gpus=(g3,)),))
    out3 = plan(state3, p, cfg)
    assert out3.placements[0].placed
    assert validate(state3, out3, {p.key: p}, cfg.templates) == []


def test_validator_rejects_a_plan_over_the_split() -> None:
    cfg = PlannerConfig()
    state = ClusterState((mig_node("a"),))
    p = pod("p", 3000, n=3)
    out = plan(state, p, cfg)
    assert out.placements[0].placed
    capped = ClusterState((replace(mig_node("a"), gpus=(replace(mig_node("a").gpus[0], split=2),)),))
    assert any(v.kind == "mig-split" for v in validate(capped, out, {p.key: p}, cfg.templates))


def test_device_config_split_and_resource_names() -> None:
    loaded = load_device_config_text(yaml.safe_dump({"nvidia": {
        "resourceCountName": "example.com/vgpu", "resourceMemoryName": "example.com/vmem",
        "deviceSplitCount": 4, "knownMigGeometries": [
            {"models": ["A30"], "allowedGeometries": [[{"name": "1g.6gb", "memory": 5952, "count": 4}]]}]}}))
    cfg = loaded.config
    assert cfg.split == 4
    assert cfg.resources == ResourceNames(gpu="example.com/vgpu", gpumem="example.com/vmem")
    manifest = {"metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "c", "resources": {"limits": {"example.com/vgpu": 2, "example.com/vmem": 3000}}}]}}
    req = parse_pod(manifest, cfg.resources)
    assert (req.containers[0].count, req.containers[0].memory_mib) == (2, 3000)
    assert not parse_pod(manifest).wants_gpu  # under the default names it asks for nothing


# --------------------------------------------------------------------------- stricter-than-HAMi decisions


def _manifest(ann: dict[str, str], n: int = 1) -> dict[str, Any]:
    return {"metadata": {"name": "p", "annotations": ann},
            "spec": {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": n}}}]}}


@pytest.mark.parametrize(("value", "message"), [
    ("MIG", "lower case, as HAMi compares it"),  # HAMi: Contains("MIG", "mig") is false -> pending forever
    ("mps", "expected 'mig' or 'hami-core'"),  # no MPS GPUs in dynamig
    ("", "empty, which HAMi matches to no GPU"),  # HAMi: "" contains no mode -> pending forever
])
def test_vgpu_modes_hami_would_leave_pending_are_clear_errors(value: str, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        parse_pod(_manifest({"nvidia.com/vgpu-mode": value}))


def test_vgpu_mode_substring_rule_as_hami() -> None:
    req = parse_pod(_manifest({"nvidia.com/vgpu-mode": "mig,hami-core"}))
    assert req.modes == frozenset({NodeMode.MIG, NodeMode.HAMI_CORE})


def test_numa_bind() -> None:
    parse_pod(_manifest({"nvidia.com/numa-bind": "true"}))  # one GPU is on one NUMA node: satisfied
    parse_pod(_manifest({"nvidia.com/numa-bind": "false"}, n=2))
    with pytest.raises(RequestError, match="numa-bind=true with more than one GPU"):
        parse_pod(_manifest({"nvidia.com/numa-bind": "1"}, n=2))  # Go's ParseBool accepts 1
