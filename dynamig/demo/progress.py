"""Progress on stderr whether or not it is a terminal: a tqdm bar on a terminal, else one plain line
every few seconds (CI logs and pipes get no bar control codes, and never a minute of silence)."""

from __future__ import annotations

import sys
import time
from typing import IO, Any


class Progress:
    def __init__(self, total: int, desc: str, unit: str, stream: IO[str] | None = None, every_s: float = 3.0,
                 tty: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.total, self.desc, self.unit, self.every_s = total, desc, unit, every_s
        self.n = 0
        self.postfix = ""
        self._printed = 0
        self.t0 = time.perf_counter()
        self._last = self.t0
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty()) if tty is None else tty
        self._bar: Any = None
        if self.tty:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream)

    def update(self, k: int = 1) -> None:
        self.update_to(self.n + k)

    def set_postfix_str(self, text: str) -> None:
        """A note after the count (the newest one), as tqdm's."""
        self.postfix = text
        if self._bar is not None:
            self._bar.set_postfix_str(text)

    def update_to(self, n: int) -> None:
        self.n = n
        if self._bar is not None:
            self._bar.update(n - self._bar.n)
            return
        now = time.perf_counter()
        if now - self._last >= self.every_s:
            self._last = now
            self._line(now)

    def _line(self, now: float) -> None:
        pct = 100 * self.n / self.total if self.total else 100.0
        self._printed = self.n
        note = f"; {self.postfix}" if self.postfix else ""
        elapsed = now - self.t0
        self.stream.write(f"{self.desc}: {self.n}/{self.total} {self.unit}s ({pct:.0f}%), {elapsed:.0f} s{note}\n")
        self.stream.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.n != self._printed:  # the final count, unless already shown (or nothing was done)
            self._line(time.perf_counter())

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def say(message: str, stream: IO[str] | None = None) -> None:
    """One line of status on stderr, flushed (so a pipe shows it at once)."""
    out = stream or sys.stderr
    out.write(message + "\n")
    out.flush()
