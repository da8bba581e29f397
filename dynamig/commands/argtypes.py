"""argparse value types shared by the commands: a bad value is a usage error (exit 2) that names it."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def _number(conv: Callable[[str], float], what: str, ok: Callable[[float], bool]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            v = conv(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not ok(v):
            raise argparse.ArgumentTypeError(f"expected {what}, got {v:g}")
        return v
    return parse


positive_int: Callable[[str], int] = _number(int, "a positive integer", lambda v: v >= 1)  # type: ignore[assignment]
non_negative_int: Callable[[str], int] = _number(int, "an integer >= 0", lambda v: v >= 0)  # type: ignore[assignment]
port: Callable[[str], int] = _number(int, "a port in 0..65535", lambda v: 0 <= v <= 65535)  # type: ignore[assignment]
positive_float = _number(float, "a number > 0", lambda v: v > 0)
non_negative_float = _number(float, "a number >= 0", lambda v: v >= 0)
