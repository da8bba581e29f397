"""models.yamlsrc: duplicate keys are errors naming file and line; .json files are strict JSON."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.errors import ConfigError
from models.yamlsrc import load_file, load_pod_manifests, load_text


def test_duplicate_yaml_key_names_file_and_both_lines() -> None:
    with pytest.raises(ConfigError) as e:
        load_text("nodes:\n  - name: a\n    mode: mig\n    mode: hami-core\n", "inv.yaml")
    assert "inv.yaml:4" in str(e.value) and "duplicate key 'mode'" in str(e.value) and "line 3" in str(e.value)


def test_same_key_in_different_mappings_is_fine_and_lines_are_kept() -> None:
    loc = load_text("a:\n  x: 1\nb:\n  x: 2\n", "ok.yaml")
    assert loc.data == {"a": {"x": 1}, "b": {"x": 2}}
    assert loc.line("b.x") == 4


def test_yaml_merge_keys_still_work() -> None:
    loc = load_text("base: &b {x: 1}\nother:\n  <<: *b\n  y: 2\n", "m.yaml")
    assert loc.data["other"] == {"x": 1, "y": 2}


def test_json_trailing_comma_is_an_error_with_its_line() -> None:
    with pytest.raises(ConfigError) as e:
        load_text('{"nodeconfig": [\n  {"name": "n1"},\n]}\n', "nodeconfig.json")
    assert "nodeconfig.json:3" in str(e.value) and "trailing comma" in str(e.value)


def test_json_duplicate_key_is_an_error_with_its_line() -> None:
    with pytest.raises(ConfigError) as e:
        load_text('{"nodeconfig": [],\n "nodeconfig": []}', "n.json")
    assert "n.json:2" in str(e.value) and "duplicate key" in str(e.value)


def test_valid_json_keeps_line_numbers() -> None:
    loc = load_text('{\n "nodeconfig": [\n  {"name": "n1"}\n ]\n}\n', "n.json")
    assert loc.data == {"nodeconfig": [{"name": "n1"}]} and loc.line("nodeconfig[0].name") == 3


def test_pod_manifests_reject_duplicate_keys(tmp_path: Path) -> None:
    f = tmp_path / "pods.yaml"
    f.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n---\nkind: Pod\nmetadata: {name: b}\n"
                 "metadata: {name: c}\n")
    with pytest.raises(ConfigError) as e:
        load_pod_manifests(str(f))
    assert f"{f}:7" in str(e.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read file"):
        load_file(str(tmp_path / "nope.yaml"))


def test_validate_config_rejects_a_nodeconfig_json_with_a_trailing_comma(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dynamig import cli

    f = tmp_path / "nodeconfig.json"
    f.write_text('{"nodeconfig": [{"name": "gpu-1", "operatingmode": "mig"},]}\n')
    assert cli.main(["validate-config", str(f)]) == 1
    err = capsys.readouterr().err
    assert f"{f}:1" in err and "trailing comma" in err and "Traceback" not in err
