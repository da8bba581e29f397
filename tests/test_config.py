from __future__ import annotations

import json
import os

import pytest
import yaml
from conftest import DATA

from models.catalog import model
from models.config import (
    builtin_device_config,
    builtin_device_config_document,
    load_device_config,
    load_device_config_text,
    load_inventory_text,
    parse_node_config,
)
from models.errors import ConfigError
from models.types import NodeMode
from models.yamlsrc import load_text


def test_accepts_hamis_chart_file_verbatim() -> None:
    loaded = load_device_config(os.path.join(DATA, "hami-device-config.yaml"))
    cfg = loaded.config
    assert [g.models[0] for g in cfg.groups] == ["A30", "A100-SXM4-40GB", "A100-SXM4-80GB", "H100-PCIE-80GB"]
    assert len(cfg.groups[1].geometries) == 4
    # nominal memory above the real instance is accepted with a warning naming file, line and path
    assert any("1g.5gb declares 5120 MiB" in w.message for w in loaded.warnings)
    assert all("hami-device-config.yaml:" in w.where for w in loaded.warnings)


def test_builtin_document_round_trips_through_the_loader() -> None:
    text = yaml.safe_dump(builtin_device_config_document())
    loaded = load_device_config_text(text, "builtin.yaml")
    assert loaded.config == builtin_device_config()
    # real instance memory: no memory warning; only HAMi's substring overlaps are reported
    # ('H20' names every H200, 'B200' every GB200)
    assert loaded.warnings
    assert all("H200" in w.message or "GB200" in w.message for w in loaded.warnings)
    assert not any("declares" in w.message for w in loaded.warnings)


def _doc(geometries: object, models: object = ("A100-SXM4-40GB",)) -> str:
    return yaml.safe_dump({"nvidia": {"knownMigGeometries": [{"models": list(models),  # type: ignore[call-overload]
                                                              "allowedGeometries": geometries}]}})


def test_flat_form_is_rejected_with_the_grouped_form_shown() -> None:
    text = _doc([{"name": "1g.5gb", "memory": 4864, "count": 7}, {"name": "3g.20gb", "memory": 19968, "count": 2}])
    with pytest.raises(ConfigError) as e:
        load_device_config_text(text, "flat.yaml")
    msg = str(e.value)
    assert "flat list" in msg and "- - {name:" in msg
    assert msg.startswith("flat.yaml:") and "allowedGeometries" in msg


def test_unknown_profile_name_names_line_and_path() -> None:
    text = _doc([[{"name": "1g.6gb", "memory": 6000, "count": 7}]])
    with pytest.raises(ConfigError) as e:
        load_device_config_text(text, "bad.yaml")
    msg = str(e.value)
    assert "unknown MIG profile '1g.6gb' for A100-SXM4-40GB" in msg
    assert "allowedGeometries[0][0].name" in msg
    assert e.value.source.startswith("bad.yaml:")


def test_memory_above_the_instance_is_a_warning_with_the_real_size() -> None:
    # HAMi accepts any memory value (it checks no sums); dynamig fits against the real instance
    text = _doc([[{"name": "3g.20gb", "memory": 30000, "count": 2}]])
    loaded = load_device_config_text(text, "m.yaml")
    assert [w.message for w in loaded.warnings] == [
        "3g.20gb declares 30000 MiB but the instance has 19968 MiB on A100-SXM4-40GB; dynamig fits requests "
        "against the real size (HAMi #1054)"]
    assert loaded.warnings[0].where.startswith("m.yaml:")
    below = load_device_config_text(_doc([[{"name": "3g.20gb", "memory": 100, "core": 10, "count": 2}]]))
    msgs = " | ".join(w.message for w in below.warnings)
    assert "declares 100 MiB but the instance has 19968 MiB" in msgs
    assert "declares core 10 but the instance has 42%" in msgs


def test_layout_the_placement_rules_forbid_is_rejected() -> None:
    text = _doc([[{"name": "4g.20gb", "memory": 19968, "count": 1}, {"name": "3g.20gb", "memory": 19968, "count": 1},
                  {"name": "1g.5gb", "memory": 10, "count": 1}]])
    with pytest.raises(ConfigError, match="placement rules"):
        load_device_config_text(text)


def test_negative_count_and_duplicate_models() -> None:
    with pytest.raises(ConfigError, match="must not be negative, got -1"):
        load_device_config_text(_doc([[{"name": "1g.5gb", "memory": 4864, "count": -1}]]))
    dup = {"nvidia": {"knownMigGeometries": [
        {"models": ["A30"], "allowedGeometries": [[{"name": "1g.6gb", "memory": 5952, "count": 4}]]},
        {"models": ["A30"], "allowedGeometries": [[{"name": "4g.24gb", "memory": 24000, "count": 1}]]},
    ]}}
    loaded = load_device_config_text(yaml.safe_dump(dup))  # HAMi accepts it: the first group wins
    assert any("duplicate model 'A30'" in w.message for w in loaded.warnings)
    a30 = loaded.config.template_layouts(model("A30"))
    assert [t.index for t in a30] == [0]


def test_unknown_model_is_a_warning() -> None:
    loaded = load_device_config_text(_doc([[{"name": "1g.5gb", "memory": 1, "count": 1}]], models=["K80"]))
    assert any("['K80'] is part of no known MIG-capable GPU" in w.message for w in loaded.warnings)


def test_nodeconfig_hami_format() -> None:
    doc = {"nodeconfig": [{"name": "gpu-a", "operatingmode": "mig", "devicesplitcount": 4,
                           "filterdevices": {"uuid": [], "index": [3]}},
                          {"name": "gpu-b"}]}
    entries = parse_node_config(load_text(json.dumps(doc), "config.json"))
    assert entries[0].mode is NodeMode.MIG and entries[0].split == 4 and entries[0].filter_indexes == (3,)
    assert entries[1].mode is NodeMode.HAMI_CORE and entries[1].split == 10
    with pytest.raises(ConfigError, match="'mps' is not supported"):
        parse_node_config(load_text(json.dumps({"nodeconfig": [{"name": "x", "operatingmode": "mps"}]}), "c.json"))


INVENTORY = """
nodes:
  - name: gpu-a100-0
    mode: mig
    gpus: {model: A100-SXM4-40GB, count: 8}
    cpu_milli: 96000
    memory_mib: 393216
  - name: share-0
    mode: hami-core
    gpus: {model: A100-SXM4-80GB, count: 4}
    split: 10
"""


def test_inventory() -> None:
    inv = load_inventory_text(INVENTORY, "inv.yaml")
    assert [n.name for n in inv.nodes] == ["gpu-a100-0", "share-0"]
    assert inv.nodes[0].gpus == (("A100-SXM4-40GB", 8),)
    assert inv.templates == builtin_device_config()


def test_inventory_errors_name_line_and_field() -> None:
    bad = INVENTORY.replace("A100-SXM4-80GB", "K80")
    with pytest.raises(ConfigError) as e:
        load_inventory_text(bad, "inv.yaml")
    assert "inv.yaml:10" in str(e.value) and "nodes[1].gpus.model" in str(e.value)
    with pytest.raises(ConfigError, match="not MIG-capable"):
        load_inventory_text(INVENTORY.replace("A100-SXM4-40GB", "T4"), "inv.yaml")
    with pytest.raises(ConfigError, match="duplicate node name"):
        load_inventory_text(INVENTORY.replace("share-0", "gpu-a100-0"), "inv.yaml")


def test_configmap_manifest_errors_name_the_outer_line() -> None:
    loaded = load_device_config(os.path.join(DATA, "hami-v2.9.0-device-configmap.yaml"))
    first = next(w for w in loaded.warnings if "1g.6gb declares" in w.message)
    with open(os.path.join(DATA, "hami-v2.9.0-device-configmap.yaml"), encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    line = int(first.where.split(":")[1])
    assert lines[line - 1].strip() == "memory: 6144"  # the line in the manifest, not in the embedded text
    bad = yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "b"}})
    with pytest.raises(ConfigError, match=r"no data key 'device-config\.yaml'"):
        load_device_config_text(bad, "cm.yaml")


def test_v210_allowlist_offers_layouts_of_the_allowed_profiles_finest_first() -> None:
    cfg = load_device_config(os.path.join(DATA, "hami-v2.10.0-device-config.yaml")).config
    assert cfg.form == "migProfileAllowlist"
    a100 = cfg.template_layouts(model("A100-SXM4-40GB"))
    allowed = {"1g.5gb", "2g.10gb", "3g.20gb", "7g.40gb"}
    assert a100 and all({s.profile for s in t.layout} <= allowed for t in a100)
    assert [s.profile for s in a100[0].layout] == ["1g.5gb"] * 7
    assert [s.profile for s in a100[-1].layout] == ["7g.40gb"]
    # A100-80GB: HAMi's default lists '7g.79gb', which no GPU has, so no whole-GPU instance is offered
    a80 = {s.profile for t in cfg.template_layouts(model("A100-SXM4-80GB")) for s in t.layout}
    assert a80 == {"1g.10gb", "2g.20gb", "3g.40gb"}


@pytest.mark.parametrize(("nvidia", "message"), [
    ({"defaultMemory": 1024}, "defaultMemory: 1024 is not supported"),
    ({"memoryFactor": 2}, "memoryFactor: 2 is not supported"),
    ({"knownMigGeometries": [], "migProfileAllowlist": []}, "not both"),
    ({"migProfileAllowlist": [{"models": ["A30"], "profiles": ["big"]}]}, "invalid MIG profile 'big'"),
    ({"migProfileAllowlist": [{"models": ["A30"]}]}, "must define models and profiles"),
    ({"resourceCountName": "gpu"}, "resourceCountName must be an extended resource name"),
    ({"deviceSplitCount": 0}, "deviceSplitCount must be at least 1"),
])
def test_settings_dynamig_cannot_honour_are_rejected_naming_the_key(nvidia: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_device_config_text(yaml.safe_dump({"nvidia": nvidia}), "s.yaml")


def test_ignored_and_unknown_settings_are_warnings() -> None:
    loaded = load_device_config_text(yaml.safe_dump({"nvidia": {"gpuCorePolicy": "force", "shinyNewKey": 1}}))
    msgs = " | ".join(w.message for w in loaded.warnings)
    assert "gpuCorePolicy: 'force' is read by HAMi only" in msgs
    assert "unknown key 'shinyNewKey'" in msgs
    assert "no knownMigGeometries or migProfileAllowlist" in msgs
    assert loaded.config.groups == ()
