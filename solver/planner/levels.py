"""Solving the batch model's lexicographic levels with CP-SAT.

Consecutive placed/reconfigurations/template levels (ranges multiplying to < 2^62) are solved together,
with weights that provably keep strict priority (each level's weight exceeds the whole range of the
levels below it); the others one after another. After each call the result is fixed as a
constraint (weighted sum <= value found; == each level's value when proved optimal) and becomes the
hint of the next call, unless a known solution (the greedy plan) is better on the next levels while
equal on the fixed ones. A group whose hint already meets analytic bounds (all pods placed, no
re-partitioning) is not solved: it is optimal. Every level reports value, bound and status.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from ortools.sat.python import cp_model

from models.plan import StageResult

from .batch_model import BatchModel

LIMIT_BITS = 62
#: Levels with small, integral ranges that are cheap to solve together. Fragmentation, policy and
#: waste get calls of their own: merged, the proof of the upper levels would wait on them.
MERGEABLE = frozenset({"placed", "reconfigurations", "template_order"})


@dataclass
class LevelOutcome:
    stages: list[StageResult]
    values: dict[int, int]  # the final assignment (variable index -> value)
    from_hint: bool  # no solve improved on the starting hint


def level_value(bm: BatchModel, level: str, values: dict[int, int]) -> int:
    return sum(c * values.get(v.index, 0) for v, c in bm.terms[level])


def level_range(bm: BatchModel, level: str) -> tuple[int, int]:
    lo = hi = 0
    for v, c in bm.terms[level]:
        u = bm.upper(v)
        if c > 0:
            hi += c * u
        else:
            lo += c * u
    return lo, hi


def _groups(bm: BatchModel, levels: list[str]) -> list[list[str]]:
    out: list[list[str]] = []
    bits = 0
    for lv in levels:
        lo, hi = level_range(bm, lv)
        b = max(1, (hi - lo).bit_length())
        if out and bits + b <= LIMIT_BITS and lv in MERGEABLE and out[-1][-1] in MERGEABLE:
            out[-1].append(lv)
            bits += b
        else:
            out.append([lv])
            bits = b
    return out


def _analytic_bound(bm: BatchModel, level: str) -> int | None:
    """A bound no plan can beat: all pods placed; no re-partitioning; no waste."""
    if level == "placed":
        return sum(t.weight * len(t.pods) for t in bm.types)
    if level in ("reconfigurations", "template_order"):
        return 0
    return None


def solve_levels(bm: BatchModel, levels: list[str], hint: dict[int, int], deadline: float,
                 workers: int, seed: int) -> LevelOutcome:
    m = bm.m
    variables = bm.variables()
    solver = cp_model.CpSolver()
    p = solver.parameters
    p.num_workers = workers
    p.random_seed = seed
    p.cp_model_probing_level = 0
    p.symmetry_level = 0
    p.max_presolve_iterations = 1
    groups = _groups(bm, levels)
    current = dict(hint)
    known = [dict(hint)]
    fixed: list[str] = []
    stages: list[StageResult] = []
    improved = False
    for gi, group in enumerate(groups):
        sign = {lv: (-1 if lv == "placed" else 1) for lv in group}
        # the best starting point among the solutions that respect every fixed level
        fits = [s for s in known if all(level_value(bm, f, s) == level_value(bm, f, current) for f in fixed)]
        start = min(fits or [current], key=lambda s: [sign[lv] * level_value(bm, lv, s) for lv in group])
        bounds = {lv: _analytic_bound(bm, lv) for lv in group}
        if all(bounds[lv] is not None and level_value(bm, lv, start) == bounds[lv] for lv in group):
            for lv in group:
                val = float(level_value(bm, lv, start))
                stages.append(StageResult(lv, val, val, "optimal", 0.0))
            current = start
            _fix(bm, group, current, exact=True)
            fixed.extend(group)
            continue
        weights = _weights(bm, group)
        expr = sum(sign[lv] * w * _expr(bm, lv) for lv, w in zip(group, weights, strict=True))
        m.minimize(expr)
        m.clear_hints()  # type: ignore[no-untyped-call]
        for v in variables:
            m.add_hint(v, start.get(v.index, 0))
        left = deadline - time.perf_counter()
        p.max_time_in_seconds = max(0.02, left * _share(gi, len(groups)))
        t = time.perf_counter()
        st = solver.solve(m)
        wall = (time.perf_counter() - t) * 1000
        if st in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            sol = {v.index: int(solver.value(v)) for v in variables}
            if _better(bm, group, sign, sol, start):
                improved = True
                current = sol
                known.append(sol)
            else:
                current = start
            optimal = st == cp_model.OPTIMAL
            bound_total = solver.best_objective_bound
        else:
            current = start
            optimal = False
            bound_total = None
        for i, lv in enumerate(group):
            val = level_value(bm, lv, current)
            if optimal:
                bound = float(val)
            elif i == 0 and bound_total is not None:
                rest = sum(_rest_high(bm, x, sign[x]) * w for x, w in zip(group[1:], weights[1:], strict=True))
                bound = float(sign[lv] * math.ceil((bound_total - rest) / weights[0] - 1e-9))
            else:
                b = _analytic_bound(bm, lv)
                lo, hi = level_range(bm, lv)
                bound = float(b if b is not None else (hi if lv == "placed" else lo))
            ab = _analytic_bound(bm, lv)
            if ab is not None:  # never report a bound weaker than the analytic one
                bound = min(bound, float(ab)) if lv == "placed" else max(bound, float(ab))
            status = "optimal" if optimal else ("feasible" if st in (cp_model.OPTIMAL, cp_model.FEASIBLE) else
                                                 "timeout")
            stages.append(StageResult(lv, float(val), bound, status, wall if i == 0 else 0.0))
        _fix(bm, group, current, exact=optimal)
        fixed.extend(group)
    return LevelOutcome(stages, current, not improved)


def _share(i: int, n: int) -> float:
    """Fraction of the remaining time for group ``i`` of ``n``: the highest levels get more."""
    return 1.0 if i == n - 1 else 0.5 if i == 0 else 1.0 / (n - i)


def _expr(bm: BatchModel, level: str) -> Any:
    terms = [(v, c) for v, c in bm.terms[level] if c]
    return sum(v * c for v, c in terms) if terms else 0


def _weights(bm: BatchModel, group: list[str]) -> list[int]:
    ws = [1]
    for lv in reversed(group[1:]):
        lo, hi = level_range(bm, lv)
        ws.append(ws[-1] * (hi - lo + 1))
    return list(reversed(ws))


def _rest_high(bm: BatchModel, level: str, sign: int) -> int:
    lo, hi = level_range(bm, level)
    return hi if sign > 0 else -lo


def _better(bm: BatchModel, group: list[str], sign: dict[str, int], a: dict[int, int], b: dict[int, int]) -> bool:
    va = [sign[lv] * level_value(bm, lv, a) for lv in group]
    vb = [sign[lv] * level_value(bm, lv, b) for lv in group]
    return va < vb


def _fix(bm: BatchModel, group: list[str], values: dict[int, int], exact: bool) -> None:
    if exact:
        for lv in group:
            bm.m.add(_expr(bm, lv) == level_value(bm, lv, values))
        return
    sign = {lv: (-1 if lv == "placed" else 1) for lv in group}
    weights = _weights(bm, group)
    total = sum(sign[lv] * w * level_value(bm, lv, values) for lv, w in zip(group, weights, strict=True))
    bm.m.add(sum(sign[lv] * w * _expr(bm, lv) for lv, w in zip(group, weights, strict=True)) <= total)
