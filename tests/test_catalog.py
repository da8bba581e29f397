from __future__ import annotations

import pytest

from models.catalog import CATALOG, STANDARD_CLASSES, match_nvml_name, model
from models.config import builtin_device_config
from models.errors import CatalogError, LayoutError
from models.layouts import Slot, enumerate_layouts, is_valid, layout_problems, make_layout, realize

SEVEN = [m.name for m in CATALOG if m.compute_slices == 7]


def test_a100_40gb_has_19_maximal_layouts_including_4g_plus_3g() -> None:
    full = enumerate_layouts("A100-SXM4-40GB", maximal_only=True)
    assert len(full) == 19
    assert make_layout([Slot("4g.20gb", 0), Slot("3g.20gb", 4)]) in full
    assert len(enumerate_layouts("A100-SXM4-40GB")) == 297


def test_a30_has_5_maximal_and_25_layouts() -> None:
    full = enumerate_layouts("A30", maximal_only=True)
    assert len(full) == 5
    assert len(enumerate_layouts("A30")) == 25
    assert make_layout([Slot("2g.12gb", 2), Slot("1g.6gb", 0), Slot("1g.6gb", 1)]) in full


def test_two_memory_slice_1g_gives_78_maximal_layouts() -> None:
    classes = STANDARD_CLASSES | {"1g-2mem"}
    assert len(enumerate_layouts("A100-SXM4-80GB", classes, maximal_only=True)) == 78
    assert len(enumerate_layouts("A100-SXM4-80GB", classes)) == 722


@pytest.mark.parametrize("name", SEVEN)
def test_every_seven_slice_model_has_the_same_layout_space(name: str) -> None:
    assert len(enumerate_layouts(name, maximal_only=True)) == 19


def test_placement_rules() -> None:
    m = model("A100-SXM4-40GB")
    assert not is_valid(m, [Slot("1g.5gb", 7)])  # never slot 7
    assert not is_valid(m, [Slot("3g.20gb", 0), Slot("4g.20gb", 0)])  # 4g impossible after 3g@0
    assert not is_valid(m, [Slot("2g.10gb", 4), Slot("3g.20gb", 4)])
    assert is_valid(m, [Slot("4g.20gb", 0), Slot("3g.20gb", 4)])
    assert layout_problems(m, [Slot("4g.20gb", 0), Slot("3g.20gb", 4), Slot("1g.5gb", 6)])
    assert layout_problems(m, [Slot("1g.5gb+me", 0), Slot("1g.5gb+me", 1)])  # one +me per GPU
    assert layout_problems(m, [Slot("9g.99gb", 0)])


def test_profile_names_are_per_model() -> None:
    assert model("A100-SXM4-40GB").profile("1g.10gb").memory_slices == 2
    assert model("A100-SXM4-80GB").profile("1g.10gb").memory_slices == 1
    with pytest.raises(CatalogError):
        model("A30").profile("7g.40gb")


def test_nvml_matching_first_group_wins_and_h200_is_not_h20() -> None:
    assert match_nvml_name("NVIDIA A100-SXM4-40GB").name == "A100-SXM4-40GB"  # type: ignore[union-attr]
    assert match_nvml_name("NVIDIA A100-PCIE-80GB").name == "A100-SXM4-80GB"  # type: ignore[union-attr]
    assert match_nvml_name("NVIDIA H200 NVL").name == "H200"  # type: ignore[union-attr]
    assert match_nvml_name("NVIDIA H20").name == "H20"  # type: ignore[union-attr]
    assert match_nvml_name("NVIDIA GH200 480GB").name == "GH200"  # type: ignore[union-attr]
    assert match_nvml_name("NVIDIA GB200").name == "GB200"  # type: ignore[union-attr]
    assert match_nvml_name("NVIDIA B200").name == "B200"  # type: ignore[union-attr]
    assert match_nvml_name("NVIDIA Tesla K80") is None
    with pytest.raises(CatalogError):
        model("K80")


def test_realize_is_deterministic_and_valid() -> None:
    m = model("A100-SXM4-40GB")
    lay = realize(m, {"1g.5gb": 1, "2g.10gb": 3})
    assert lay == make_layout([Slot("2g.10gb", 0), Slot("2g.10gb", 2), Slot("2g.10gb", 4), Slot("1g.5gb", 6)])
    lay2 = realize(m, {"3g.20gb": 1, "2g.10gb": 1, "1g.5gb": 2})
    assert is_valid(m, lay2) and len(lay2) == 4
    with pytest.raises(LayoutError):
        realize(m, {"4g.20gb": 1, "3g.20gb": 1, "1g.5gb": 1})


def test_default_templates_are_valid_layouts_for_every_group() -> None:
    cfg = builtin_device_config()
    for m in CATALOG:
        if not m.mig_capable or m.name == "GB200":
            continue
        lays = cfg.template_layouts(m)
        assert lays, m.name
        for t in lays:
            assert is_valid(m, t.layout), (m.name, t)


def test_real_memory_in_defaults() -> None:
    doc = builtin_device_config().groups[1].geometries[0].entries[0]
    assert (doc.name, doc.memory) == ("1g.5gb", 4864)  # real, not HAMi's nominal 5120 (#1054)


def test_device_names_map_back_to_their_model() -> None:
    from models.catalog import device_name, nvml_names

    for m in CATALOG:
        assert all(n.startswith("NVIDIA") for n in nvml_names(m))
        assert match_nvml_name(device_name(m)) is m, m.name
    assert device_name(model("H200")) == "NVIDIA H200 NVL"
    assert device_name(model("H20")) == "NVIDIA H20"
