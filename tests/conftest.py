"""Shared test helpers: every plan a test sees goes through the validator."""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
