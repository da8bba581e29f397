"""How long a pod runs once started: the trace's own completed pods, or a stated distribution.

``--duration`` forms: ``trace`` (default: deletion − creation of the trace's completed GPU pods,
phases ``Succeeded`` and ``Failed``; Running and Pending rows have no end), ``fixed:S``,
``exp:MEAN``, ``uniform:LO,HI`` (seconds); trace lifetimes are capped (``--max-duration``).
A :class:`Durations` is a frozen, picklable value with its exact mean (the arrival rate is set
from it) and a seeded sampler.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from solver.openb import OpenbPod

__all__ = ["COMPLETED_PHASES", "DEFAULT_MAX_DURATION_S", "Durations", "parse_duration", "trace_durations"]

COMPLETED_PHASES = ("Succeeded", "Failed")


@dataclass(frozen=True)
class Durations:
    kind: str  # trace | fixed | exp | uniform
    params: tuple[float, ...]
    source: str = ""

    @property
    def horizon(self) -> float:
        """How long until an infinite-server system started empty is stationary: the longest
        duration (5 means for the unbounded exponential, 99.3 % of its mass)."""
        if self.kind == "trace":
            return float(max(self.params))
        if self.kind == "exp":
            return 5.0 * self.params[0]
        return self.params[-1]

    @property
    def mean(self) -> float:
        if self.kind == "trace":
            return float(np.mean(self.params))
        if self.kind in ("fixed", "exp"):
            return self.params[0]
        return (self.params[0] + self.params[1]) / 2.0

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:  # type: ignore[type-arg]
        if self.kind == "trace":
            return np.asarray(self.params, dtype=np.float64)[rng.integers(len(self.params), size=n)]
        if self.kind == "fixed":
            return np.full(n, self.params[0], dtype=np.float64)
        if self.kind == "exp":
            return rng.exponential(self.params[0], size=n)
        return rng.uniform(self.params[0], self.params[1], size=n)

    def describe(self) -> str:
        if self.kind == "trace":
            return (f"trace ({len(self.params)} completed GPU pods of {self.source}, capped at {self.horizon:.0f} s, "
                    f"mean {self.mean:.0f} s)")
        return f"{self.kind}:{','.join(f'{p:g}' for p in self.params)}"


DEFAULT_MAX_DURATION_S = 86400.0
"""Trace lifetimes are capped at one day by default: on the default trace 7 of 2,054 completed GPU
pods ran longer (up to 15 days) yet carry 27 % of the mean; uncapped, a run would need months of
simulated time to reach a steady state."""


def trace_durations(pods: Sequence[OpenbPod], source: str = "",
                    max_s: float | None = DEFAULT_MAX_DURATION_S) -> Durations:
    """Lifetimes (deletion − creation, seconds) of the completed GPU pods of an openb pod list,
    each capped at ``max_s`` (None: uncapped)."""
    out = [min(float(p.deletion_time - p.creation_time), max_s or math.inf) for p in pods
           if p.pod_phase in COMPLETED_PHASES and p.num_gpu > 0 and p.creation_time is not None
           and p.deletion_time is not None and p.deletion_time > p.creation_time]
    if not out:
        raise ValueError(f"{source or 'pod list'}: no completed GPU pod with creation and deletion times "
                         "(use --duration exp:SECONDS)")
    return Durations("trace", tuple(out), source)


def parse_duration(text: str) -> Durations:
    """``fixed:S``, ``exp:MEAN`` or ``uniform:LO,HI`` (``trace`` is built by :func:`trace_durations`)."""
    kind, _, rest = text.partition(":")
    try:
        params = tuple(float(x) for x in rest.split(",")) if rest else ()
    except ValueError:
        raise ValueError(f"bad --duration {text!r}: numbers expected after the colon") from None
    want = {"fixed": 1, "exp": 1, "uniform": 2}
    if kind not in want or len(params) != want[kind]:
        raise ValueError(f"bad --duration {text!r} (use trace, fixed:S, exp:MEAN or uniform:LO,HI)")
    if any(p <= 0 for p in params) or (kind == "uniform" and params[1] < params[0]):
        raise ValueError(f"bad --duration {text!r}: seconds must be > 0 (and LO <= HI)")
    return Durations(kind, params)
