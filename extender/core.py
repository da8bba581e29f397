"""The extender's logic, independent of HTTP: filter (plan + reserve), prioritize, bind.

State is never kept here beyond caches: the cluster is rebuilt from the store (node registrations
plus pod allocation annotations, :func:`models.cluster.state_from_objects`) and cached by
``store.revision()``. A restart loses nothing.

Reservations are serialised (the chosen node's lock, then one commit lock; planning itself runs
in parallel). A filter plans on a snapshot; holding the locks it brings the snapshot up to date and,
if anything relevant changed meanwhile (another reservation, a node re-registering), re-validates
its plan against the current state; a plan that no longer holds is planned again (at most
``max_replans`` times). So two filters racing for the last free instance cannot both get it: one
wins, the other re-plans elsewhere or fails. After its own patch, when nothing else changed, the
extender advances the cached state by the plan instead of rebuilding it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from models import nodelock
from models.cluster import (
    StateProblem,
    active_allocation,
    host_request_of,
    registered_node,
    reuse_nodes,
    state_from_objects,
)
from models.codecs import (
    NODE_GPUS,
    PHASE_ALLOCATING,
    PHASE_FAILED,
    POD_ALLOCATION,
    POD_ALLOCATION_SIG,
    POD_BIND_PHASE,
    POD_BIND_TIME,
    POD_NODE,
    POD_PLAN_TIME,
    NodeLock,
    PodAllocation,
    allocation_from_plan,
    encode_allocation,
)
from models.errors import Conflict, DynamigError, NotFound, RequestError, StoreError
from models.plan import LayoutChange, Plan, apply_plan
from models.requests import PodRequest, parse_pod, pod_of_holder
from models.signing import sign_reservation, signature_problem
from models.store import ClusterStore
from models.types import ClusterState, Node, NodeMode
from models.validate import validate

from .config import ExtenderConfig, call_plan
from .lookahead import Lookahead, LookaheadSettings
from .wire import MAX_PRIORITY, BindingArgs, ExtenderArgs, filter_result
from .workload import WorkloadTracker

log = logging.getLogger(__name__)

NO_REGISTRATION = ("no GPUs registered by the dynamig device plugin on this node "
                   "(node annotation dynamig.io/node-gpus is missing or unreadable)")
TERMINAL = ("Succeeded", "Failed")


def _key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace') or 'default'}/{meta.get('name')}"


@dataclass(frozen=True)
class Snapshot:
    """The cluster at one store revision."""

    revision: int
    state: ClusterState
    allocated: frozenset[str]  # pods holding instances or shares in ``state``
    nodes: tuple[dict[str, Any], ...]
    pods: tuple[dict[str, Any], ...]
    problems: tuple[StateProblem, ...] = ()
    fingerprint: dict[str, tuple[Any, ...]] = field(default_factory=dict, compare=False, repr=False)
    built_at: float = field(default_factory=time.time)
    expired: frozenset[str] = frozenset()  # unbound pods whose reservation outlived the TTL
    next_expiry: float = math.inf  # when the next live reservation of an unbound pod expires
    _cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def live_pods(self) -> tuple[dict[str, Any], ...]:
        """The pods the state is built from (expired reservations left out)."""
        if not self.expired:
            return self.pods
        return tuple(p for p in self.pods if _key(p) not in self.expired)

    def registered(self, node: str) -> Node | None:
        """``node``'s GPUs as its device plugin registered them (no reservation applied; None when
        it registered none). Only that node's object is read: a filter needs one node, and decoding
        all of them per reservation was most of a filter's time at 1,000 nodes (issue 12)."""
        by_name = self._cache.get("node-objects")
        if by_name is None:
            by_name = self._cache["node-objects"] = {
                str((n.get("metadata") or {}).get("name")): n for n in self.nodes}
        obj = by_name.get(node)
        return None if obj is None else registered_node(obj, [])

    def pending_changes(self) -> dict[str, LayoutChange]:
        pc = self._cache.get("pending")
        if pc is None:
            pc = self._cache["pending"] = pending_changes(self.live_pods)
        return pc


def plan_time(obj: Mapping[str, Any]) -> float | None:
    raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(POD_PLAN_TIME)
    try:
        t = float(raw) if raw is not None else None
    except (TypeError, ValueError):
        return None
    return t if t is not None and math.isfinite(t) else None


def reservation_expiry(obj: Mapping[str, Any], ttl_s: float) -> float | None:
    """When the reservation of a pod that is not bound expires (None: no reservation, bound, or no TTL)."""
    meta = obj.get("metadata") or {}
    if ttl_s <= 0 or not (meta.get("annotations") or {}).get(POD_ALLOCATION):
        return None
    if (obj.get("spec") or {}).get("nodeName"):
        return None
    return (plan_time(obj) or 0.0) + ttl_s


def expiries(pods: Iterable[Mapping[str, Any]], ttl_s: float, now: float) -> tuple[frozenset[str], float]:
    expired: set[str] = set()
    nxt = math.inf
    for p in pods:
        t = reservation_expiry(p, ttl_s)
        if t is None:
            continue
        if t <= now:
            expired.add(_key(p))
        else:
            nxt = min(nxt, t)
    return frozenset(expired), nxt


def node_fingerprint(obj: Mapping[str, Any]) -> tuple[Any, ...]:
    """What of a node object the state depends on (not its lock, heartbeat or conditions)."""
    meta = obj.get("metadata") or {}
    return ((meta.get("annotations") or {}).get(NODE_GPUS), repr(sorted((meta.get("labels") or {}).items())),
            ((obj.get("status") or {}).get("allocatable") or {}).get("cpu"))


def pod_fingerprint(obj: Mapping[str, Any]) -> tuple[Any, ...]:
    """What of a pod object the state depends on (see models.cluster.active_allocation)."""
    meta = obj.get("metadata") or {}
    ann = meta.get("annotations") or {}
    return (ann.get(POD_ALLOCATION), ann.get(POD_ALLOCATION_SIG), ann.get(POD_NODE), meta.get("uid"),
            ann.get(POD_PLAN_TIME),
            ann.get(POD_BIND_PHASE) == PHASE_FAILED,
            (obj.get("status") or {}).get("phase") in TERMINAL, bool(meta.get("deletionTimestamp")))


def fingerprints(nodes: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]],
                 expired: frozenset[str] = frozenset()) -> dict[str, tuple[Any, ...]]:
    fp = {"n/" + str((n.get("metadata") or {}).get("name")): node_fingerprint(n) for n in nodes}
    fp.update(("p/" + _key(p), (*pod_fingerprint(p), _key(p) in expired)) for p in pods)
    return fp


def pending_changes(pods: Iterable[Mapping[str, Any]]) -> dict[str, LayoutChange]:
    """GPU uuid -> the latest layout change a live reservation asks for (its template and mode)."""
    out: dict[str, tuple[float, LayoutChange]] = {}
    for p in pods:
        try:
            a = active_allocation(p)
        except DynamigError:
            continue
        if a is None:
            continue
        t = plan_time(p) or 0.0
        for c in a.layouts:
            if c.gpu not in out or out[c.gpu][0] <= t:
                out[c.gpu] = (t, c)
    return {g: c for g, (_, c) in out.items()}


def with_pending_layouts(alloc: PodAllocation, state: ClusterState, registered: Node | None,
                         sources: Mapping[str, LayoutChange]) -> PodAllocation:
    """``alloc`` plus the pending layout of every GPU its units use that the plan did not change.

    A layout is *pending* while the GPU's planned layout (``state``) differs from what its device
    plugin registered. Every reservation on such a GPU carries the layout, so it lives as long as
    any of them does: the pod that introduced it may be filtered again, deleted or fail without
    the others' instances being handed out again (issue 15, finding 2).
    """
    changed = {c.gpu for c in alloc.layouts}
    extra: list[LayoutChange] = []
    for gpu in dict.fromkeys(u.gpu for u in alloc.units):
        if gpu in changed or registered is None or not state.has_node(alloc.node):
            continue
        try:
            want = state.gpu(alloc.node, gpu)
            have = registered.gpu(gpu)
        except (KeyError, DynamigError):
            continue
        if want.mode is not NodeMode.MIG or want.layout == have.layout:
            continue
        src = sources.get(gpu)
        if src is not None and src.layout == want.layout:
            extra.append(replace(src, node=alloc.node))
        else:
            extra.append(LayoutChange(alloc.node, gpu, want.layout, None, bool(have.instances)))
    if not extra:
        return alloc
    return replace(alloc, layouts=(*alloc.layouts, *extra))


def holders_of(state: ClusterState) -> frozenset[str]:
    out: set[str] = set()
    for n in state.nodes:
        for g in n.gpus:
            out.update(pod_of_holder(i.holder) for i in g.instances if i.holder)
            out.update(pod_of_holder(s.holder) for s in g.shares)
    return frozenset(out)


@dataclass
class FilterOutcome:
    result: dict[str, Any]
    status: str  # placed | unplaceable | skipped | invalid | error
    plan: Plan | None = None


class Extender:
    def __init__(self, store: ClusterStore, config: ExtenderConfig) -> None:
        self.store = store
        self.config = config
        self._plan_fn: Any = None
        self._plan_cfg: Any = None
        self._snap_lock = threading.Lock()
        self._build_lock = threading.Lock()
        self._commit_lock = threading.Lock()
        self._snap: Snapshot | None = None
        self.rebuilds = 0
        self._guard = threading.Lock()
        self._node_locks: dict[str, threading.Lock] = {}
        self._unplaceable: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._binding: set[str] = set()  # pods between node lock and Binding in this process
        self.metrics: Any = None  # set by the app (extender.metrics.ExtenderMetrics)
        self._lookahead: Lookahead | None = None
        self._workload: WorkloadTracker | None = None  # the learned request mix (extender.workload)

    # ------------------------------------------------------------------ lookahead
    @property
    def lookahead(self) -> Lookahead | None:
        """The background batch planner for the queue (None when ``config.lookahead`` is 0)."""
        if self._lookahead is None and self.config.lookahead > 0:
            fn, cfg = self.planner()
            with self._guard:
                if self._lookahead is None:
                    self._lookahead = Lookahead(
                        self.snapshot, fn, cfg, self.config.templates,
                        LookaheadSettings(limit=self.config.lookahead, budget_ms=self.config.lookahead_budget_ms,
                                          scheduler_name=self.config.scheduler_name))
        return self._lookahead

    def plan_for(self, state: ClusterState, req: PodRequest, nodes: Sequence[str]) -> Plan:
        """A filter's plan: the queue's batch plan when it places this pod and still holds, else the
        per-pod planner (first around what the batch plan keeps for other queued pods)."""
        la = self.lookahead
        if la is None:
            return self.plan(state, req, nodes)
        got = la.answer(req, state, nodes)
        if got is not None:
            return got
        la.notify()  # a pod the batch plan does not know, or a stale plan: re-solve soon
        return la.around_queue(req, state, nodes, self.plan)

    # ------------------------------------------------------------------ planning
    def planner(self) -> tuple[Any, Any]:
        if self._plan_fn is None:
            self._plan_fn, self._plan_cfg = self.config.make_planner()
        return self._plan_fn, self._plan_cfg

    @property
    def workload(self) -> WorkloadTracker | None:
        """The online workload estimate (None unless ``learn_workload`` with the built-in planner)."""
        if self._workload is None and self.config.learn_workload and self.config.planner is None:
            _, cfg = self.planner()
            with self._guard:
                if self._workload is None:
                    self._workload = WorkloadTracker(self.config.templates.resources, getattr(cfg, "workload", None))
        return self._workload

    def plan(self, state: ClusterState, pod: PodRequest, nodes: Sequence[str]) -> Plan:
        fn, cfg = self.planner()
        wl = self.workload
        plan = call_plan(fn, cfg, state, pod, list(nodes), wl.estimate() if wl is not None else None)
        if self.metrics is not None:
            self.metrics.observe_plan(plan)
        return plan

    # ------------------------------------------------------------------ state
    def snapshot(self) -> Snapshot:
        """The state at the store's current revision. Built once per revision (single flight);
        when no object changed in a way the state depends on (a node lock, a pod's status), the
        previous state is reused; otherwise rebuilt from the objects."""
        rev = self.store.revision()
        snap = self._snap
        if snap is not None and snap.revision == rev and self.config.clock() < snap.next_expiry:
            return snap
        with self._build_lock:
            rev = self.store.revision()
            now = self.config.clock()
            snap = self._snap
            if snap is not None and snap.revision == rev and now < snap.next_expiry:
                return snap
            nodes = tuple(self.store.list_nodes())
            pods = tuple(self.store.list_pods())
            expired, nxt = expiries(pods, self.config.reservation_ttl_s, now)
            fp = fingerprints(nodes, pods, expired)
            latest = self._snap  # our own reservation may have advanced it while we listed
            same = next((x for x in (latest, snap) if x is not None and x.fingerprint == fp), None)
            if same is not None:
                new = Snapshot(rev, same.state, same.allocated, nodes, pods, same.problems, fp,
                               expired=expired, next_expiry=nxt)
            else:
                live = [p for p in pods if _key(p) not in expired]
                state, problems = state_from_objects(nodes, live, layouts_any=self.config.layouts_any,
                                                     keys=self.config.allocation_keys,
                                                     templates=self.config.templates)
                prev = latest or snap
                state = reuse_nodes(state, prev.state if prev is not None else None)
                new = Snapshot(rev, state, holders_of(state), nodes, pods, tuple(problems), fp,
                               expired=expired, next_expiry=nxt)
                if expired:
                    log.info("state: %d reservation(s) of unbound pods expired (ttl %.0f s)", len(expired),
                             self.config.reservation_ttl_s)
                self.rebuilds += 1
                if problems:
                    for p in problems[:20]:
                        log.warning("state: %s: %s", p.obj, p.message)
            with self._snap_lock:
                if self._snap is None or self._snap.revision <= rev:
                    self._snap = new
            return new

    def state_without(self, snap: Snapshot, pod_key: str) -> ClusterState:
        """The snapshot's state without ``pod_key``'s own allocation (a pod filtered again)."""
        if pod_key not in snap.allocated:
            return snap.state
        cached = snap._cache.get("without")
        if cached is not None and cached[0] == pod_key:
            return cached[1]  # type: ignore[no-any-return]
        state, _ = state_from_objects(snap.nodes, [p for p in snap.live_pods if _key(p) != pod_key],
                                      layouts_any=self.config.layouts_any, keys=self.config.allocation_keys,
                                      templates=self.config.templates)
        state = reuse_nodes(state, snap.state)  # every other node stays the object the planner knows
        snap._cache["without"] = (pod_key, state)
        return state

    def _advance(self, plan: Plan, pod_obj: dict[str, Any], rev_before: int) -> None:
        """When our reservation was the only change since the cached snapshot, the next snapshot
        is that state + the plan (what state_from_objects would rebuild, without rebuilding it).
        Called under the commit lock, after the plan was checked against the cached snapshot."""
        if self.store.revision() != rev_before + 1:
            return
        key = plan.placements[0].pod
        with self._snap_lock:
            cur = self._snap
            if cur is None or cur.revision != rev_before or key in cur.allocated:
                return
            if key in cur.expired:
                return
            pods = (*(p for p in cur.pods if _key(p) != key), pod_obj)
            fp = dict(cur.fingerprint)
            fp["p/" + key] = (*pod_fingerprint(pod_obj), False)
            host = host_request_of(pod_obj)
            until = reservation_expiry(pod_obj, self.config.reservation_ttl_s)
            index = cur._cache.get("node-objects")  # same node objects: the per-node index carries over
            self._snap = Snapshot(rev_before + 1, apply_plan(cur.state, plan, {key: host} if host else None),
                                  cur.allocated | {key},
                                  cur.nodes, pods, cur.problems, fp, expired=cur.expired,
                                  next_expiry=min(cur.next_expiry, until if until is not None else math.inf),
                                  _cache={} if index is None else {"node-objects": index})

    # ------------------------------------------------------------------ node serialisation
    def _node_lock(self, node: str) -> threading.Lock:
        with self._guard:
            lk = self._node_locks.get(node)
            if lk is None:
                lk = self._node_locks[node] = threading.Lock()
            return lk

    # ------------------------------------------------------------------ unplaceable bookkeeping
    def _mark_unplaceable(self, key: str, why: str) -> None:
        with self._guard:
            self._unplaceable[key] = (time.time(), why)
            self._unplaceable.move_to_end(key)
            while len(self._unplaceable) > 10000:
                self._unplaceable.popitem(last=False)

    def _clear_unplaceable(self, key: str) -> None:
        with self._guard:
            self._unplaceable.pop(key, None)

    def unplaceable(self) -> dict[str, tuple[float, str]]:
        """Pods whose last filter found no node, still pending without a reservation."""
        live = {}
        snap = self.snapshot()
        by_key = {_key(p): p for p in snap.pods}
        with self._guard:
            items = list(self._unplaceable.items())
        for k, v in items:
            p = by_key.get(k)
            if p is None:
                # GPU pods the store does not know are gone
                with self._guard:
                    self._unplaceable.pop(k, None)
                continue
            ann = (p.get("metadata") or {}).get("annotations") or {}
            if (p.get("spec") or {}).get("nodeName") or ann.get(POD_ALLOCATION) or \
                    (p.get("status") or {}).get("phase") in TERMINAL:
                continue
            live[k] = v
        return live

    # ------------------------------------------------------------------ filter
    def filter(self, args: ExtenderArgs) -> FilterOutcome:
        names = args.candidates
        try:
            req = parse_pod(args.pod, self.config.templates.resources)
        except RequestError as e:
            msg = f"invalid GPU request: {e}"
            return FilterOutcome(filter_result(args, [], {}, {n: msg for n in names}), "invalid")
        if not req.wants_gpu:
            return FilterOutcome(filter_result(args, names), "skipped")
        if self.config.is_leader is not None and not self.config.is_leader():
            return FilterOutcome(filter_result(args, None, error="this dynamig extender is not the leader"), "error")
        try:
            return self._filter_gpu(args, req, names)
        except DynamigError as e:
            log.warning("filter %s: %s", req.key, e)
            return FilterOutcome(filter_result(args, None, error=f"dynamig: {e}"), "error")

    def _filter_gpu(self, args: ExtenderArgs, req: PodRequest, names: list[str]) -> FilterOutcome:
        pod_meta = args.pod.get("metadata") or {}
        rv = pod_meta.get("resourceVersion")
        rv = str(rv) if rv else None
        last_reasons: dict[str, str] = {}
        wl = self.workload
        if wl is not None:
            if not wl.rebuilt:
                wl.rebuild(self.snapshot().pods)  # after a (re)start: the pods the cluster has
            wl.observe(req)
        for attempt in range(self.config.max_replans + 1):
            snap = self.snapshot()
            state = self.state_without(snap, req.key)
            has = state.has_node
            unique = dict.fromkeys(names)
            known = [n for n in unique if has(n)]
            failed = {} if len(known) == len(unique) else {n: NO_REGISTRATION for n in names if not has(n)}
            if not known:
                self._mark_unplaceable(req.key, "no candidate node has dynamig GPUs")
                return FilterOutcome(filter_result(args, [], failed), "unplaceable")
            plan = self.plan_for(state, req, known)
            reasons = dict(plan.reasons)
            if not plan.placed:
                la = self.lookahead
                queued = la.reason(req.key, state) if la is not None else None
                for n in known:
                    failed[n] = reasons.get(n) or f"no placement for {req.key} on this node"
                    if queued:
                        failed[n] = f"{failed[n]} ({queued})"
                self._mark_unplaceable(req.key, "; ".join(sorted(set(failed.values())))[:500])
                return FilterOutcome(filter_result(args, [], failed), "unplaceable", plan)
            chosen = plan.placements[0].node or ""
            if chosen not in known:
                raise DynamigError(f"planner chose node {chosen!r}, which is not a candidate")
            if self.config.validate_plans:
                bad = validate(state, plan, {req.key: req}, self.config.templates)
                if bad:
                    raise DynamigError(f"planner produced an invalid plan: {'; '.join(map(str, bad[:3]))}")
            with self._node_lock(chosen), self._commit_lock:
                current = self.snapshot()  # catch up (cheap when nothing relevant changed)
                if current.state is not snap.state and validate(
                        self.state_without(current, req.key), plan, {req.key: req}, self.config.templates):
                    log.info("filter %s: %s changed while planning; re-planning (attempt %d)",
                             req.key, chosen, attempt + 1)
                    last_reasons = {chosen: "taken by a concurrent reservation"}
                    continue
                rev_before = current.revision
                base = state if current.state is snap.state else self.state_without(current, req.key)
                pod_obj = self._reserve(req, plan, rv, base, current)
                self._advance(plan, pod_obj, rev_before)
            self._clear_unplaceable(req.key)
            for n in known:
                if n != chosen:
                    failed[n] = reasons.get(n) or (
                        f"fits, but dynamig reserved node {chosen} for this pod (best plan; one node per pod)")
            return FilterOutcome(filter_result(args, [chosen], failed), "placed", plan)
        why = "; ".join(f"{k}: {v}" for k, v in last_reasons.items())
        return FilterOutcome(filter_result(args, [], {n: f"lost a race for GPU capacity ({why}); retry"
                                                      for n in names}), "unplaceable")

    def _reserve(self, req: PodRequest, plan: Plan, rv: str | None, state: ClusterState,
                 snap: Snapshot) -> dict[str, Any]:
        first = allocation_from_plan(plan)
        alloc = with_pending_layouts(first, state, snap.registered(first.node), snap.pending_changes())
        ann = {
            POD_ALLOCATION: encode_allocation(alloc),
            POD_NODE: alloc.node,
            POD_PLAN_TIME: f"{self.config.clock():.6f}",
            POD_BIND_PHASE: None,
            POD_BIND_TIME: None,
        }
        ns, name = req.namespace, req.name
        keys = self.config.allocation_keys  # the plugin serves only what this signature proves (models.signing)
        ann[POD_ALLOCATION_SIG] = None if keys is None else sign_reservation(keys, req.uid or str(
            (self.store.get_pod(ns, name).get("metadata") or {}).get("uid") or ""), req.key, ann)
        for _ in range(3):
            try:
                return self.store.patch_pod_annotations(ns, name, ann, resource_version=rv)
            except Conflict:
                cur = self.store.get_pod(ns, name)  # NotFound propagates
                if (cur.get("spec") or {}).get("nodeName"):
                    raise Conflict(f"pod {req.key} is already bound to {cur['spec']['nodeName']}") from None
                if req.uid and (cur.get("metadata") or {}).get("uid") not in (None, "", req.uid):
                    raise Conflict(f"pod {req.key} was recreated (UID changed)") from None
                rv = str((cur.get("metadata") or {}).get("resourceVersion") or "") or None
        raise Conflict(f"pod {req.key}: kept changing while reserving its allocation")

    # ------------------------------------------------------------------ prioritize
    def prioritize(self, args: ExtenderArgs) -> dict[str, int]:
        names = list(dict.fromkeys(args.candidates))
        scores = dict.fromkeys(names, 0)
        try:
            req = parse_pod(args.pod, self.config.templates.resources)
        except RequestError:
            return scores
        if not req.wants_gpu or not names:
            return scores
        snap = self.snapshot()
        reserved = None
        for p in snap.pods:
            if _key(p) == req.key:
                reserved = ((p.get("metadata") or {}).get("annotations") or {}).get(POD_NODE)
                break
        state = self.state_without(snap, req.key)
        others = [n for n in names if n != reserved and state.has_node(n)][: self.config.prioritize_max_nodes]
        keys: dict[str, tuple[float, ...]] = {}
        for n in others:
            plan = self.plan(state, req, [n])
            if plan.placed:
                keys[n] = tuple(-s.value if s.name == "placed" else s.value for s in plan.stages)
        top = MAX_PRIORITY - 1 if reserved in scores else MAX_PRIORITY
        ranked = sorted(set(keys.values()))
        for n, k in keys.items():
            i = ranked.index(k)
            scores[n] = max(1, top - round(i * (top - 1) / max(1, len(ranked) - 1))) if len(ranked) > 1 else top
        if reserved in scores:
            scores[reserved] = MAX_PRIORITY
        return scores

    # ------------------------------------------------------------------ bind
    def _pod_exists(self, key: str) -> bool:
        ns, name = key.split("/", 1)
        try:
            pod = self.store.get_pod(ns, name)
        except NotFound:
            return False
        return (pod.get("status") or {}).get("phase") not in TERMINAL and not \
            (pod.get("metadata") or {}).get("deletionTimestamp")

    def lock_is_stale(self, lock: NodeLock) -> bool:
        """A node lock whose holder died between taking it and binding: its pod is not bound and
        its owner is this process without a bind in flight, or an extender that is no longer
        running (``holder_alive``). A lock whose pod is bound waits for the device plugin."""
        ns, _, name = lock.pod.partition("/")
        try:
            pod = self.store.get_pod(ns, name)
        except NotFound:
            return True
        if (pod.get("spec") or {}).get("nodeName"):
            return False
        if lock.owner == self.config.identity:
            with self._guard:
                return lock.pod not in self._binding
        alive = self.config.holder_alive
        return alive is not None and not alive(lock.owner)

    def revalidate(self, key: str, pod: Mapping[str, Any]) -> str:
        """'' when ``pod``'s reservation still holds in the live state, else why not."""
        until = reservation_expiry(pod, self.config.reservation_ttl_s)
        now = self.config.clock()
        if until is not None and until <= now:
            return (f"the reservation of pod {key} expired ({now - until + self.config.reservation_ttl_s:.0f} s "
                    f"since its filter, ttl {self.config.reservation_ttl_s:.0f} s); it must be filtered again")
        snap = self.snapshot()
        raw = ((pod.get("metadata") or {}).get("annotations") or {}).get(POD_ALLOCATION)
        cached = next((p for p in snap.pods if _key(p) == key), None)
        cached_raw = ((cached or {}).get("metadata") or {}).get("annotations") or {}
        if cached is not None and cached_raw.get(POD_ALLOCATION) == raw and \
                cached_raw.get(POD_PLAN_TIME) == ((pod.get("metadata") or {}).get("annotations") or {}).get(
                    POD_PLAN_TIME):
            problems, holders = snap.problems, snap.allocated
        else:  # the cache lags the pod just read: rebuild with the pod as read
            pods = [p for p in snap.live_pods if _key(p) != key] + [dict(pod)]
            st, probs = state_from_objects(snap.nodes, pods, layouts_any=self.config.layouts_any)
            problems, holders = tuple(probs), holders_of(st)
        mine = [p.message for p in problems if p.obj == f"pod {key}"]
        if mine:
            return f"the reservation of pod {key} no longer holds ({'; '.join(mine[:3])}); it must be filtered again"
        try:
            alloc = active_allocation(pod)
        except DynamigError as e:
            return f"pod {key}: {e}"
        if alloc is None or (alloc.units and key not in holders):
            return f"the reservation of pod {key} no longer holds in the live state; it must be filtered again"
        return ""

    def bind(self, args: BindingArgs) -> str:
        """'' on success, else the reason (the lock is released again on every failure)."""
        ns, name, node = args.pod_namespace, args.pod_name, args.node
        key = f"{ns}/{name}"
        if self.config.is_leader is not None and not self.config.is_leader():
            return "this dynamig extender is not the leader"
        try:
            pod = self.store.get_pod(ns, name)
        except NotFound:
            return f"pod {key} not found"
        except StoreError as e:
            return f"reading pod {key}: {e}"
        meta = pod.get("metadata") or {}
        if args.pod_uid and meta.get("uid") and meta.get("uid") != args.pod_uid:
            return f"pod {key} has UID {meta.get('uid')}, not {args.pod_uid} (recreated); schedule it again"
        try:
            wants_gpu = parse_pod(pod, self.config.templates.resources).wants_gpu
        except RequestError as e:
            return f"pod {key}: {e}"
        if not wants_gpu:
            try:
                self.store.bind(ns, name, args.pod_uid, node)
            except StoreError as e:
                return f"binding {key} to {node}: {e}"
            return ""
        ann = meta.get("annotations") or {}
        reserved = ann.get(POD_NODE)
        if not ann.get(POD_ALLOCATION) or not reserved:
            return f"pod {key} has no dynamig reservation; it must pass the dynamig filter first"
        if reserved != node:
            return f"pod {key} is reserved on node {reserved}, not {node}; it must be filtered again"
        if (forged := signature_problem(pod, self.config.allocation_keys)) is not None:
            return f"pod {key}: {forged}; it must be filtered again"
        why = self.revalidate(key, pod)
        if why:
            return why
        with self._guard:
            self._binding.add(key)
        try:
            return self._lock_and_bind(ns, name, key, node, args.pod_uid)
        finally:
            with self._guard:
                self._binding.discard(key)

    def _lock_and_bind(self, ns: str, name: str, key: str, node: str, uid: str) -> str:
        now = self.config.clock()
        try:
            nodelock.acquire(self.store, node, key, self.config.identity, now,
                             expiry_s=self.config.lock_expiry_s, pod_exists=self._pod_exists,
                             stale=self.lock_is_stale)
        except nodelock.LockHeld as e:
            return str(e)
        except StoreError as e:
            return f"node lock on {node}: {e}"
        try:
            self.store.patch_pod_annotations(ns, name, {POD_BIND_PHASE: PHASE_ALLOCATING,
                                                        POD_BIND_TIME: str(int(now))})
            self.store.bind(ns, name, uid, node)
        except StoreError as e:
            try:
                nodelock.release(self.store, node, key)
            except StoreError as e2:  # pragma: no cover
                log.warning("releasing node lock on %s: %s", node, e2)
            return f"binding {key} to {node}: {e}"
        return ""
