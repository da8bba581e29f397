"""notebooks/live_cluster.ipynb runs headless in its small configuration and writes its three plots."""

from __future__ import annotations

from pathlib import Path

import nbclient  # the dev extras: a missing notebook toolchain fails, never skips
import nbformat
import pytest
from conftest import OPENB, needs_openb

ROOT = Path(__file__).resolve().parents[1]
PNGS = ("churn_delay_vs_load.png", "churn_reconfigurations.png", "churn_utilisation.png")


@needs_openb
@pytest.mark.timeout(120)
def test_live_cluster_notebook_small(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DYNAMIG_NB_SMALL", "1")
    monkeypatch.setenv("DYNAMIG_NB_OUT", str(tmp_path))
    monkeypatch.setenv("DYNAMIG_OPENB", str(OPENB))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(ROOT / "notebooks" / "live_cluster.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=100, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "configuration: small" in text and "sustainable" in text
    for png in PNGS:
        f = tmp_path / png
        assert f.is_file() and f.stat().st_size > 5000 and f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
