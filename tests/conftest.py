"""Shared test helpers: every plan a test sees goes through the validator."""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
SHARED = os.path.join(os.path.dirname(ROOT), "shared")

# The openb trace (shared/data/openb beside the repository, or inside it); tests that read it skip
# when it is absent.
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

OPENB = next(
    (p for p in (Path(ROOT) / "shared/data/openb", Path(ROOT).parent / "shared/data/openb") if p.is_dir()),
    Path(ROOT) / "shared/data/openb",
)
needs_openb = pytest.mark.skipif(not OPENB.is_dir(), reason="openb data not present")
