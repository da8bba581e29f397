"""kube-scheduler's side of the extender protocol: JSON over HTTP exactly as v1 sends it."""

from __future__ import annotations

import http.client
import json
import threading
import time
from typing import Any
from urllib.parse import urlparse


class ExtenderError(Exception):
    pass


class ExtenderClient:
    """Keep-alive HTTP client (one connection per thread), PascalCase bodies, ``null`` where Go sends nil."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        u = urlparse(base_url)
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or 80
        self.prefix = u.path.rstrip("/")
        self.timeout = timeout
        self._local = threading.local()
        self.filter_ms: list[float] = []

    def _conn(self) -> http.client.HTTPConnection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._local.conn = c
        return c

    def _post(self, verb: str, body: Any) -> Any:
        data = json.dumps(body).encode()
        for attempt in range(2):
            conn = self._conn()
            try:
                conn.request("POST", f"{self.prefix}/{verb}", data, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                raw = resp.read()
            except (ConnectionError, http.client.HTTPException):
                conn.close()
                self._local.conn = None
                if attempt:
                    raise
                continue
            if resp.status != 200:
                raise ExtenderError(f"failed {verb} with extender, code {resp.status}: {raw[:200]!r}")
            return json.loads(raw)
        raise ExtenderError(f"failed {verb}")

    @staticmethod
    def _pod(pod: dict[str, Any]) -> dict[str, Any]:
        # From the informer cache: no apiVersion/kind.
        return {k: v for k, v in pod.items() if k not in ("apiVersion", "kind")}

    def filter(self, pod: dict[str, Any], nodes: list[str]) -> dict[str, Any]:
        t = time.perf_counter()
        out = self._post("filter", {"Pod": self._pod(pod), "Nodes": None, "NodeNames": nodes})
        self.filter_ms.append((time.perf_counter() - t) * 1000)
        return out  # type: ignore[no-any-return]

    def prioritize(self, pod: dict[str, Any], nodes: list[str]) -> list[dict[str, Any]]:
        return self._post("prioritize", {"Pod": self._pod(pod), "Nodes": None, "NodeNames": nodes})  # type: ignore[no-any-return]

    def bind(self, pod: dict[str, Any], node: str) -> dict[str, Any]:
        meta = pod["metadata"]
        return self._post("bind", {"PodName": meta["name"], "PodNamespace": meta.get("namespace", "default"),  # type: ignore[no-any-return]
                                   "PodUID": meta.get("uid", ""), "Node": node})
