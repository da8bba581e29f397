"""Shared test helpers: every plan a test sees goes through the validator."""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
SHARED = os.path.join(os.path.dirname(ROOT), "shared")

# The openb trace (Alibaba cluster-trace-gpu-v2023, shared/data/openb/README.md for provenance and
# attribution): $DYNAMIG_OPENB, else shared/data/openb beside the repository (where CI lays it) or
# inside it. The tests that read it FAIL when it is absent: a silent skip hid a missing data set.
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

OPENB_FILES = ("openb_node_list_gpu_node.csv", "openb_pod_list_default.csv")
_CANDIDATES = tuple(
    p for p in (Path(os.environ["DYNAMIG_OPENB"]) if os.environ.get("DYNAMIG_OPENB") else None,
                Path(ROOT).parent / "shared/data/openb", Path(ROOT) / "shared/data/openb")
    if p is not None
)
OPENB = next((p for p in _CANDIDATES if all((p / f).is_file() for f in OPENB_FILES)), _CANDIDATES[0])


def openb_missing() -> str | None:
    """Why the openb data cannot be used (None when it can)."""
    absent = [f for f in OPENB_FILES if not (OPENB / f).is_file()]
    if not absent:
        return None
    return (f"openb trace not found: {', '.join(absent)} missing (looked in {', '.join(map(str, _CANDIDATES))}). "
            "Put the shared/ folder beside the repository (CI does), or set DYNAMIG_OPENB to a folder with "
            "the csv/ files of alibaba/clusterdata cluster-trace-gpu-v2023.")


@pytest.fixture
def _openb_data() -> Path:
    why = openb_missing()
    if why:
        pytest.fail(why, pytrace=False)
    return OPENB


#: Mark for tests that read the openb trace: they fail (not skip) with a clear message without it.
needs_openb = pytest.mark.usefixtures("_openb_data")


@pytest.fixture(scope="session")
def helm() -> str:
    """The helm binary, fetched (once per session) by scripts/fetch-helm.sh."""
    import subprocess

    proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "fetch-helm.sh")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"fetch-helm.sh failed:\n{proc.stderr}"
    path = proc.stdout.strip().splitlines()[-1]
    assert Path(path).is_file(), path
    return path
