"""The CLI as a newcomer meets it: --version, log options after the subcommand, help without
docstring markup, usage errors exit 2 before any work, simulate says how it tuned the workload."""

from __future__ import annotations

import argparse
import logging

import pytest
from conftest import ROOT

from dynamig import cli


def main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``dynamig ARGS`` in this process (a subprocess costs seconds of imports): (exit code, out, err)."""
    try:
        code = cli.main(list(args))
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = main(capsys, "--version")
    assert code == 0 and out.startswith("dynamig ") and out.split()[1][0].isdigit()


@pytest.mark.parametrize("argv, level", [
    (["catalog"], logging.WARNING),
    (["-v", "catalog"], logging.INFO),
    (["catalog", "-v"], logging.INFO),
    (["-v", "catalog", "-v"], logging.DEBUG),
    (["catalog", "--log-level", "debug"], logging.DEBUG),
    (["--log-level", "error", "catalog"], logging.ERROR),
    (["--log-level", "error", "catalog", "--log-level", "info"], logging.INFO),
])
def test_log_options_before_and_after_the_subcommand(argv: list[str], level: int) -> None:
    args = cli.build_parser().parse_args(argv)
    assert cli.log_level(args) == level


def test_bad_log_level_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = main(capsys, "catalog", "--log-level", "loud")
    assert code == 2 and "invalid choice" in err


@pytest.mark.parametrize("command", ["simulate", "extender", "demo", "plan", "validate-config"])
def test_help_has_no_docstring_markup(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = main(capsys, command, "--help")
    assert code == 0 and out.startswith(f"usage: dynamig {command}")
    assert "``" not in out and ":func:" not in out and ":class:" not in out
    assert "DESIGN §" not in out


def test_clean_doc() -> None:
    text = "Run ``dynamig x`` via :func:`solver.plan` (DESIGN §4).\n\n* one\n* two\n"
    assert cli.clean_doc(text) == "Run dynamig x via solver.plan.\n\n- one\n- two\n"
    assert cli.clean_text("inventory YAML (DESIGN §8)") == "inventory YAML (docs/formats.md)"


@pytest.mark.parametrize("argv, message", [
    (["demo", "--pods", "0"], "expected a positive integer"),
    (["demo", "--port", "70000"], "expected a port"),
    (["demo", "--fail-migparted", "foo"], "expected NODE=N"),
    (["simulate", "--nodes", "x.csv"], "required: --pods"),
    (["bench", "--batch-budget-ms", "0"], "must be positive"),
    (["bench", "--nodes", "0"], "must be at least 1"),
])
def test_usage_errors_exit_2_before_any_work(argv: list[str], message: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = main(capsys, *argv)
    assert code == 2 and message in err
    assert "Traceback" not in err and "starting" not in err


def test_simulate_says_how_it_tuned_the_workload(capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    base = ["simulate", "--inventory", "examples/inventories/small-mig.yaml", "--pods",
            "examples/pods/inference-mig.yaml", "--seeds", "1", "--processes", "1", "--json"]
    code, _, err = main(capsys, *base)
    assert code == 0, err
    assert "--tune 1.3: the 1 pod(s) of examples/pods/inference-mig.yaml are shuffled and resampled" in err
    code, _, err = main(capsys, *base, "--tune", "0")
    assert code == 0, err
    assert "--tune 0: the 1 pod(s)" in err and "replayed as given" in err


def test_subcommand_log_options_do_not_leak_into_the_namespace_defaults() -> None:
    args = cli.build_parser().parse_args(["catalog"])
    assert isinstance(args, argparse.Namespace)
    assert not hasattr(args, "verbose_sub") and not hasattr(args, "log_level_sub")
