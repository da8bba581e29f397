"""The simulated GPU state file is rewritten only when a transaction changed it (write path)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from deviceplugin.backend import GpuBackendError
from deviceplugin.sim import SimBackend
from models.types import NodeMode


def backend(tmp_path: Path) -> SimBackend:
    return SimBackend.create(str(tmp_path / "gpus.json"), "n1", [("A100-SXM4-80GB", 2)], NodeMode.MIG)


def test_a_transaction_that_changes_nothing_leaves_the_file_alone(tmp_path: Path) -> None:
    b = backend(tmp_path)
    before = os.stat(b.path)
    with b.transaction() as st:
        st.gpu(0)  # reads only
    with b.transaction() as st:
        st.gpu(1)["health"] = st.gpu(1)["health"]  # a change back to what it was
    after = os.stat(b.path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_change_is_written_atomically_and_reads_back(tmp_path: Path) -> None:
    b = backend(tmp_path)
    ino = os.stat(b.path).st_ino
    b.add_process(0, 4242, None, 10)
    assert os.stat(b.path).st_ino != ino  # a new file renamed over the old one
    assert [p.pid for p in b.gpus()[0].processes] == [4242]
    assert json.loads(Path(b.path).read_text())["gpus"][0]["processes"][0]["pid"] == 4242
    with pytest.raises(RuntimeError), b.transaction() as st:  # what happened before an error stays done
        st.remove_process(4242)
        raise RuntimeError("boom")
    assert b.gpus()[0].processes == ()
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".sim-")]  # no temporary file left


def test_an_unreadable_state_is_a_clear_error(tmp_path: Path) -> None:
    b = backend(tmp_path)
    Path(b.path).write_text("{not json")
    with pytest.raises(GpuBackendError, match="cannot read simulated GPU state"), b.transaction():
        pass
    Path(b.path).write_text('{"v": 99}')
    with pytest.raises(GpuBackendError, match="not a dynamig simulated GPU state"):
        b.gpus()
