"""dynamig.extender: the kube-scheduler extender service (FastAPI).

- :func:`create_app` ``(store, config) -> FastAPI``: filter, prioritize, bind, mutating webhook,
  healthz/readyz, monitor page; metrics in ``app.state.metrics`` (own registry).
- :func:`create_apps` ``(store, config) -> Apps``: the same split over two listeners: ``.scheduler``
  (the verbs; loopback only) and ``.public`` (webhook, probes, monitor; the pod address).
- :func:`serve_in_thread` ``(app, host, port, metrics_port=...) -> ServerHandle`` (``.url``,
  ``.metrics_url``, ``.stop()``): the app on a loopback port in a background thread (the demo).
- :func:`run`: the app in the foreground (the ``dynamig extender`` command).
"""

from .app import Apps, create_app, create_apps
from .config import ExtenderConfig
from .server import ServerHandle, run, serve_in_thread

__all__ = ["Apps", "ExtenderConfig", "ServerHandle", "create_app", "create_apps", "run", "serve_in_thread"]
