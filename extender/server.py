"""Running the app: in the foreground (``run``) or in a background thread (``serve_in_thread``,
used by the demo), optionally with TLS and with the metrics server on its own port."""

from __future__ import annotations

import gc
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI

from .metrics import ExtenderMetrics, start_metrics_server

log = logging.getLogger(__name__)


def _config(app: FastAPI, host: str, port: int, ssl_certfile: str | None, ssl_keyfile: str | None,
            log_level: str) -> uvicorn.Config:
    if bool(ssl_certfile) != bool(ssl_keyfile):
        raise ValueError("TLS needs both a certificate file and a key file")
    return uvicorn.Config(app, host=host, port=port, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile,
                          log_level=log_level, access_log=False, lifespan="on", timeout_keep_alive=30,
                          limit_concurrency=None)


@dataclass
class ServerHandle:
    """A running extender: ``url`` (``http[s]://host:port``), ``metrics_url`` (or None), ``stop()``."""

    server: uvicorn.Server
    thread: threading.Thread
    host: str
    port: int
    scheme: str = "http"
    metrics_server: Any = None
    metrics_port: int | None = None
    _stopped: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def metrics_url(self) -> str | None:
        return None if self.metrics_port is None else f"http://{self.host}:{self.metrics_port}/metrics"

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.server.should_exit = True
        self.thread.join(timeout_s)
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
            self.metrics_server.server_close()

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def serve_in_thread(
    app: FastAPI,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    metrics_port: int | None = None,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
    log_level: str = "warning",
    startup_timeout_s: float = 10.0,
) -> ServerHandle:
    """Serve ``app`` on ``host:port`` (0 = a free port) in a daemon thread; returns once it accepts
    connections. ``metrics_port`` (0 = free port) also serves ``/metrics`` on its own port."""
    cfg = _config(app, host, port, ssl_certfile, ssl_keyfile, log_level)
    server = uvicorn.Server(cfg)
    # proto must be IPPROTO_TCP: asyncio sets TCP_NODELAY only on such sockets (else Nagle plus
    # delayed ACKs add ~40 ms to every keep-alive response written in two parts)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"dynamig-extender-{bound}",
                              daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"extender on {host}:{bound} failed to start")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"extender on {host}:{bound} did not start within {startup_timeout_s}s")
        time.sleep(0.01)
    handle = ServerHandle(server, thread, host, bound, "https" if ssl_certfile else "http")
    if metrics_port is not None:
        metrics: ExtenderMetrics = app.state.metrics
        ms = start_metrics_server(metrics, host, metrics_port)
        handle.metrics_server = ms
        handle.metrics_port = ms.server_address[1]
    return handle


def run(
    app: FastAPI,
    host: str = "127.0.0.1",
    port: int = 8888,
    *,
    public: FastAPI | None = None,
    public_host: str = "0.0.0.0",
    public_port: int = 8443,
    metrics_host: str | None = None,
    metrics_port: int | None = 9395,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
    log_level: str = "info",
) -> None:
    """Serve in the foreground until SIGINT/SIGTERM (uvicorn's handlers).

    With ``public`` (see :func:`extender.app.create_apps`): ``app`` (the scheduler verbs, plain
    HTTP) on ``host:port``, ``public`` (webhook, probes, monitor; TLS when a certificate is given)
    on ``public_host:public_port`` and ``/metrics`` on ``metrics_host`` (default ``public_host``).
    Without it, ``app`` alone on ``host:port`` with the TLS settings."""
    gc.collect()
    gc.freeze()  # the cluster caches are long-lived: keep them out of full collections (p99 latency)
    ms = None
    side: ServerHandle | None = None
    mhost = metrics_host or (public_host if public is not None else host)
    try:
        if metrics_port is not None:
            ms = start_metrics_server(app.state.metrics, mhost, metrics_port)
            log.info("metrics on %s:%d/metrics", mhost, ms.server_address[1])
        if public is not None:
            side = serve_in_thread(public, public_host, public_port, ssl_certfile=ssl_certfile,
                                   ssl_keyfile=ssl_keyfile, log_level=log_level)
            log.info("webhook, probes and monitor on %s", side.url)
            log.info("scheduler verbs on http://%s:%d", host, port)
            uvicorn.Server(_config(app, host, port, None, None, log_level)).run()
        else:
            uvicorn.Server(_config(app, host, port, ssl_certfile, ssl_keyfile, log_level)).run()
    finally:
        if side is not None:
            side.stop()
        if ms is not None:
            ms.shutdown()
