"""The monitor page: nodes -> GPUs -> layout and MIG instances -> pods, live (``GET /monitor``
polls ``GET /monitor/state`` every 2 s), with an hour of history kept in memory. No external assets.

History: one sample per :data:`SAMPLE_S` seconds (utilisation of GPU memory and compute, GPUs
busy, pods running and pending), :data:`HISTORY_S` seconds kept. The app samples from a daemon
thread while it runs (:meth:`History.start`); every state request also records a sample, so the
history never lags the page.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from models.codecs import POD_ALLOCATION, POD_BIND_PHASE, POD_NODE
from models.errors import RequestError
from models.requests import ContainerRequest, describe_request, parse_pod, pod_of_holder
from models.types import ClusterState, NodeMode

from .metrics import fragmentation_ratio, gpu_usage

if TYPE_CHECKING:
    from .core import Extender

SAMPLE_S = 10.0
HISTORY_S = 3600.0


@cache
def page() -> str:
    return resources.files(__package__).joinpath("monitor.html").read_text(encoding="utf-8")


@dataclass(frozen=True)
class Sample:
    t: float
    memory_pct: float  # GPU memory held by pods, % of all GPU memory
    compute_pct: float  # GPU compute held by pods, % of all GPUs
    busy_gpus: int
    gpus: int
    running: int  # pods holding GPUs
    pending: int  # GPU pods without a node or reservation


class History:
    """The last :data:`HISTORY_S` seconds of samples, one per ``every`` seconds (thread-safe)."""

    def __init__(self, ext: Extender, every: float = SAMPLE_S, keep_s: float = HISTORY_S) -> None:
        self.ext = ext
        self.every = every
        self._samples: deque[Sample] = deque(maxlen=max(2, int(keep_s / every) + 1))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self, sample: Sample) -> None:
        """Append ``sample``, or replace the newest one when it is less than ``every`` seconds old."""
        with self._lock:
            if self._samples and sample.t - self._samples[-1].t < self.every and len(self._samples) > 1 \
                    and self._samples[-1].t - self._samples[-2].t < self.every:
                self._samples[-1] = sample
            else:
                self._samples.append(sample)

    def samples(self) -> list[Sample]:
        with self._lock:
            return list(self._samples)

    def sample_now(self) -> None:
        self.record(sample_of(self.ext))

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()

        def loop() -> None:
            while not self._stop.is_set():
                with contextlib.suppress(Exception):  # a state that cannot be read now: next time
                    self.sample_now()
                self._stop.wait(self.every)

        self._thread = threading.Thread(target=loop, name="dynamig-monitor-history", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        t, self._thread = self._thread, None
        if t is not None:
            t.join(timeout=2)


_HISTORY_LOCK = threading.Lock()


def history_for(ext: Extender) -> History:
    """The history of this extender, kept on it (created on first use)."""
    with _HISTORY_LOCK:
        h: History | None = getattr(ext, "_monitor_history", None)
        if h is None:
            h = History(ext)
            ext._monitor_history = h  # type: ignore[attr-defined]
        return h


def _usage(state: ClusterState) -> tuple[float, float, int, int]:
    mem = used_mem = cores = 0
    gpus = busy = 0
    for n in state.nodes:
        for g in n.gpus:
            u = gpu_usage(g)
            gpus += 1
            busy += 1 if g.busy else 0
            mem += g.memory_mib
            used_mem += u.used_mib
            cores += u.used_cores
    return (100.0 * used_mem / mem if mem else 0.0, 100.0 * cores / (100 * gpus) if gpus else 0.0, busy, gpus)


def _holders(state: ClusterState) -> dict[str, list[str]]:
    """Pod key -> the GPUs (and instances or shares) it holds."""
    held: dict[str, list[str]] = {}
    for n in state.nodes:
        for g in n.gpus:
            for i in g.instances:
                if i.holder:
                    held.setdefault(pod_of_holder(i.holder), []).append(f"{n.name} GPU {g.index} {i.slot.profile}")
            for s in g.shares:
                held.setdefault(pod_of_holder(s.holder), []).append(
                    f"{n.name} GPU {g.index} share {s.memory_mib} MiB/{s.cores}%")
    return held


def sample_of(ext: Extender, pods: list[dict[str, Any]] | None = None) -> Sample:
    snap = ext.snapshot()
    mem, comp, busy, gpus = _usage(snap.state)
    rows = pods if pods is not None else _pods(snap, _holders(snap.state), {})
    running = sum(1 for p in rows if p["gpus"])
    pending = sum(1 for p in rows if p["gpu_pod"] and not p["gpus"] and not p["node"]
                  and p["phase"] in (None, "Pending"))
    return Sample(time.time(), round(mem, 2), round(comp, 2), busy, gpus, running, pending)


def request_text(c: ContainerRequest) -> str:
    """One container's request as a person writes it: ``2× 9000 MiB, 30% cores``."""
    return describe_request(c, times="×", whole="whole GPU")


def _request(obj: dict[str, Any]) -> tuple[bool, str]:
    try:
        req = parse_pod(obj)
    except RequestError as e:
        return True, f"invalid: {e}"
    units = [c for c in req.containers if c.count]
    if not units:
        return False, ""
    text = "; ".join(request_text(c) for c in units)
    if req.modes:
        text += " (" + ",".join(sorted(m.value for m in req.modes)) + ")"
    return True, text


def _pods(snap: Any, held: dict[str, list[str]], why: dict[str, str]) -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = []
    for obj in snap.pods:
        meta = obj.get("metadata") or {}
        ann = meta.get("annotations") or {}
        key = f"{meta.get('namespace') or 'default'}/{meta.get('name')}"
        gpu_pod, request = _request(obj)
        pods.append({
            "pod": key,
            "node": ann.get(POD_NODE) or (obj.get("spec") or {}).get("nodeName"),
            "phase": (obj.get("status") or {}).get("phase"),
            "bind_phase": ann.get(POD_BIND_PHASE),
            "reserved": bool(ann.get(POD_ALLOCATION)),
            "gpu_pod": gpu_pod,
            "request": request,
            "gpus": held.get(key, []),
            "reason": why.get(key),
        })
    pods.sort(key=lambda d: str(d["pod"]))
    return pods


def queue_plan(ext: Extender, state: ClusterState) -> dict[str, Any]:
    """"Planned for the queue": the lookahead's current batch plan — its age and status, which
    pending pods it places where, which GPUs it re-cuts to what, and why the others wait."""
    la = ext.lookahead
    if la is None:
        return {"enabled": False}
    b = la.current
    out: dict[str, Any] = {"enabled": True, "limit": la.settings.limit, "budget_ms": la.settings.budget_ms,
                           "solves": dict(la.solved), "answers": dict(la.answered), "plan": None}
    if b is None:
        return out
    placed, deferred = [], []
    for key in b.queue:
        pl = b.placement(key)
        if pl is not None and pl.placed:
            gpus = sorted({(u.node, u.gpu_index, u.slot.profile if u.slot else "share") for u in pl.units})
            placed.append({"pod": key, "node": pl.node, "gpus": [f"{n}/{i} {prof}" for n, i, prof in gpus]})
        else:
            deferred.append({"pod": key, "reason": la.reason(key, state) or "not placed by the queue plan"})
    recuts = []
    for c in b.plan.layout_changes:
        try:
            index: int | str = state.gpu(c.node, c.gpu).index
        except KeyError:
            index = c.gpu
        recuts.append({"node": c.node, "gpu": index, "uuid": c.gpu, "incremental": c.incremental,
                       "layout": [f"{x.profile}@{x.start}" for x in c.layout]})
    out["plan"] = {"age_s": round(max(0.0, la.clock() - b.solved_at), 1), "status": b.plan.status,
                   "solve_ms": round(b.solve_ms, 1), "revision": b.revision, "queue": len(b.queue),
                   "placed": placed, "deferred": deferred, "recuts": recuts}
    return out


def monitor_state(ext: Extender) -> dict[str, Any]:
    snap = ext.snapshot()
    state = snap.state
    nodes = []
    held = _holders(state)
    for n in state.nodes:
        gpus = []
        for g in n.gpus:
            gm = g.gpu_model
            u = gpu_usage(g)
            insts = []
            for i in g.instances:
                p = gm.profile(i.slot.profile)
                pod = pod_of_holder(i.holder) if i.holder else None
                insts.append({
                    "profile": i.slot.profile, "start": i.slot.start, "slices": p.memory_slices,
                    "memory_mib": p.memory_mib, "cores": gm.core_percent(p), "holder": i.holder,
                    "pod": pod, "uuid": i.uuid,
                })
            shares = []
            for s in g.shares:
                shares.append({"pod": pod_of_holder(s.holder), "holder": s.holder, "memory_mib": s.memory_mib,
                               "cores": s.cores})
            gpus.append({
                "index": g.index, "uuid": g.uuid, "model": g.model, "mode": g.mode.value, "health": g.health,
                "memory_mib": g.memory_mib, "memory_slices": gm.memory_slices if g.mode is NodeMode.MIG else 0,
                "used_memory_mib": u.used_mib, "used_cores": u.used_cores, "units": u.units, "split": g.split,
                "busy": g.busy, "instances": insts, "shares": shares,
            })
        nodes.append({"name": n.name, "mode": n.mode.value, "gpus": gpus})
    unplaceable = ext.unplaceable()
    why = {k: reason for k, (_, reason) in unplaceable.items()}
    pods = _pods(snap, held, why)
    history = history_for(ext)
    history.record(sample_of(ext, pods))
    mem, comp, busy, ngpus = _usage(state)
    return {
        "time": time.time(),
        "revision": snap.revision,
        "nodes": nodes,
        "pods": pods,
        "unplaceable": [{"pod": k, "since": t, "reason": r} for k, (t, r) in sorted(unplaceable.items())],
        "fragmentation_ratio": fragmentation_ratio(state),
        "usage": {"memory_pct": round(mem, 2), "compute_pct": round(comp, 2), "busy_gpus": busy, "gpus": ngpus},
        "history": {"sample_s": history.every, "keep_s": HISTORY_S,
                    "samples": [asdict(s) for s in history.samples()]},
        "problems": [{"object": x.obj, "message": x.message} for x in snap.problems],
        "queue_plan": queue_plan(ext, state),
    }
