"""The FastAPI apps: extender verbs, admission webhook, health, monitor.

Two listeners (issue 15, findings 1 and 4): :func:`create_apps` returns

- ``scheduler``: the kube-scheduler verbs (``/filter``, ``/prioritize``, ``/bind``). They are
  unauthenticated and act on whatever Pod and node the body names, so this app is served on
  loopback only; kube-scheduler runs in the same pod.
- ``public``: the admission webhook, ``/healthz``, ``/readyz`` and the monitor page, served on the
  pod address (TLS when configured) for the API server, the kubelet's probes and people. It has no
  scheduler verb: a pod elsewhere in the cluster cannot reserve or bind anything through it.

:func:`create_app` is both in one app (the demo and tests on loopback). Routes are served at the
root (HAMi's layout) and under ``/extender``. Every verb answers 200 with the wire format of
``reference/extender-api.md``; a body that cannot be read gets a 4xx with a message (413 when it
is larger than ``max_body_bytes``, detected while it streams in); an internal failure becomes an
``Error`` with its text in the answer, never a bare 500. Solves run in a thread pool, at most
``max_concurrent_solves`` at a time; API writes (bind, webhook look-ups) in a separate pool.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, Response

from models.store import ClusterStore

from . import monitor, webhook
from .config import ExtenderConfig
from .core import Extender, FilterOutcome
from .limits import pod_limit_problem
from .lookahead import LookaheadMetrics
from .metrics import ExtenderMetrics
from .wire import (
    BadRequest,
    binding_result,
    dumps,
    filter_result,
    host_priorities,
    load_json,
    parse_binding_args,
    parse_extender_args,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


def _json(obj: Any, status: int = 200) -> Response:
    return Response(dumps(obj), status_code=status, media_type="application/json")


def _bad(e: BadRequest) -> Response:
    return _json({"Error": str(e)}, e.status)


def describe(e: BaseException) -> str:
    """An exception as one line that always says something (``MemoryError()`` has no text)."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


@dataclass
class _Shared:
    """What both listeners of one extender share: the core, metrics and worker pools."""

    store: ClusterStore
    config: ExtenderConfig
    ext: Extender
    metrics: ExtenderMetrics
    solve_pool: ThreadPoolExecutor
    io_pool: ThreadPoolExecutor
    solve_slots: dict[str, asyncio.Semaphore]

    def slots(self) -> asyncio.Semaphore:
        loop_id = str(id(asyncio.get_running_loop()))
        sem = self.solve_slots.get(loop_id)
        if sem is None:
            sem = self.solve_slots[loop_id] = asyncio.Semaphore(max(1, self.config.max_concurrent_solves))
        return sem

    async def in_pool(self, pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    async def body_of(self, request: Request) -> Any:
        """The JSON body, read in chunks: a body over ``max_body_bytes`` is refused (413) as soon as
        its Content-Length says so, else as soon as that many bytes arrived; never read whole."""
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                n = int(declared)
            except ValueError:
                raise BadRequest(f"invalid Content-Length {declared!r}") from None
            if n > limit:
                raise BadRequest(f"request body too large ({n} bytes > {limit})", 413)
        chunks: list[bytes] = []
        got = 0
        async for chunk in request.stream():
            got += len(chunk)
            if got > limit:
                raise BadRequest(f"request body too large (more than {limit} bytes)", 413)
            chunks.append(chunk)
        return load_json(b"".join(chunks), self.config.max_json_depth)

    def limit_problem(self, pod: Any) -> str | None:
        if not isinstance(pod, dict):
            return None
        return pod_limit_problem(pod, self.config.max_units_per_container, self.config.max_containers_per_pod)


def _parsed(fn: Callable[[Any], T], doc: Any) -> T:
    try:
        return fn(doc)
    except BadRequest:
        raise
    except Exception as e:  # a shape the validators did not foresee: still the client's body
        raise BadRequest(f"malformed request body: {describe(e)}") from None


def _scheduler_routes(sh: _Shared) -> APIRouter:
    router = APIRouter()
    ext, metrics = sh.ext, sh.metrics

    @router.post("/filter")
    async def filter_(request: Request) -> Response:
        t0 = time.perf_counter()
        try:
            args = _parsed(parse_extender_args, await sh.body_of(request))
        except BadRequest as e:
            metrics.requests.labels("filter", "bad_request").inc()
            return _bad(e)
        over = sh.limit_problem(args.pod)
        if over is not None:
            outcome = FilterOutcome(filter_result(args, [], {}, {n: f"invalid GPU request: {over}"
                                                                 for n in args.candidates}), "invalid")
        else:
            try:
                async with sh.slots():
                    outcome = await sh.in_pool(sh.solve_pool, ext.filter, args)
            except Exception as e:  # never a 500: the scheduler reads Error
                log.exception("filter %s failed", args.pod_key)
                outcome = FilterOutcome(filter_result(args, None, error=f"dynamig: internal error: {describe(e)}"),
                                        "error")
        metrics.observe_filter(outcome, time.perf_counter() - t0)
        metrics.requests.labels("filter", outcome.status).inc()
        return _json(outcome.result)

    @router.post("/prioritize")
    async def prioritize(request: Request) -> Response:
        try:
            args = _parsed(parse_extender_args, await sh.body_of(request))
        except BadRequest as e:
            metrics.requests.labels("prioritize", "bad_request").inc()
            return _bad(e)
        scores = dict.fromkeys(args.candidates, 0)
        if sh.limit_problem(args.pod) is None:
            try:
                async with sh.slots():
                    scores = await sh.in_pool(sh.solve_pool, ext.prioritize, args)
            except Exception:
                log.exception("prioritize %s failed", args.pod_key)
        metrics.requests.labels("prioritize", "ok").inc()
        return _json(host_priorities(scores))

    @router.post("/bind")
    async def bind(request: Request) -> Response:
        try:
            args = _parsed(parse_binding_args, await sh.body_of(request))
        except BadRequest as e:
            metrics.requests.labels("bind", "bad_request").inc()
            return _bad(e)
        try:
            err = await sh.in_pool(sh.io_pool, ext.bind, args)
        except Exception as e:
            log.exception("bind %s/%s failed", args.pod_namespace, args.pod_name)
            err = f"dynamig: internal error: {describe(e)}"
        metrics.requests.labels("bind", "error" if err else "ok").inc()
        if err:
            log.info("bind %s/%s -> %s: %s", args.pod_namespace, args.pod_name, args.node, err)
        return _json(binding_result(err))

    return router


def _public_routes(sh: _Shared) -> APIRouter:
    router = APIRouter()
    store, config, ext, metrics = sh.store, sh.config, sh.ext, sh.metrics

    @router.post("/webhook")
    async def webhook_(request: Request) -> Response:
        try:
            doc = await sh.body_of(request)
            req = _parsed(webhook.parse_review, doc)
        except BadRequest as e:
            metrics.requests.labels("webhook", "bad_request").inc()
            return _bad(e)
        over = sh.limit_problem(req.get("object")) if (req.get("kind") or {}).get("kind") in (None, "Pod") else None
        if over is not None:
            answer = webhook._response(doc, str(req["uid"]), False, over, 422)
        else:
            ns_labels = getattr(store, "namespace_labels", None)
            try:
                answer = await sh.in_pool(sh.io_pool, webhook.review, doc, config, ns_labels)
            except Exception as e:
                log.exception("webhook failed")
                answer = webhook._response(doc, str(req["uid"]), False, f"dynamig webhook error: {describe(e)}", 500)
        allowed = bool(answer["response"].get("allowed"))
        metrics.requests.labels("webhook", "allowed" if allowed else "denied").inc()
        return _json(answer)

    @router.get("/readyz")
    async def readyz() -> Response:
        synced = getattr(store, "has_synced", None)
        if synced is not None and not synced():
            return Response("store not synced", status_code=503, media_type="text/plain")
        if config.is_leader is not None and not config.is_leader():
            return Response("not the leader", status_code=503, media_type="text/plain")
        return Response("ok", media_type="text/plain")

    @router.get("/monitor")
    async def monitor_page() -> HTMLResponse:
        return HTMLResponse(monitor.page())

    @router.get("/monitor/state")
    async def monitor_state() -> Response:
        try:
            st = await sh.in_pool(sh.io_pool, monitor.monitor_state, ext)
        except Exception as e:
            log.exception("monitor state failed")
            return _json({"error": describe(e)}, 503)
        return _json(st)

    return router


def _health() -> APIRouter:
    router = APIRouter()

    @router.get("/healthz")
    async def healthz() -> Response:
        return Response("ok", media_type="text/plain")

    return router


def _app(sh: _Shared, routers: list[APIRouter], title: str) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        history = monitor.history_for(sh.ext)  # the monitor page's last hour, sampled while serving
        history.start()
        la = sh.ext.lookahead
        if la is not None:
            la.start()  # idempotent: the scheduler and public apps share one loop
        yield
        if la is not None:
            la.stop()
        history.stop()
        sh.solve_pool.shutdown(wait=False, cancel_futures=True)
        sh.io_pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title=title, version=sh.config.version, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.extender = sh.ext
    app.state.metrics = sh.metrics
    app.state.store = sh.store
    app.state.config = sh.config

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, e: Exception) -> Response:  # never a bare 500
        log.exception("unexpected error")
        return _json({"Error": f"dynamig: internal error: {describe(e)}"}, 500)

    for r in routers:
        app.include_router(r)
        app.include_router(r, prefix="/extender")
    return app


def _shared(store: ClusterStore, config: ExtenderConfig | None) -> _Shared:
    config = config or ExtenderConfig()
    ext = Extender(store, config)
    metrics = ExtenderMetrics(ext, legacy=config.legacy_metrics, hami_version=config.hami_metrics)
    if ext.lookahead is not None:
        ext.lookahead.metrics = LookaheadMetrics(metrics.registry, ext.lookahead)
    return _Shared(store, config, ext, metrics,
                   ThreadPoolExecutor(max(1, config.max_concurrent_solves), thread_name_prefix="dynamig-solve"),
                   ThreadPoolExecutor(16, thread_name_prefix="dynamig-io"), {})


@dataclass(frozen=True)
class Apps:
    """The two listeners' apps of one extender (one core, one metrics registry)."""

    scheduler: FastAPI  # loopback: /filter, /prioritize, /bind, /healthz
    public: FastAPI  # pod address: /webhook, /healthz, /readyz, /monitor


def create_apps(store: ClusterStore, config: ExtenderConfig | None = None) -> Apps:
    sh = _shared(store, config)
    return Apps(_app(sh, [_scheduler_routes(sh), _health()], "dynamig scheduler extender (scheduler verbs)"),
                _app(sh, [_public_routes(sh), _health()], "dynamig scheduler extender"))


def create_app(store: ClusterStore, config: ExtenderConfig | None = None) -> FastAPI:
    """Every route in one app (the demo and tests, on loopback)."""
    sh = _shared(store, config)
    return _app(sh, [_scheduler_routes(sh), _public_routes(sh), _health()], "dynamig scheduler extender")
