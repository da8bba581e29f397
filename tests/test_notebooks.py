"""The notebooks run headless (nbclient) in their small configuration and write their plots."""

from __future__ import annotations

import os
from pathlib import Path

import nbclient  # the dev extras: a missing notebook toolchain fails, never skips
import nbformat
import pytest
from conftest import OPENB, needs_openb

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
DATA = OPENB

CASES = {
    "capacity_whatif.ipynb": ("capacity_whatif_nodes.png", "capacity_whatif_mig_vs_hami.png"),
    "solver_benchmark.ipynb": ("solver_benchmark_latency.png", "solver_benchmark_quality.png"),
}


@needs_openb
@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", sorted(CASES))
def test_notebook_runs_small_and_writes_plots(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DYNAMIG_NB_SMALL", "1")
    monkeypatch.setenv("DYNAMIG_NB_OUT", str(tmp_path))
    monkeypatch.setenv("DYNAMIG_OPENB", str(DATA))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=180, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "configuration: small" in text
    for png in CASES[name]:
        f = tmp_path / png
        assert f.is_file() and f.stat().st_size > 5000, png
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not any(os.path.samefile(tmp_path, p) for p in [ROOT / "docs"] if p.exists())
