"""dynamig.extender: the kube-scheduler extender service (FastAPI).

- :func:`create_app` ``(store, config) -> FastAPI``: filter, prioritize, bind, mutating webhook,
  healthz/readyz, monitor page; metrics in ``app.state.metrics`` (own registry).
- :func:`serve_in_thread` ``(app, host, port, metrics_port=...) -> ServerHandle`` (``.url``,
  ``.metrics_url``, ``.stop()``): the app on a loopback port in a background thread (the demo).
- :func:`run`: the app in the foreground (the ``dynamig extender`` command).
"""

from .app import create_app
from .config import ExtenderConfig
from .server import ServerHandle, run, serve_in_thread

__all__ = ["ExtenderConfig", "ServerHandle", "create_app", "run", "serve_in_thread"]
