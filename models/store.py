"""The ClusterStore protocol and its in-memory implementation.

Both services talk to the cluster only through this protocol: ``kube.KubeStore`` implements it
over the official Kubernetes client, :class:`InMemoryStore` over dicts (demo, simulator, tests).
Objects are plain dicts shaped as the API server returns them. Writes follow API semantics:
annotation merge patches (``None`` deletes a key) guarded by ``resourceVersion``, and the
Binding subresource (409 when already bound).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol, cast, runtime_checkable

from .codecs import NODE_GPUS, encode_node, registration_of
from .errors import Conflict, NotFound
from .types import ClusterState

Obj = dict[str, Any]


@runtime_checkable
class ClusterStore(Protocol):
    def list_nodes(self) -> list[Obj]: ...

    def get_node(self, name: str) -> Obj: ...

    def list_pods(self) -> list[Obj]: ...

    def get_pod(self, namespace: str, name: str) -> Obj: ...

    def patch_pod_annotations(
        self, namespace: str, name: str, annotations: Mapping[str, str | None], resource_version: str | None = None
    ) -> Obj: ...

    def patch_node_annotations(
        self, name: str, annotations: Mapping[str, str | None], resource_version: str | None = None
    ) -> Obj: ...

    def bind(self, namespace: str, name: str, uid: str, node: str) -> None: ...

    def revision(self) -> int:
        """Increases whenever anything changes (cheap cache invalidation for the extender)."""
        ...


class InMemoryStore:
    """A thread-safe, API-faithful in-memory cluster. Returns deep copies; never shares state."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._nodes: dict[str, Obj] = {}
        self._pods: dict[tuple[str, str], Obj] = {}
        self._rv = 0
        self._listeners: list[Callable[[str, Obj], None]] = []

    # ---- helpers
    def _bump(self, obj: Obj) -> None:
        self._rv += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self._rv)

    def _notify(self, kind: str, obj: Obj) -> None:
        for fn in list(self._listeners):
            fn(kind, _copy(obj))

    def subscribe(self, fn: Callable[[str, Obj], None]) -> None:
        """Call ``fn(kind, obj)`` after every change (kind: 'node' or 'pod')."""
        with self._lock:
            self._listeners.append(fn)

    def revision(self) -> int:
        return self._rv

    # ---- nodes
    def add_node(self, obj: Obj) -> Obj:
        with self._lock:
            obj = _copy(obj)
            name = obj["metadata"]["name"]
            self._bump(obj)
            self._nodes[name] = obj
            self._notify("node", obj)
            return _dup(obj)

    def list_nodes(self) -> list[Obj]:
        with self._lock:
            return [_copy(n) for n in self._nodes.values()]

    def get_node(self, name: str) -> Obj:
        with self._lock:
            if name not in self._nodes:
                raise NotFound(f"node {name} not found")
            return _dup(self._nodes[name])

    def patch_node_annotations(
        self, name: str, annotations: Mapping[str, str | None], resource_version: str | None = None
    ) -> Obj:
        with self._lock:
            if name not in self._nodes:
                raise NotFound(f"node {name} not found")
            obj = self._nodes[name]
            _check_rv(obj, resource_version, f"node {name}")
            _merge(obj, annotations)
            self._bump(obj)
            self._notify("node", obj)
            return _dup(obj)

    # ---- pods
    def create_pod(self, obj: Obj) -> Obj:
        with self._lock:
            obj = _copy(obj)
            meta = obj.setdefault("metadata", {})
            meta.setdefault("namespace", "default")
            key = (meta["namespace"], meta["name"])
            if key in self._pods:
                raise Conflict(f"pod {key[0]}/{key[1]} already exists")
            meta.setdefault("uid", f"uid-{self._rv + 1}-{meta['name']}")
            obj.setdefault("status", {}).setdefault("phase", "Pending")
            self._bump(obj)
            self._pods[key] = obj
            self._notify("pod", obj)
            return _dup(obj)

    def list_pods(self) -> list[Obj]:
        with self._lock:
            return [_copy(p) for p in self._pods.values()]

    def get_pod(self, namespace: str, name: str) -> Obj:
        with self._lock:
            if (namespace, name) not in self._pods:
                raise NotFound(f"pod {namespace}/{name} not found")
            return _dup(self._pods[(namespace, name)])

    def patch_pod_annotations(
        self, namespace: str, name: str, annotations: Mapping[str, str | None], resource_version: str | None = None
    ) -> Obj:
        with self._lock:
            obj = self._pods.get((namespace, name))
            if obj is None:
                raise NotFound(f"pod {namespace}/{name} not found")
            _check_rv(obj, resource_version, f"pod {namespace}/{name}")
            _merge(obj, annotations)
            self._bump(obj)
            self._notify("pod", obj)
            return _dup(obj)

    def bind(self, namespace: str, name: str, uid: str, node: str) -> None:
        with self._lock:
            obj = self._pods.get((namespace, name))
            if obj is None:
                raise NotFound(f"pod {namespace}/{name} not found")
            if uid and obj["metadata"].get("uid") != uid:
                raise Conflict(f"pod {namespace}/{name}: UID precondition failed")
            if obj.get("spec", {}).get("nodeName"):
                raise Conflict(f"pod {name} is already assigned to node {obj['spec']['nodeName']}")
            if obj["metadata"].get("deletionTimestamp"):
                raise Conflict(f"pod {namespace}/{name} is being deleted")
            if node not in self._nodes:
                raise NotFound(f"node {node} not found")
            obj.setdefault("spec", {})["nodeName"] = node
            obj.setdefault("status", {}).setdefault("conditions", []).append(
                {"type": "PodScheduled", "status": "True"}
            )
            self._bump(obj)
            self._notify("pod", obj)

    def set_pod_phase(self, namespace: str, name: str, phase: str) -> Obj:
        """What the kubelet does (demo and tests): Running, Succeeded, Failed."""
        with self._lock:
            obj = self._pods.get((namespace, name))
            if obj is None:
                raise NotFound(f"pod {namespace}/{name} not found")
            obj.setdefault("status", {})["phase"] = phase
            self._bump(obj)
            self._notify("pod", obj)
            return _dup(obj)

    def delete_pod(self, namespace: str, name: str) -> None:
        with self._lock:
            obj = self._pods.pop((namespace, name), None)
            if obj is None:
                raise NotFound(f"pod {namespace}/{name} not found")
            self._rv += 1
            self._notify("pod-deleted", obj)


def _copy(obj: Any) -> Any:
    """A deep copy of a JSON-shaped object (dicts, lists, immutable scalars): what ``copy.deepcopy``
    does for API objects at a fraction of its cost (no memo; every list() of the store copies)."""
    if isinstance(obj, dict):
        return {k: _copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_copy(v) for v in obj]
    if isinstance(obj, (str, int, float, bool, type(None))):
        return obj
    import copy

    return copy.deepcopy(obj)


def _dup(obj: Obj) -> Obj:
    return cast(Obj, _copy(obj))


def _check_rv(obj: Obj, rv: str | None, what: str) -> None:
    if rv is not None and obj["metadata"].get("resourceVersion") != rv:
        raise Conflict(
            f"{what}: the object has been modified (resourceVersion {rv} != {obj['metadata'].get('resourceVersion')})"
        )


def _merge(obj: Obj, annotations: Mapping[str, str | None]) -> None:
    ann = obj["metadata"].get("annotations") or {}  # a manifest may say `annotations: null`
    obj["metadata"]["annotations"] = ann
    for k, v in annotations.items():
        if v is None:
            ann.pop(k, None)
        else:
            ann[k] = v


def node_objects(state: ClusterState) -> list[Obj]:
    """Node objects as the API would hold them after every device plugin registered."""
    out = []
    for n in state.nodes:
        out.append(
            {
                "metadata": {
                    "name": n.name,
                    "labels": dict(n.labels),
                    "annotations": {NODE_GPUS: encode_node(registration_of(n))},
                },
                "status": {
                    "allocatable": {
                        **({"cpu": f"{n.cpu_milli}m"} if n.cpu_milli else {}),
                        "nvidia.com/gpu": str(sum(g.split for g in n.gpus)),
                    }
                },
            }
        )
    return out
