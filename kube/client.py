"""A thin JSON layer over the official ``kubernetes`` client's ApiClient.

The generated typed methods turn every object into model classes (slow for watch caches) and
choose content types themselves; dynamig needs plain dicts shaped exactly as the API server
sends them, explicit ``application/merge-patch+json`` and byte-exact MicroTime strings. So the
requests go through :meth:`ApiClient.param_serialize` / :meth:`ApiClient.call_api`, which keep
the client's configuration: kubeconfig or in-cluster auth, TLS, proxies, timeouts.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from models.errors import Conflict, NotFound, StoreError

log = logging.getLogger(__name__)

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"


class ApiError(StoreError):
    """A non-2xx answer from the API server other than 404/409 (which map to NotFound/Conflict)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


class GoneError(StoreError):
    """410 Gone: the resourceVersion a watch started from was compacted; relist."""


def _status_message(status: int, data: bytes | None, what: str) -> str:
    msg = ""
    if data:
        try:
            doc = json.loads(data)
            if isinstance(doc, dict):
                msg = str(doc.get("message") or doc.get("reason") or "")
        except ValueError:
            msg = data[:200].decode("utf-8", "replace")
    return f"{what}: HTTP {status}{': ' + msg if msg else ''}"


def raise_for_status(status: int, data: bytes | None, what: str) -> None:
    if 200 <= status <= 299:
        return
    msg = _status_message(status, data, what)
    if status == 404:
        raise NotFound(msg)
    if status == 409:
        raise Conflict(msg)
    if status == 410:
        raise GoneError(msg)
    raise ApiError(status, msg)


class KubeClient:
    """JSON requests to the API server through an official :class:`kubernetes.client.ApiClient`."""

    def __init__(self, api_client: k8s_client.ApiClient | None = None, request_timeout_s: float = 10.0) -> None:
        self.api = api_client or k8s_client.ApiClient()
        self.request_timeout_s = request_timeout_s

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None, context: str | None = None,
                         request_timeout_s: float = 10.0) -> KubeClient:
        """In-cluster service-account config when running in a pod, else the kubeconfig."""
        cfg = k8s_client.Configuration()
        if kubeconfig is None and context is None:
            try:
                k8s_config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
                return cls(k8s_client.ApiClient(cfg), request_timeout_s)
            except k8s_config.ConfigException:
                pass
        k8s_config.load_kube_config(config_file=kubeconfig, context=context,  # type: ignore[no-untyped-call]
                                    client_configuration=cfg)
        return cls(k8s_client.ApiClient(cfg), request_timeout_s)

    @classmethod
    def for_host(cls, host: str, request_timeout_s: float = 10.0) -> KubeClient:
        """A client for a plain-HTTP API endpoint (tests, ``kubectl proxy``)."""
        cfg = k8s_client.Configuration()
        cfg.host = host
        return cls(k8s_client.ApiClient(cfg), request_timeout_s)

    def _call(self, method: str, path: str, query: Sequence[tuple[str, Any]] | None, body: Any,
              content_type: str, timeout: Any) -> Any:
        headers = {"Accept": JSON}
        if body is not None:
            headers["Content-Type"] = content_type
        params = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=list(query or []),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        return self.api.call_api(*params, _request_timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, Any]] | None = None,
        body: Mapping[str, Any] | None = None,
        content_type: str = JSON,
        what: str = "",
    ) -> dict[str, Any]:
        """One request; the decoded JSON answer. 404 -> NotFound, 409 -> Conflict, 410 -> GoneError."""
        resp = self._call(method, path, query, body, content_type, self.request_timeout_s)
        data = resp.read()
        raise_for_status(resp.status, data, what or f"{method} {path}")
        if not data:
            return {}
        doc = json.loads(data)
        return doc if isinstance(doc, dict) else {"items": doc}

    def watch(self, path: str, query: Sequence[tuple[str, Any]], read_timeout_s: float,
              on_response: Any = None) -> Iterator[dict[str, Any]]:
        """Stream watch events (dicts with ``type`` and ``object``). The caller closes by exhausting
        or abandoning the iterator; ``on_response(raw)`` receives the urllib3 response so another
        thread can shut it down."""
        from kubernetes.watch.watch import iter_resp_lines

        resp = self._call("GET", path, [*query, ("watch", "true")], None, JSON,
                          (self.request_timeout_s, read_timeout_s))
        raw = resp.response
        try:
            if not 200 <= resp.status <= 299:
                raise_for_status(resp.status, raw.read(), f"watch {path}")
            if on_response is not None:
                on_response(raw)
            for line in iter_resp_lines(raw):  # type: ignore[no-untyped-call]
                if not line:
                    continue
                try:
                    ev = json.loads(line)
                except ValueError:
                    log.warning("watch %s: undecodable line %.120r", path, line)
                    continue
                if isinstance(ev, dict):
                    yield ev
        finally:
            try:
                raw.close()
                raw.release_conn()
            except Exception:  # pragma: no cover - best effort
                pass
            if on_response is not None:
                on_response(None)


class EventRecorder:
    """Posts core/v1 Events about pods (best effort: a failed post is logged, never raised), so that
    ``kubectl describe pod`` says why a pod got no device."""

    MAX_MESSAGE = 1024

    def __init__(self, client: KubeClient, component: str, host: str) -> None:
        self.client = client
        self.component = component
        self.host = host

    def body(self, pod: Mapping[str, Any], reason: str, message: str, now: float | None = None) -> dict[str, Any]:
        import datetime

        meta = pod.get("metadata") or {}
        ns = str(meta.get("namespace") or "default")
        ts = datetime.datetime.fromtimestamp(time.time() if now is None else now, datetime.UTC)
        stamp = ts.strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name')}.", "namespace": ns},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": ns, "name": meta.get("name"),
                               "uid": meta.get("uid") or ""},
            "reason": reason, "message": message[: self.MAX_MESSAGE], "type": "Warning",
            "source": {"component": self.component, "host": self.host},
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
            "reportingComponent": self.component, "reportingInstance": self.host,
        }

    def pod_event(self, pod: Mapping[str, Any], reason: str, message: str) -> None:
        body = self.body(pod, reason, message)
        ns = body["metadata"]["namespace"]
        try:
            self.client.request("POST", f"/api/v1/namespaces/{ns}/events", body=body,
                                what=f"event for pod {ns}/{body['involvedObject']['name']}")
        except Exception as e:  # an event is a courtesy; the pod's annotation carries the reason too
            log.warning("cannot post event %s for pod %s/%s: %s", reason, ns, body["involvedObject"]["name"], e)
