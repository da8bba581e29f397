"""The single-pod (extender) path: decompose per node, solve each node exactly, take the best.

Nodes are independent once the pod's node is fixed (all units on one node), so the lexicographic
optimum over the cluster is the best of the per-node optima. Per-node answers are cached by node
identity and pod shape, so a query after a placement re-solves only the node that changed; nodes are
ranked by cost alone and only the winner's answer is bound to its GPUs (``nodesolve.node_score``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from models.requests import PodRequest
from models.types import ClusterState

from .context import Context
from .nodesolve import NodeResult, lower_bound, make_query, node_score, reason_for, solve_node, unit_capacity
from .views import NodeView, node_view


@dataclass
class SingleOutcome:
    best: NodeResult | None
    reasons: list[tuple[str, str]]
    complete: bool  # every candidate node was solved
    fallback: bool  # the budget ran out before any feasible node; the first feasible one was taken


def candidate_nodes(state: ClusterState, nodes: Sequence[str] | None, tie: str = "name"
                    ) -> tuple[list[str], list[tuple[str, str]]]:
    """The candidate nodes in tie order (equal costs go to the earlier one): sorted by name, or,
    with ``tie="order"``, as given (the state's order when ``nodes`` is None)."""
    if tie == "order":
        given = [n.name for n in state.nodes] if nodes is None else list(dict.fromkeys(nodes))
        return [n for n in given if state.has_node(n)], [
            (n, "unknown node (not in the cluster state)") for n in sorted(set(given)) if not state.has_node(n)]
    if nodes is None:
        return sorted(n.name for n in state.nodes), []
    names = sorted(set(nodes))
    known = [n for n in names if state.has_node(n)]
    return known, [(n, "unknown node (not in the cluster state)") for n in names if not state.has_node(n)]


def solve_single(ctx: Context, state: ClusterState, pod: PodRequest, names: list[str], deadline: float,
                 explain: bool = True) -> SingleOutcome:
    q = make_query(ctx, pod)
    quantum = ctx.config.tie_quantum
    wf = ctx.weights[2]
    exact = quantum == 1 or not wf

    def key(score: tuple[int, int]) -> int:
        cost, f = score
        if exact:
            return cost
        return cost + ((f + quantum // 2) // quantum * quantum - f) * wf

    # multi-unit, one container, no UUID filter: skip nodes that cannot hold that many units
    # (from 3 units: a 2-unit pod fits almost every node, and the check would cost more than it saves)
    need = q.n[0] if len(q.containers) == 1 and q.n[0] > 2 and not q.shape.uuid_filtered else 0
    host = bool(pod.cpu_milli or pod.host_memory_mib)  # else every node's host check passes
    # several units of one container: skip the exact solve of a node whose lower bound cannot beat
    # the best so far (it comes later, so a tie keeps the best; it is feasible, so it needs no reason)
    prune = exact and len(q.containers) == 1 and q.n[0] > 1 and not q.shape.uuid_filtered
    best: NodeView | None = None
    best_key = 0
    reasons: list[tuple[str, str]] = []
    expired = False
    for i, name in enumerate(names):
        node = state.node(name)
        if host:
            host_why = node.host_fit_problem(pod.cpu_milli, pod.host_memory_mib)
            if host_why is not None:
                if explain:
                    reasons.append((name, host_why))
                continue
        view = node_view(ctx, node)
        if need and unit_capacity(ctx, view, q) < need:
            if explain:
                reasons.append((name, reason_for(ctx, view, q)))
            continue
        if prune and best is not None and q.rkey not in view.results:
            lb = lower_bound(ctx, view, q)
            if lb is not None and lb[0] >= best_key * lb[1]:
                continue
        score = node_score(ctx, view, q)
        if score is None:
            if explain:
                reasons.append((name, reason_for(ctx, view, q)))
        elif best is None or key(score) < best_key:
            best, best_key = view, key(score)
            if expired:
                return SingleOutcome(solve_node(ctx, best, q), reasons, False, True)
        if not expired and time.perf_counter() > deadline and i + 1 < len(names):
            expired = True
            if best is not None:
                rest = names[i + 1:]
                reasons.extend((n, "not evaluated: the planning time budget ran out") for n in rest)
                return SingleOutcome(solve_node(ctx, best, q), reasons, False, False)
    return SingleOutcome(None if best is None else solve_node(ctx, best, q), reasons, not expired, False)
