"""Planning for the queue (lookahead): one batch plan over the pending GPU pods, and answers from it.

Pure functions over :class:`models.types.ClusterState`; the extender runs them in a background loop
(``extender.lookahead``) and the simulator runs the same functions on a simulated clock, so what is
measured is what runs.

* :func:`queue_order` — the pending pods in kube-scheduler's order (priority, then creation), capped.
* :func:`solve_queue` — one ``solver.plan`` call in batch mode: the oldest queued pod that fits now
  plus the rest as ``pending`` (CP-SAT over the whole queue when it has more than one pod).
* :func:`answer_from` — the part of a batch plan that concerns one pod, re-validated against the
  *live* state (the batch plan may be stale); ``None`` when it no longer holds.
* :func:`reserved_for_queue` — the live state with the capacity the batch plan gives to *other*
  queued pods taken: a per-pod answer first tries this state, so one pod does not take what the
  queue needs most (a soft reservation — when nothing else fits, the live state is used).
* :func:`plan_around_queue` — a per-pod answer that first tries the reserved state and is valid on
  the live one (the extender's filter and the simulator both answer this way).
* :func:`deferred_reason` — why the batch plan does not place a pod, in words a person can act on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

from models.plan import LayoutChange, Plan, PodPlacement, apply_plan
from models.requests import PodRequest
from models.templates import DeviceConfig
from models.types import ClusterState, Node
from models.validate import validate

#: ``plan(state, pod, config, pending, nodes) -> Plan`` (``solver.plan``'s signature).
PlanFn = Callable[..., Plan]


@dataclass(frozen=True)
class QueuedPod:
    """A pending GPU pod and what orders it in the scheduling queue."""

    request: PodRequest
    priority: int = 0
    created: str = ""  # RFC 3339 (sorts as text) or any monotone text; ties broken by key


def queue_order(pods: Iterable[QueuedPod], limit: int) -> tuple[PodRequest, ...]:
    """kube-scheduler's active-queue order (higher priority first, then older first), ``limit`` pods."""
    if limit <= 0:
        return ()
    ranked = sorted(pods, key=lambda q: (-q.priority, q.created, q.request.key))
    return tuple(q.request for q in ranked[:limit])


@dataclass(frozen=True)
class BatchPlan:
    """A batch plan for the queue, and when and on what it was made."""

    plan: Plan
    queue: tuple[str, ...]  # pod keys, queue order
    revision: int  # the store revision of the state it was planned on
    solved_at: float  # clock seconds
    solve_ms: float

    @property
    def placed(self) -> tuple[str, ...]:
        return tuple(p.pod for p in self.plan.placements if p.placed)

    @cached_property
    def _by_pod(self) -> dict[str, PodPlacement]:
        out: dict[str, PodPlacement] = {}
        for p in self.plan.placements:
            out.setdefault(p.pod, p)  # the first, as a scan would find
        return out

    def placement(self, key: str) -> PodPlacement | None:
        return self._by_pod.get(key)


def solve_queue(plan_fn: PlanFn, config: Any, state: ClusterState, queue: Sequence[PodRequest],
                revision: int, now: float) -> BatchPlan | None:
    """One batch plan for ``queue`` on ``state`` (``None`` for an empty queue)."""
    if not queue:
        return None
    # The batch model plans "this pod, plus the pending ones" and gives up when "this pod" does not
    # fit now; a queue head that cannot fit (yet, or ever) must not stop the rest from being planned.
    # So the head is the oldest queued pod the per-pod planner can place now; the others, in queue
    # order, are the pending pods (the model may leave any of them waiting).
    head = None
    probe_ms = 0.0
    for q in queue:
        one = plan_fn(state, q, config, (), None)
        probe_ms += one.solve_ms
        if one.placed:
            head = q
            break
    if head is None:
        return BatchPlan(one, tuple(q.key for q in queue), revision, now, probe_ms)
    rest = tuple(q for q in queue if q.key != head.key)
    out = plan_fn(state, head, config, rest, None) if rest else one
    return BatchPlan(out, tuple(q.key for q in queue), revision, now, probe_ms + out.solve_ms)


def _gpu_layout(state: ClusterState, change: LayoutChange) -> Any:
    try:
        return state.gpu(change.node, change.gpu).layout
    except KeyError:
        return None


def sub_plan(batch: BatchPlan, key: str, state: ClusterState) -> Plan | None:
    """The batch plan's answer for ``key`` alone, expressed against ``state``: the pod's units and
    the layout changes of the GPUs they use that ``state`` does not already have (a layout an earlier
    queued pod's reservation introduced is not changed again). ``None`` if the plan does not place it.
    """
    pl = batch.placement(key)
    if pl is None or not pl.placed:
        return None
    used = {(u.node, u.gpu) for u in pl.units}
    changes = tuple(c for c in batch.plan.layout_changes
                    if (c.node, c.gpu) in used and _gpu_layout(state, c) != c.layout)
    changed = {(c.node, c.gpu) for c in changes}
    units = tuple(replace(u, reconfigure=(u.node, u.gpu) in changed) for u in pl.units)
    return Plan((replace(pl, units=units),), changes, batch.plan.stages, batch.plan.status, 0.0, (),
                batch.plan.policy)


def answer_from(batch: BatchPlan | None, request: PodRequest, state: ClusterState,
                templates: DeviceConfig, nodes: Sequence[str] | None = None) -> Plan | None:
    """The batch plan's placement of ``request`` if it still holds on the live ``state`` (and lands on
    one of ``nodes`` when given); ``None`` otherwise, and the per-pod planner answers."""
    if batch is None or request.key not in batch.queue:
        return None
    sub = sub_plan(batch, request.key, state)
    if sub is None or sub.primary is None:
        return None
    if nodes is not None and sub.primary.node not in set(nodes):
        return None
    if validate(state, sub, {request.key: request}, templates):
        return None
    return sub


def reserved_for_queue(batch: BatchPlan | None, state: ClusterState, requests: Mapping[str, PodRequest],
                       templates: DeviceConfig, except_key: str,
                       previous: ClusterState | None = None) -> ClusterState:
    """``state`` with the batch plan's placements of the other queued pods applied, in queue order,
    each only if it still holds (so a stale plan reserves only what is still there).

    For a pod the batch plan does not place (the only pods :func:`needs_reservation` asks for),
    ``except_key`` changes nothing: the result is a function of (batch plan, ``state``) alone.
    Each pod is checked and applied on a small state of just its nodes as reserved so far (validation
    and ``apply_plan`` read only the plan's nodes), and the full state is rebuilt once at the end:
    O(queue · touched), not O(queue · nodes).

    ``previous`` (an earlier result): a reserved node equal to its node there is that (frozen, equal)
    object, so the per-pod planner's caches, keyed by node identity, stay warm for the reservations
    a new live state did not change (the live state moves on by one reservation per filter).
    """
    if batch is None:
        return state
    reserved: dict[str, Node] = {}
    for key in batch.queue:
        req = requests.get(key)
        pl = batch.placement(key)
        if key == except_key or req is None or pl is None or not pl.placed:
            continue
        names = dict.fromkeys([*(u.node for u in pl.units), *((pl.node,) if pl.node is not None else ())])
        view = ClusterState(tuple(reserved.get(n) or state.node(n) for n in names if state.has_node(n)),
                            state.layouts_any)
        sub = sub_plan(batch, key, view)
        if sub is None or validate(view, sub, {key: req}, templates):
            continue
        for node in apply_plan(view, sub, {key: req}).nodes:
            if node is not (reserved.get(node.name) or state.node(node.name)):
                reserved[node.name] = node
    if previous is not None:
        for name, node in reserved.items():
            old = previous.node(name) if previous.has_node(name) else None
            if old is not None and old is not node and old == node:
                reserved[name] = old
    return state.with_replaced(reserved)


def needs_reservation(batch: BatchPlan | None, key: str) -> bool:
    """Whether a per-pod answer for ``key`` should first avoid what the batch plan keeps for others."""
    return batch is not None and key not in batch.placed and len(batch.queue) > 1


#: ``plan(state, request, nodes) -> Plan``: the per-pod planner.
PodPlanFn = Callable[[ClusterState, PodRequest, Sequence[str] | None], Plan]


def plan_around_queue(request: PodRequest, state: ClusterState, reserved: ClusterState | None,
                      templates: DeviceConfig, plan: PodPlanFn,
                      nodes: Sequence[str] | None = None) -> tuple[Plan, str]:
    """The per-pod plan on ``reserved`` (the live state less the queue's reservations,
    :func:`reserved_for_queue`) when it is valid on the live ``state``; else the per-pod plan on
    ``state``. Returns the plan and its source: ``per_pod_around_queue``, ``per_pod`` or ``""``
    (not placed)."""
    if reserved is not None and reserved is not state:
        got = plan(reserved, request, nodes)
        if got.placed and not validate(state, got, {request.key: request}, templates):
            return got, "per_pod_around_queue"
    got = plan(state, request, nodes)
    return got, "per_pod" if got.placed else ""


def _describe_change(c: LayoutChange, state: ClusterState, batch: BatchPlan) -> str:
    try:
        where = f"GPU {state.gpu(c.node, c.gpu).uuid} ({c.node} #{state.gpu(c.node, c.gpu).index})"
    except KeyError:
        where = f"GPU {c.gpu} on {c.node}"
    counts = Counter(s.profile for s in c.layout)
    users = sum(1 for p in batch.plan.placements if p.placed and any((u.node, u.gpu) == (c.node, c.gpu)
                                                                      for u in p.units))
    return (f"{where} is being re-cut to " + ", ".join(f"{p} x{n}" for p, n in sorted(counts.items())) +
            f" for {users} queued pod{'' if users == 1 else 's'}")


def deferred_reason(batch: BatchPlan | None, key: str, state: ClusterState) -> str | None:
    """Why the batch plan leaves ``key`` waiting (``None`` if it places it or does not know it):
    which GPUs the queue's plan re-cuts for whom, and where this pod stands among the waiting."""
    if batch is None or key not in batch.queue:
        return None
    pl = batch.placement(key)
    if pl is not None and pl.placed:
        return None
    pos = batch.queue.index(key)
    placed = set(batch.placed)
    ahead = [k for k in batch.queue[:pos] if k in placed]
    if not ahead and not batch.plan.layout_changes:
        return None  # the queue takes nothing from this pod: the per-pod reason says it all
    waiting_ahead = [k for k in batch.queue[:pos] if k not in placed]
    parts = []
    changes = batch.plan.layout_changes
    if changes:
        parts.append("; ".join(_describe_change(c, state, batch) for c in changes[:3]) +
                     (f" (and {len(changes) - 3} more)" if len(changes) > 3 else ""))
    parts.append("this pod is next" if not waiting_ahead else
                 f"{len(waiting_ahead)} waiting pod(s) are ahead of this one")
    parts.append(f"queued #{pos + 1} of {len(batch.queue)}; the queue plan places {len(batch.placed)} pod(s)"
                 + (f", {len(ahead)} of them ahead of this one" if ahead else ""))
    reasons = sorted({why for _, why in batch.plan.reasons})
    if reasons:
        parts.append("nothing left for this pod: " + reasons[0])
    return "; ".join(parts)
