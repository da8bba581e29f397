"""KubeStore: :class:`models.store.ClusterStore` over a real API server.

- Nodes and GPU pods are cached by list+watch informers (one thread each). A watch that ends is
  resumed from the last resourceVersion seen (bookmarks included); ``410 Gone`` (or an ERROR event
  with code 410) relists at once; any other failure relists after a capped, jittered backoff.
- Only GPU pods are cached: pods with an ``nvidia.com/*`` resource in any container or any
  ``dynamig.io/`` annotation. Objects lose ``metadata.managedFields``.
- Writes: annotation patches are JSON merge patches (``application/merge-patch+json``) carrying
  ``metadata.resourceVersion`` when a guard is given (stale -> 409 -> :class:`models.errors.Conflict`);
  binding POSTs ``pods/{name}/binding`` with the pod UID as precondition (409 -> Conflict). The answer
  of every write is folded into the cache at once (read-your-writes), so the next filter sees it.
- ``revision()`` increases by one for each change of the cache.

Cached objects are shared, never mutated in place: callers must not modify what ``list_*`` returns.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from models.errors import NotFound, StoreError

from .client import MERGE_PATCH, GoneError, KubeClient

log = logging.getLogger(__name__)

Obj = dict[str, Any]

GPU_RESOURCE_PREFIX = "nvidia.com/"
ANNOTATION_PREFIX = "dynamig.io/"


def is_gpu_pod(pod: Mapping[str, Any]) -> bool:
    """A pod dynamig cares about: any ``nvidia.com/*`` resource, or any ``dynamig.io/`` annotation."""
    meta = pod.get("metadata") or {}
    if any(str(k).startswith(ANNOTATION_PREFIX) for k in (meta.get("annotations") or {})):
        return True
    spec = pod.get("spec") or {}
    for c in list(spec.get("initContainers") or []) + list(spec.get("containers") or []):
        res = (c or {}).get("resources") or {}
        for part in ("limits", "requests"):
            if any(str(k).startswith(GPU_RESOURCE_PREFIX) for k in (res.get(part) or {})):
                return True
    return False


def _rv(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def _newer_or_same(new: str, old: str) -> tuple[bool, bool]:
    """(newer, same) for two resourceVersions. They are opaque by contract but etcd revisions in
    practice; when either is not an integer, the newer one is the one that arrived last."""
    if new == old:
        return False, True
    try:
        return int(new) > int(old), False
    except ValueError:
        return True, False


def _slim(obj: Obj) -> Obj:
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        meta = dict(meta)
        meta.pop("managedFields", None)
        obj = {**obj, "metadata": meta}
    return obj


def pod_key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or "default"), str(meta.get("name"))


def node_key(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name"))


class _Informer:
    """list+watch of one resource into the store's cache."""

    def __init__(self, store: KubeStore, kind: str, path: str, key: Callable[[Mapping[str, Any]], Any]) -> None:
        self.store = store
        self.kind = kind
        self.path = path
        self.key = key
        self.synced = threading.Event()
        self.thread: threading.Thread | None = None
        self._resp: Any = None
        self._resp_lock = threading.Lock()
        self.relists = 0
        self.watches = 0

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name=f"kube-informer-{self.kind}", daemon=True)
        self.thread.start()

    def interrupt(self) -> None:
        """Close the current watch connection (used on stop)."""
        with self._resp_lock:
            resp = self._resp
        if resp is not None:
            try:
                resp.shutdown()
            except Exception:  # pragma: no cover - older urllib3
                with contextlib.suppress(Exception):
                    resp.close()

    def _set_resp(self, resp: Any) -> None:
        with self._resp_lock:
            self._resp = resp
        if resp is not None and self.store._stopping.is_set():
            self.interrupt()

    def _list(self) -> str:
        items: list[Obj] = []
        cont = ""
        while True:
            q: list[tuple[str, Any]] = [("limit", self.store.page_size)]
            if cont:
                q.append(("continue", cont))
            doc = self.store.client.request("GET", self.path, query=q, what=f"list {self.kind}s")
            items.extend(i for i in doc.get("items") or [] if isinstance(i, dict))
            meta = doc.get("metadata") or {}
            cont = str(meta.get("continue") or "")
            rv = str(meta.get("resourceVersion") or "")
            if not cont:
                break
        self.relists += 1
        self.store._replace_all(self.kind, items)
        return rv

    def _watch(self, rv: str) -> str:
        timeout = max(1, int(self.store.watch_timeout_s * (1 + random.random())))
        q: list[tuple[str, Any]] = [
            ("resourceVersion", rv), ("allowWatchBookmarks", "true"), ("timeoutSeconds", timeout)]
        self.watches += 1
        for ev in self.store.client.watch(self.path, q, read_timeout_s=timeout + 30, on_response=self._set_resp):
            if self.store._stopping.is_set():
                break
            typ = ev.get("type")
            obj = ev.get("object") or {}
            if typ == "ERROR":
                code = obj.get("code")
                if code == 410:
                    raise GoneError(f"watch {self.kind}s: {obj.get('message', 'resourceVersion too old')}")
                raise StoreError(f"watch {self.kind}s: error event {obj.get('code')}: {obj.get('message')}")
            new_rv = _rv(obj)
            if typ == "BOOKMARK":
                rv = new_rv or rv
                continue
            if typ in ("ADDED", "MODIFIED"):
                self.store._upsert(self.kind, obj)
            elif typ == "DELETED":
                self.store._delete(self.kind, obj)
            rv = new_rv or rv
        return rv

    def _run(self) -> None:
        backoff = self.store.backoff_min_s
        while not self.store._stopping.is_set():
            try:
                rv = self._list()
                self.synced.set()
                backoff = self.store.backoff_min_s
                while not self.store._stopping.is_set():
                    rv = self._watch(rv)
            except GoneError as e:
                log.info("%s; relisting", e)
                continue
            except Exception as e:
                if self.store._stopping.is_set():
                    break
                log.warning("%s informer: %s; relisting in %.1fs", self.kind, e, backoff)
                self.store._stopping.wait(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, self.store.backoff_max_s)


class KubeStore:
    """A ClusterStore over the Kubernetes API (see the module docstring)."""

    def __init__(
        self,
        client: KubeClient,
        *,
        watch_timeout_s: float = 300.0,
        page_size: int = 500,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 30.0,
        namespace_ttl_s: float = 30.0,
        gpu_pods_only: bool = True,
    ) -> None:
        self.client = client
        self.watch_timeout_s = watch_timeout_s
        self.page_size = page_size
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.namespace_ttl_s = namespace_ttl_s
        self.gpu_pods_only = gpu_pods_only
        self._lock = threading.RLock()
        self._nodes: dict[str, Obj] = {}
        self._pods: dict[tuple[str, str], Obj] = {}
        self._rev = 0
        self._stopping = threading.Event()
        self._ns_cache: dict[str, tuple[float, dict[str, str]]] = {}
        self._listeners: list[Callable[[str, Obj], None]] = []
        self.node_informer = _Informer(self, "node", "/api/v1/nodes", node_key)
        self.pod_informer = _Informer(self, "pod", "/api/v1/pods", pod_key)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> KubeStore:
        self._stopping.clear()
        self.node_informer.start()
        self.pod_informer.start()
        return self

    def wait_synced(self, timeout_s: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout_s
        for inf in (self.node_informer, self.pod_informer):
            if not inf.synced.wait(max(0.0, deadline - time.monotonic())):
                return False
        return True

    def has_synced(self) -> bool:
        return self.node_informer.synced.is_set() and self.pod_informer.synced.is_set()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping.set()
        for inf in (self.node_informer, self.pod_informer):
            inf.interrupt()
        for inf in (self.node_informer, self.pod_informer):
            if inf.thread is not None:
                inf.thread.join(timeout_s)

    def subscribe(self, fn: Callable[[str, Obj], None]) -> None:
        """Call ``fn(kind, obj)`` after each cache change (kind: 'node', 'pod', 'pod-deleted', ...)."""
        with self._lock:
            self._listeners.append(fn)

    # ------------------------------------------------------------------ cache maintenance
    def _table(self, kind: str) -> dict[Any, Obj]:
        return self._nodes if kind == "node" else self._pods

    def _key(self, kind: str, obj: Mapping[str, Any]) -> Any:
        return node_key(obj) if kind == "node" else pod_key(obj)

    def _keep(self, kind: str, obj: Mapping[str, Any]) -> bool:
        return kind == "node" or not self.gpu_pods_only or is_gpu_pod(obj)

    def _notify(self, kind: str, obj: Obj) -> None:
        for fn in list(self._listeners):
            try:
                fn(kind, obj)
            except Exception:  # pragma: no cover - listener bugs must not kill the informer
                log.exception("store listener failed")

    def _upsert(self, kind: str, obj: Obj) -> None:
        obj = _slim(obj)
        with self._lock:
            table = self._table(kind)
            key = self._key(kind, obj)
            old = table.get(key)
            if old is not None:
                newer, _same = _newer_or_same(_rv(obj), _rv(old))
                if not newer:
                    return  # an older or identical copy (e.g. the watch echo of our own write)
            if not self._keep(kind, obj):
                if old is not None:
                    del table[key]
                    self._rev += 1
                    self._notify(f"{kind}-deleted", old)
                return
            table[key] = obj
            self._rev += 1
            self._notify(kind, obj)

    def _delete(self, kind: str, obj: Mapping[str, Any]) -> None:
        with self._lock:
            table = self._table(kind)
            old = table.pop(self._key(kind, obj), None)
            if old is not None:
                self._rev += 1
                self._notify(f"{kind}-deleted", old)

    def _replace_all(self, kind: str, items: list[Obj]) -> None:
        with self._lock:
            table = self._table(kind)
            fresh = {}
            for obj in items:
                obj = _slim(obj)
                if self._keep(kind, obj):
                    fresh[self._key(kind, obj)] = obj
            changed = set(fresh) != set(table) or any(_rv(fresh[k]) != _rv(table[k]) for k in fresh)
            if changed:
                table.clear()
                table.update(fresh)
                self._rev += 1
                self._notify(f"{kind}-relist", {})

    # ------------------------------------------------------------------ ClusterStore: reads
    def revision(self) -> int:
        return self._rev

    def list_nodes(self) -> list[Obj]:
        with self._lock:
            return list(self._nodes.values())

    def list_pods(self) -> list[Obj]:
        with self._lock:
            return list(self._pods.values())

    def get_node(self, name: str) -> Obj:
        """A fresh read from the API server (the node lock needs the current resourceVersion)."""
        try:
            obj = self.client.request("GET", f"/api/v1/nodes/{name}", what=f"node {name}")
        except NotFound:
            self._delete("node", {"metadata": {"name": name}})
            raise
        self._upsert("node", obj)
        return obj

    def get_pod(self, namespace: str, name: str) -> Obj:
        try:
            obj = self.client.request("GET", f"/api/v1/namespaces/{namespace}/pods/{name}",
                                      what=f"pod {namespace}/{name}")
        except NotFound:
            self._delete("pod", {"metadata": {"namespace": namespace, "name": name}})
            raise
        self._upsert("pod", obj)
        return obj

    def cached_pod(self, namespace: str, name: str) -> Obj | None:
        with self._lock:
            return self._pods.get((namespace, name))

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        """A namespace's labels (cached for ``namespace_ttl_s``); {} when it cannot be read."""
        now = time.monotonic()
        hit = self._ns_cache.get(namespace)
        if hit and now - hit[0] < self.namespace_ttl_s:
            return hit[1]
        try:
            doc = self.client.request("GET", f"/api/v1/namespaces/{namespace}", what=f"namespace {namespace}")
            labels = {str(k): str(v) for k, v in ((doc.get("metadata") or {}).get("labels") or {}).items()}
        except StoreError as e:
            log.info("namespace %s: %s", namespace, e)
            labels = {}
        self._ns_cache[namespace] = (now, labels)
        return labels

    # ------------------------------------------------------------------ ClusterStore: writes
    @staticmethod
    def _annotation_patch(annotations: Mapping[str, str | None], resource_version: str | None) -> Obj:
        meta: Obj = {"annotations": dict(annotations)}
        if resource_version is not None:
            meta["resourceVersion"] = resource_version
        return {"metadata": meta}

    def patch_pod_annotations(
        self, namespace: str, name: str, annotations: Mapping[str, str | None], resource_version: str | None = None
    ) -> Obj:
        obj = self.client.request(
            "PATCH", f"/api/v1/namespaces/{namespace}/pods/{name}",
            body=self._annotation_patch(annotations, resource_version), content_type=MERGE_PATCH,
            what=f"patch pod {namespace}/{name}",
        )
        self._upsert("pod", obj)
        return obj

    def patch_node_annotations(
        self, name: str, annotations: Mapping[str, str | None], resource_version: str | None = None
    ) -> Obj:
        obj = self.client.request(
            "PATCH", f"/api/v1/nodes/{name}", body=self._annotation_patch(annotations, resource_version),
            content_type=MERGE_PATCH, what=f"patch node {name}",
        )
        self._upsert("node", obj)
        return obj

    def bind(self, namespace: str, name: str, uid: str, node: str) -> None:
        meta: Obj = {"name": name, "namespace": namespace}
        if uid:
            meta["uid"] = uid
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": meta,
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
        self.client.request("POST", f"/api/v1/namespaces/{namespace}/pods/{name}/binding", body=body,
                            what=f"bind pod {namespace}/{name} to {node}")
