"""What free GPU capacity is worth to the expected workload: cutting-stock dual prices.

hami-core: the LP "cover the mix of share sizes with the fewest GPUs" (patterns = multisets of sizes
that fit in one GPU, 1000 per-mille), solved by column generation (GLOP; pricing is an unbounded
knapsack). Its dual price ``π_s`` is the fraction of a GPU a share of size ``s`` is worth in an
optimal packing; ``K(f)`` = the most price that fits in ``f`` free per-mille. A share ``s`` put on a
GPU with ``f`` free loses ``K(f) − K(s) − K(f − s) ≥ 0`` of packing value (0 exactly when the split
belongs to an optimal pattern).

MIG: the same LP over the GPU's allowed layouts (patterns = a layout with a request class on each of
its instances; a class is the smallest profile serving the request). ``π_p`` prices a class; a free
instance of profile ``P`` is worth ``w(P) = max π_p`` over the classes it serves; an idle GPU is worth
the best layout's ``Σ w`` (≤ 1).

Prices depend on the mix only (not on its scale). OR-Tools' GLOP is imported only here, once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

MILLI = 1000
_EPS = 1e-9


def knapsack(prices: Mapping[int, float], capacity: int = MILLI) -> list[float]:
    """``K[g]`` for ``g`` in ``0..capacity``: the most total price of sizes (each any number of
    times) that fit in ``g``."""
    items = [(s, v) for s, v in sorted(prices.items()) if v > _EPS and 0 < s <= capacity]
    k = [0.0] * (capacity + 1)
    for g in range(1, capacity + 1):
        best = k[g - 1]
        for s, v in items:
            if s > g:
                break
            c = v + k[g - s]
            if c > best + _EPS:
                best = c
        k[g] = best
    return k


def _best_pattern(prices: Mapping[int, float], capacity: int) -> tuple[float, dict[int, int]]:
    items = [(s, v) for s, v in sorted(prices.items()) if v > _EPS and 0 < s <= capacity]
    k = [0.0] * (capacity + 1)
    take = [-1] * (capacity + 1)
    for g in range(1, capacity + 1):
        k[g], take[g] = k[g - 1], -1
        for s, v in items:
            if s > g:
                break
            if v + k[g - s] > k[g] + _EPS:
                k[g], take[g] = v + k[g - s], s
    pattern: dict[int, int] = {}
    g = capacity
    while g > 0:
        s = take[g]
        if s < 0:
            g -= 1
            continue
        pattern[s] = pattern.get(s, 0) + 1
        g -= s
    return k[capacity], pattern


def _lp_duals(classes: Sequence[object], demand: Mapping[object, float],
              patterns: list[dict[object, int]]) -> dict[object, float] | None:
    from ortools.linear_solver import pywraplp

    lp = pywraplp.Solver.CreateSolver("GLOP")
    xs = [lp.NumVar(0.0, lp.infinity(), "") for _ in patterns]
    total = sum(demand[c] for c in classes)
    rows = {}
    for c in classes:
        rows[c] = lp.Add(sum(x * p[c] for x, p in zip(xs, patterns, strict=True) if c in p) >= demand[c] / total)
    lp.Minimize(sum(xs))
    if lp.Solve() != pywraplp.Solver.OPTIMAL:  # pragma: no cover - these LPs are always feasible
        return None
    return {c: max(0.0, float(rows[c].dual_value())) for c in classes}


def share_prices(demand: Mapping[int, float], capacity: int = MILLI, max_iter: int = 300) -> dict[int, float]:
    """Dual prices of the hami-core cutting-stock LP for ``demand`` (size per-mille -> weight)."""
    sizes = sorted(s for s, d in demand.items() if d > 0 and 0 < s <= capacity)
    if not sizes:
        return {}
    patterns: list[dict[object, int]] = [{s: capacity // s} for s in sizes]
    prices: dict[int, float] = {}
    dem = {s: float(demand[s]) for s in sizes}
    for _ in range(max_iter):
        got = _lp_duals(sizes, dem, patterns)  # type: ignore[arg-type]
        if got is None:
            break
        prices = {int(s): v for s, v in got.items()}  # type: ignore[call-overload]
        value, pat = _best_pattern(prices, capacity)
        if value <= 1.0 + 1e-7 or pat in patterns:
            break
        patterns.append(pat)  # type: ignore[arg-type]
    return prices


def mig_prices(demand: Mapping[str, float], layouts: Sequence[Mapping[str, int]],
               serves: Mapping[str, frozenset[str]], max_iter: int = 300) -> dict[str, float]:
    """Dual prices per request class (a profile name) of the MIG cutting-stock LP.

    ``layouts``: the allowed layouts as profile -> instance count; ``serves[P]``: the classes an
    instance of profile ``P`` serves. Classes no layout serves are left out (price 0).
    """
    classes = sorted(c for c, d in demand.items() if d > 0 and any(
        n > 0 and c in serves.get(p, frozenset()) for lay in layouts for p, n in lay.items()))
    if not classes:
        return {}
    dem = {c: float(demand[c]) for c in classes}
    patterns: list[dict[object, int]] = []
    for c in classes:  # start: per class, the layout with the most instances serving it
        best = max(layouts, key=lambda lay: sum(n for p, n in lay.items() if c in serves.get(p, frozenset())))
        patterns.append({c: sum(n for p, n in best.items() if c in serves.get(p, frozenset()))})
    prices: dict[str, float] = {}
    for _ in range(max_iter):
        got = _lp_duals(classes, dem, patterns)  # type: ignore[arg-type]
        if got is None:
            break
        prices = {str(c): v for c, v in got.items()}
        value, pat = _best_layout(prices, layouts, serves)
        if value <= 1.0 + 1e-7 or pat in patterns:
            break
        patterns.append(pat)
    return prices


def instance_values(prices: Mapping[str, float], serves: Mapping[str, frozenset[str]]) -> dict[str, float]:
    """``w(P)``: the most price one free instance of each profile can take."""
    return {p: max((prices.get(c, 0.0) for c in cs), default=0.0) for p, cs in serves.items()}


def _best_layout(prices: Mapping[str, float], layouts: Sequence[Mapping[str, int]],
                 serves: Mapping[str, frozenset[str]]) -> tuple[float, dict[object, int]]:
    best_v, best_p = -1.0, {}
    for lay in layouts:
        v = 0.0
        pat: dict[object, int] = {}
        for p, n in sorted(lay.items()):
            cs = serves.get(p, frozenset())
            if not cs or n <= 0:
                continue
            c = max(sorted(cs), key=lambda x: prices.get(x, 0.0))
            if prices.get(c, 0.0) <= _EPS:
                continue
            v += prices[c] * n
            pat[c] = pat.get(c, 0) + n
        if v > best_v + _EPS:
            best_v, best_p = v, pat
    return best_v, best_p


__all__ = ["instance_values", "knapsack", "mig_prices", "share_prices"]
