"""The FastAPI app: extender verbs, admission webhook, health, monitor.

Routes are served at the root (HAMi's layout) and under ``/extender`` (the urlPrefix of the
design's KubeSchedulerConfiguration example). Every verb answers 200 with the wire format of
``reference/extender-api.md``; a body that cannot be read gets 400 with a message; an internal
failure becomes an ``Error`` in the answer, never a 500. Solves run in a thread pool, at most
``max_concurrent_solves`` at a time; API writes (bind, webhook look-ups) in a separate pool.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, Response

from models.store import ClusterStore

from . import monitor, webhook
from .config import ExtenderConfig
from .core import Extender, FilterOutcome
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


def _bad(msg: str) -> Response:
    return _json({"Error": msg}, 400)


def create_app(store: ClusterStore, config: ExtenderConfig | None = None) -> FastAPI:
    config = config or ExtenderConfig()
    ext = Extender(store, config)
    metrics = ExtenderMetrics(ext, legacy=config.legacy_metrics)
    solve_pool = ThreadPoolExecutor(max(1, config.max_concurrent_solves), thread_name_prefix="dynamig-solve")
    io_pool = ThreadPoolExecutor(16, thread_name_prefix="dynamig-io")
    solve_slots: dict[str, asyncio.Semaphore] = {}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        history = monitor.history_for(ext)  # the monitor page's last hour, sampled while serving
        history.start()
        yield
        history.stop()
        solve_pool.shutdown(wait=False, cancel_futures=True)
        io_pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="dynamig scheduler extender", version=config.version, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.extender = ext
    app.state.metrics = metrics
    app.state.store = store
    app.state.config = config

    def _slots() -> asyncio.Semaphore:
        loop_id = str(id(asyncio.get_running_loop()))
        sem = solve_slots.get(loop_id)
        if sem is None:
            sem = solve_slots[loop_id] = asyncio.Semaphore(max(1, config.max_concurrent_solves))
        return sem

    async def in_pool(pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    def parsed(fn: Callable[[Any], T], doc: Any) -> T:
        try:
            return fn(doc)
        except BadRequest:
            raise
        except Exception as e:  # a shape the validators did not foresee: still the client's body
            raise BadRequest(f"malformed request body: {e}") from None

    async def body_of(request: Request) -> Any:
        raw = await request.body()
        if len(raw) > config.max_body_bytes:
            raise BadRequest(f"request body too large ({len(raw)} bytes > {config.max_body_bytes})")
        return load_json(raw)

    router = APIRouter()

    @router.post("/filter")
    async def filter_(request: Request) -> Response:
        t0 = time.perf_counter()
        try:
            args = parsed(parse_extender_args, await body_of(request))
        except BadRequest as e:
            metrics.requests.labels("filter", "bad_request").inc()
            return _bad(str(e))
        try:
            async with _slots():
                outcome = await in_pool(solve_pool, ext.filter, args)
        except Exception as e:  # never a 500: the scheduler reads Error
            log.exception("filter %s failed", args.pod_key)
            outcome = FilterOutcome(filter_result(args, None, error=f"dynamig: internal error: {e}"), "error")
        metrics.observe_filter(outcome, time.perf_counter() - t0)
        metrics.requests.labels("filter", outcome.status).inc()
        return _json(outcome.result)

    @router.post("/prioritize")
    async def prioritize(request: Request) -> Response:
        try:
            args = parsed(parse_extender_args, await body_of(request))
        except BadRequest as e:
            metrics.requests.labels("prioritize", "bad_request").inc()
            return _bad(str(e))
        try:
            async with _slots():
                scores = await in_pool(solve_pool, ext.prioritize, args)
        except Exception:
            log.exception("prioritize %s failed", args.pod_key)
            scores = dict.fromkeys(args.candidates, 0)
        metrics.requests.labels("prioritize", "ok").inc()
        return _json(host_priorities(scores))

    @router.post("/bind")
    async def bind(request: Request) -> Response:
        try:
            args = parsed(parse_binding_args, await body_of(request))
        except BadRequest as e:
            metrics.requests.labels("bind", "bad_request").inc()
            return _bad(str(e))
        try:
            err = await in_pool(io_pool, ext.bind, args)
        except Exception as e:
            log.exception("bind %s/%s failed", args.pod_namespace, args.pod_name)
            err = f"dynamig: internal error: {e}"
        metrics.requests.labels("bind", "error" if err else "ok").inc()
        if err:
            log.info("bind %s/%s -> %s: %s", args.pod_namespace, args.pod_name, args.node, err)
        return _json(binding_result(err))

    @router.post("/webhook")
    async def webhook_(request: Request) -> Response:
        try:
            doc = await body_of(request)
            parsed(webhook.parse_review, doc)
        except BadRequest as e:
            metrics.requests.labels("webhook", "bad_request").inc()
            return _bad(str(e))
        ns_labels = getattr(store, "namespace_labels", None)
        try:
            answer = await in_pool(io_pool, webhook.review, doc, config, ns_labels)
        except Exception as e:
            log.exception("webhook failed")
            answer = webhook._response(doc, str(doc["request"]["uid"]), False, f"dynamig webhook error: {e}", 500)
        allowed = bool(answer["response"].get("allowed"))
        metrics.requests.labels("webhook", "allowed" if allowed else "denied").inc()
        return _json(answer)

    @router.get("/healthz")
    async def healthz() -> Response:
        return Response("ok", media_type="text/plain")

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
            st = await in_pool(io_pool, monitor.monitor_state, ext)
        except Exception as e:
            log.exception("monitor state failed")
            return _json({"error": str(e)}, 503)
        return _json(st)

    app.include_router(router)
    app.include_router(router, prefix="/extender")
    return app
