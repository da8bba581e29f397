"""A small, faithful fake of the Kubernetes API server on 127.0.0.1 (tests only).

Speaks the real REST paths and content types that dynamig uses:

- ``GET /api/v1/nodes`` and ``GET /api/v1/pods`` (list with ``limit``/``continue``; ``watch=true``
  streams chunked JSON lines from ``resourceVersion``, with BOOKMARKs on request, ``ERROR`` 410
  when that version was compacted, and the stream closed after ``timeoutSeconds``);
- ``GET``/``PATCH`` nodes and pods (``PATCH`` only as ``application/merge-patch+json``, RFC 7386;
  ``metadata.resourceVersion`` in the patch is a precondition: stale -> 409);
- ``POST /api/v1/namespaces/{ns}/pods`` (create), ``DELETE`` pod;
- ``POST .../pods/{name}/binding`` (name must match; ``metadata.uid`` precondition; already bound
  or deleting -> 409; answer 201 ``Status``);
- ``GET /api/v1/namespaces/{ns}``;
- Leases under ``/apis/coordination.k8s.io/v1/namespaces/{ns}/leases`` (GET, POST, PUT with
  resourceVersion precondition); MicroTime fields must have exactly six fractional digits.

Errors are ``Status`` objects. Test hooks: :meth:`compact`, :meth:`drop_watches`, :meth:`fail_next`,
``requests`` (a log of (method, path, content type, body)).
"""

from __future__ import annotations

import copy
import json
import re
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

Obj = dict[str, Any]
MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def status(code: int, reason: str, message: str) -> Obj:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


class HttpError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message


class FakeApiServer:
    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.rv = 100
        self.nodes: dict[str, Obj] = {}
        self.pods: dict[tuple[str, str], Obj] = {}
        self.leases: dict[tuple[str, str], Obj] = {}
        self.namespaces: dict[str, Obj] = {}
        self.events: list[Obj] = []  # core/v1 Events posted (kept as sent, plus a generated name)
        self.history: list[tuple[int, str, str, Obj]] = []  # (rv, kind, type, obj)
        self.compacted = 0  # events with rv <= compacted are gone
        self.watch_generation = 0
        self.requests: list[tuple[str, str, str, Any]] = []
        self.failures: list[tuple[str, str, int]] = []  # (method, path regex, code)
        self.active_watches = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.stopping = False

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> str:
        server = self

        class Handler(_Handler):
            fake = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self.url

    @property
    def url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def stop(self) -> None:
        self.stopping = True
        with self.lock:
            self.lock.notify_all()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self) -> FakeApiServer:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------ state changes (all under lock)
    def _bump(self, obj: Obj) -> int:
        self.rv += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.rv)
        return self.rv

    def _event(self, kind: str, typ: str, obj: Obj) -> None:
        self.history.append((self.rv, kind, typ, copy.deepcopy(obj)))
        self.lock.notify_all()

    def add_node(self, obj: Obj) -> Obj:
        with self.lock:
            obj = copy.deepcopy(obj)
            meta = obj.setdefault("metadata", {})
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("managedFields", [{"manager": "kubelet", "operation": "Update"}])
            self._bump(obj)
            typ = "MODIFIED" if meta["name"] in self.nodes else "ADDED"
            self.nodes[meta["name"]] = obj
            self._event("node", typ, obj)
            return copy.deepcopy(obj)

    def create_pod(self, obj: Obj) -> Obj:
        with self.lock:
            return self._create_pod(obj)

    def _create_pod(self, obj: Obj) -> Obj:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", "default")
        key = (meta["namespace"], meta["name"])
        if key in self.pods:
            raise HttpError(409, "AlreadyExists", f'pods "{key[1]}" already exists')
        meta["uid"] = meta.get("uid") or str(uuid.uuid4())
        meta.setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        obj.setdefault("spec", {})
        obj.setdefault("status", {}).setdefault("phase", "Pending")
        self._bump(obj)
        self.pods[key] = obj
        self._event("pod", "ADDED", obj)
        return copy.deepcopy(obj)

    def update_pod(self, namespace: str, name: str, fn: Any) -> Obj:
        """Change a pod as another actor would (kubelet status, a user's label) -> MODIFIED."""
        with self.lock:
            obj = self.pods[(namespace, name)]
            fn(obj)
            self._bump(obj)
            self._event("pod", "MODIFIED", obj)
            return copy.deepcopy(obj)

    def delete_pod(self, namespace: str, name: str) -> None:
        with self.lock:
            obj = self.pods.pop((namespace, name))
            self._bump(obj)
            self._event("pod", "DELETED", obj)

    def add_namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        with self.lock:
            obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}
            self._bump(obj)
            self.namespaces[name] = obj

    def compact(self) -> None:
        """Forget all history (after a write to some other resource, as etcd's revision is global):
        any watch resuming from a resourceVersion seen so far gets 410 Gone."""
        with self.lock:
            self.rv += 1
            self.compacted = self.rv
            self.history = []
            self.lock.notify_all()

    def drop_watches(self) -> None:
        """Close every open watch stream (as an API server restart or a proxy timeout would)."""
        with self.lock:
            self.watch_generation += 1
            self.lock.notify_all()

    def fail_next(self, method: str, path_regex: str, code: int) -> None:
        with self.lock:
            self.failures.append((method, path_regex, code))

    def pod(self, namespace: str, name: str) -> Obj:
        with self.lock:
            return copy.deepcopy(self.pods[(namespace, name)])

    def node(self, name: str) -> Obj:
        with self.lock:
            return copy.deepcopy(self.nodes[name])

    def lease(self, namespace: str, name: str) -> Obj:
        with self.lock:
            return copy.deepcopy(self.leases[(namespace, name)])

    def count(self, method: str, pattern: str) -> int:
        return sum(1 for m, p, _, _ in list(self.requests) if m == method and re.search(pattern, p))

    # ------------------------------------------------------------------ request handling
    def handle(self, method: str, path: str, query: dict[str, str], ctype: str, body: Any) -> tuple[int, Obj]:
        with self.lock:
            self.requests.append((method, path, ctype, body))
            for i, (m, rx, code) in enumerate(self.failures):
                if m == method and re.search(rx, path):
                    del self.failures[i]
                    raise HttpError(code, "InternalError" if code >= 500 else "Injected", f"injected {code}")
            parts = [p for p in path.split("/") if p]
            if parts[:2] == ["api", "v1"]:
                return self._core(method, parts[2:], query, ctype, body)
            if parts[:3] == ["apis", "coordination.k8s.io", "v1"]:
                return self._leases(method, parts[3:], body)
            raise HttpError(404, "NotFound", f"the server could not find the requested resource ({path})")

    def _list(self, kind: str, items: list[Obj], query: dict[str, str]) -> tuple[int, Obj]:
        items = sorted(items, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        start = int(query.get("continue") or 0)
        limit = int(query.get("limit") or 0)
        page = items[start:start + limit] if limit else items[start:]
        nxt = start + len(page)
        meta: Obj = {"resourceVersion": str(self.rv)}
        if limit and nxt < len(items):
            meta["continue"] = str(nxt)
        return 200, {"kind": f"{kind}List", "apiVersion": "v1", "metadata": meta, "items": copy.deepcopy(page)}

    def _core(self, method: str, p: list[str], query: dict[str, str], ctype: str, body: Any) -> tuple[int, Obj]:
        if p == ["nodes"] and method == "GET":
            return self._list("Node", list(self.nodes.values()), query)
        if p == ["pods"] and method == "GET":
            return self._list("Pod", list(self.pods.values()), query)
        if len(p) == 2 and p[0] == "nodes":
            obj = self.nodes.get(p[1])
            if obj is None:
                raise HttpError(404, "NotFound", f'nodes "{p[1]}" not found')
            if method == "GET":
                return 200, copy.deepcopy(obj)
            if method == "PATCH":
                return 200, self._patch("node", obj, ctype, body)
        if len(p) == 2 and p[0] == "namespaces" and method == "GET":
            ns = self.namespaces.get(p[1])
            if ns is None:
                raise HttpError(404, "NotFound", f'namespaces "{p[1]}" not found')
            return 200, copy.deepcopy(ns)
        if len(p) == 3 and p[0] == "namespaces" and p[2] == "events" and method == "POST":
            ev = copy.deepcopy(body or {})
            meta = ev.setdefault("metadata", {})
            if meta.get("namespace", p[1]) != p[1]:
                raise HttpError(400, "BadRequest", "the namespace of the object does not match the request")
            meta["name"] = meta.get("name") or f"{meta.get('generateName', 'event.')}{len(self.events)}"
            meta["namespace"] = p[1]
            self.events.append(ev)
            return 201, copy.deepcopy(ev)
        if len(p) == 3 and p[0] == "namespaces" and p[2] == "pods" and method == "POST":
            body = dict(body or {})
            body.setdefault("metadata", {})["namespace"] = p[1]
            return 201, self._create_pod(body)
        if len(p) >= 4 and p[0] == "namespaces" and p[2] == "pods":
            key = (p[1], p[3])
            obj = self.pods.get(key)
            if obj is None:
                raise HttpError(404, "NotFound", f'pods "{p[3]}" not found')
            if len(p) == 4:
                if method == "GET":
                    return 200, copy.deepcopy(obj)
                if method == "PATCH":
                    return 200, self._patch("pod", obj, ctype, body)
                if method == "DELETE":
                    self.pods.pop(key)
                    self._bump(obj)
                    self._event("pod", "DELETED", obj)
                    return 200, copy.deepcopy(obj)
            if len(p) == 5 and p[4] == "binding" and method == "POST":
                return self._bind(obj, p[3], body)
        raise HttpError(405 if p else 404, "MethodNotAllowed", f"{method} /api/v1/{'/'.join(p)} not supported")

    def _patch(self, kind: str, obj: Obj, ctype: str, body: Any) -> Obj:
        if ctype.split(";")[0].strip() != "application/merge-patch+json":
            raise HttpError(415, "UnsupportedMediaType",
                            "the body of the request was in an unknown format - accepted media types include: "
                            f"application/merge-patch+json ({ctype})")
        if not isinstance(body, dict):
            raise HttpError(400, "BadRequest", "merge patch body must be a JSON object")
        want = (body.get("metadata") or {}).get("resourceVersion")
        if want is not None and want != obj["metadata"]["resourceVersion"]:
            name = obj["metadata"]["name"]
            raise HttpError(409, "Conflict", f'Operation cannot be fulfilled on {kind}s "{name}": the object has been '
                                             "modified; please apply your changes to the latest version and try again")
        patched = merge_patch(obj, body)
        obj.clear()
        obj.update(patched)
        self._bump(obj)
        self._event(kind, "MODIFIED", obj)
        return copy.deepcopy(obj)

    def _bind(self, pod: Obj, name: str, body: Any) -> tuple[int, Obj]:
        if not isinstance(body, dict) or body.get("kind") not in (None, "Binding"):
            raise HttpError(400, "BadRequest", "expected a Binding")
        meta = body.get("metadata") or {}
        if meta.get("name") != name:
            raise HttpError(400, "BadRequest", f"Binding name {meta.get('name')!r} does not match pod {name!r}")
        target = body.get("target") or {}
        if target.get("kind") not in ("", None, "Node") or not target.get("name"):
            raise HttpError(422, "Invalid", "target must name a Node")
        uid = meta.get("uid")
        if uid and uid != pod["metadata"]["uid"]:
            raise HttpError(409, "Conflict", f"Precondition failed: UID in precondition: {uid}, "
                                             f"UID in object meta: {pod['metadata']['uid']}")
        if pod["spec"].get("nodeName"):
            raise HttpError(409, "Conflict", f"pod {name} is already assigned to node \"{pod['spec']['nodeName']}\"")
        if pod["metadata"].get("deletionTimestamp"):
            raise HttpError(409, "Conflict", f"pod {name} is being deleted, cannot be assigned to a host")
        pod["spec"]["nodeName"] = target["name"]
        if meta.get("annotations"):
            pod["metadata"].setdefault("annotations", {}).update(meta["annotations"])
        pod.setdefault("status", {}).setdefault("conditions", []).append({"type": "PodScheduled", "status": "True"})
        self._bump(pod)
        self._event("pod", "MODIFIED", pod)
        return 201, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    def _leases(self, method: str, p: list[str], body: Any) -> tuple[int, Obj]:
        if len(p) < 3 or p[0] != "namespaces" or p[2] != "leases":
            raise HttpError(404, "NotFound", "not found")
        ns = p[1]
        if len(p) == 3 and method == "POST":
            self._check_lease(body)
            name = body["metadata"]["name"]
            if (ns, name) in self.leases:
                raise HttpError(409, "AlreadyExists", f'leases.coordination.k8s.io "{name}" already exists')
            obj = copy.deepcopy(body)
            obj["metadata"]["namespace"] = ns
            obj["metadata"]["uid"] = str(uuid.uuid4())
            self._bump(obj)
            self.leases[(ns, name)] = obj
            return 201, copy.deepcopy(obj)
        if len(p) == 4:
            obj = self.leases.get((ns, p[3]))
            if obj is None:
                raise HttpError(404, "NotFound", f'leases.coordination.k8s.io "{p[3]}" not found')
            if method == "GET":
                return 200, copy.deepcopy(obj)
            if method == "PUT":
                self._check_lease(body)
                want = (body.get("metadata") or {}).get("resourceVersion")
                if want is not None and want != obj["metadata"]["resourceVersion"]:
                    raise HttpError(409, "Conflict", f'Operation cannot be fulfilled on leases.coordination.k8s.io '
                                                     f'"{p[3]}": the object has been modified')
                new = copy.deepcopy(body)
                new["metadata"] = {**obj["metadata"], **{k: v for k, v in new["metadata"].items()
                                                         if k in ("labels", "annotations")}}
                self._bump(new)
                self.leases[(ns, p[3])] = new
                return 200, copy.deepcopy(new)
        raise HttpError(405, "MethodNotAllowed", f"{method} not supported on leases")

    @staticmethod
    def _check_lease(body: Any) -> None:
        if not isinstance(body, dict) or body.get("kind") != "Lease":
            raise HttpError(400, "BadRequest", "expected a Lease")
        spec = body.get("spec") or {}
        for f in ("acquireTime", "renewTime"):
            v = spec.get(f)
            if v is not None and not MICRO_TIME.match(str(v)):
                raise HttpError(400, "BadRequest", f"spec.{f}: {v!r} is not a MicroTime (RFC 3339, 6 digits, Z)")

    # ------------------------------------------------------------------ watch
    def watch_events(self, kind: str, query: dict[str, str]) -> Any:
        """Yield JSON lines for a watch; returns when timeoutSeconds elapse or watches are dropped."""
        timeout = float(query.get("timeoutSeconds") or 60)
        bookmarks = query.get("allowWatchBookmarks") == "true"
        deadline = time.monotonic() + timeout
        with self.lock:
            gen = self.watch_generation
            rv = int(query.get("resourceVersion") or 0)
            if rv and rv < self.compacted:
                yield {"type": "ERROR", "object": status(410, "Expired",
                                                         f"too old resource version: {rv} ({self.compacted})")}
                return
            if not rv:
                table = self.nodes if kind == "node" else self.pods
                for obj in table.values():
                    yield {"type": "ADDED", "object": copy.deepcopy(obj)}
                rv = self.rv
            self.active_watches += 1
        try:
            sent_bookmark = time.monotonic()
            while True:
                bookmark = None
                with self.lock:
                    if self.stopping or gen != self.watch_generation:
                        return  # the connection drops: nothing more is delivered on it
                    pending = [(r, t, o) for r, k, t, o in self.history if k == kind and r > rv]
                    if not pending:
                        if time.monotonic() >= deadline:
                            return
                        if bookmarks and time.monotonic() - sent_bookmark > 1.0:
                            sent_bookmark = time.monotonic()
                            rv = self.rv
                            bookmark = {"type": "BOOKMARK", "object": {
                                "kind": "Pod" if kind == "pod" else "Node", "apiVersion": "v1",
                                "metadata": {"resourceVersion": str(rv)}}}
                        else:
                            self.lock.wait(0.05)
                if bookmark is not None:
                    yield bookmark
                for r, t, o in pending:
                    rv = r
                    yield {"type": t, "object": o}
        finally:
            with self.lock:
                self.active_watches -= 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakeApiServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _send(self, code: int, obj: Obj) -> None:
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _dispatch(self, method: str) -> None:
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        ctype = self.headers.get("Content-Type", "")
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            self._send(400, status(400, "BadRequest", "invalid JSON body"))
            return
        if method == "GET" and query.get("watch") in ("true", "1") and url.path in ("/api/v1/nodes", "/api/v1/pods"):
            with self.fake.lock:
                self.fake.requests.append((method, url.path + "?watch", ctype, dict(query)))
            self._stream(url.path.rsplit("/", 1)[1][:-1], query)
            return
        try:
            code, obj = self.fake.handle(method, url.path, query, ctype, body)
        except HttpError as e:
            self._send(e.code, status(e.code, e.reason, e.message))
            return
        self._send(code, obj)

    def _stream(self, kind: str, query: dict[str, str]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            for ev in self.fake.watch_events(kind, query):
                line = (json.dumps(ev) + "\n").encode()
                self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass
        self.close_connection = True

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")
