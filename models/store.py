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
from typing import Any, NoReturn, Protocol, cast, runtime_checkable

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


class ReadOnlyError(TypeError):
    """A caller tried to change an object the store handed out (shared with every other reader)."""


def _refuse(self: object, *args: Any, **kwargs: Any) -> NoReturn:
    raise ReadOnlyError(
        f"store objects are read-only (shared with every reader, like an informer cache's): copy it "
        f"(copy.deepcopy gives a plain dict) before changing this {type(self).__name__}")


class ReadOnlyDict(dict[str, Any]):
    """A published API object (or part of one): a dict for every reader, refusing every change.

    ``copy.copy`` / ``copy.deepcopy`` give plain, mutable dicts (the way to edit one)."""

    __slots__ = ()
    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __copy__(self) -> dict[str, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return cast(dict[str, Any], _copy(self))

    def __reduce__(self) -> tuple[Any, ...]:
        return dict, (dict(self),)


class ReadOnlyList(list[Any]):
    """A list inside a published API object (see :class:`ReadOnlyDict`)."""

    __slots__ = ()
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = clear = extend = insert = pop = remove = reverse = sort = _refuse

    def __copy__(self) -> list[Any]:
        return list(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return cast(list[Any], _copy(self))

    def __reduce__(self) -> tuple[Any, ...]:
        return list, (list(self),)


class InMemoryStore:
    """A thread-safe, API-faithful in-memory cluster.

    Like ``kube.KubeStore``'s informer cache, reads return shared objects without copying: each
    write publishes one read-only copy of the object it changed (:class:`ReadOnlyDict`), which
    every ``get``/``list`` hands out until the next write of that object. The store's own state is
    never shared, so a caller cannot corrupt it, and a caller that tries to change what it was
    given fails loudly instead of silently changing every other reader's view (which in a cluster
    would corrupt the informer cache). A published object never changes: a reader keeps a
    consistent snapshot of it for as long as it holds it. A write returns the caller's own plain
    copy, as the API server's response to a write is a new object, not the informer cache's.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._nodes: dict[str, Obj] = {}
        self._pods: dict[tuple[str, str], Obj] = {}
        self._pub_nodes: dict[str, Obj] = {}  # read-only copies of _nodes, handed to readers
        self._pub_pods: dict[tuple[str, str], Obj] = {}
        self._rv = 0
        self._listeners: list[Callable[[str, Obj], None]] = []

    # ---- helpers
    def _bump(self, obj: Obj) -> None:
        self._rv += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self._rv)

    def _publish_node(self, name: str) -> Obj:
        pub = self._pub_nodes[name] = _freeze(self._nodes[name])
        self._notify("node", pub)
        return pub

    def _publish_pod(self, key: tuple[str, str]) -> Obj:
        pub = self._pub_pods[key] = _freeze(self._pods[key])
        self._notify("pod", pub)
        return pub

    def _notify(self, kind: str, obj: Obj) -> None:
        for fn in list(self._listeners):
            fn(kind, obj)

    def subscribe(self, fn: Callable[[str, Obj], None]) -> None:
        """Call ``fn(kind, obj)`` after every change (kind: 'node', 'pod' or 'pod-deleted'); ``obj``
        is the published, read-only object."""
        with self._lock:
            self._listeners.append(fn)

    def revision(self) -> int:
        return self._rv

    # ---- nodes
    def add_node(self, obj: Obj) -> Obj:
        with self._lock:
            obj = _dup(obj)
            name = obj["metadata"]["name"]
            self._bump(obj)
            self._nodes[name] = obj
            return _dup(self._publish_node(name))

    def list_nodes(self) -> list[Obj]:
        with self._lock:
            return list(self._pub_nodes.values())

    def get_node(self, name: str) -> Obj:
        with self._lock:
            if name not in self._pub_nodes:
                raise NotFound(f"node {name} not found")
            return self._pub_nodes[name]

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
            return _dup(self._publish_node(name))

    # ---- pods
    def create_pod(self, obj: Obj) -> Obj:
        with self._lock:
            obj = _dup(obj)
            meta = obj.setdefault("metadata", {})
            meta.setdefault("namespace", "default")
            key = (meta["namespace"], meta["name"])
            if key in self._pods:
                raise Conflict(f"pod {key[0]}/{key[1]} already exists")
            meta.setdefault("uid", f"uid-{self._rv + 1}-{meta['name']}")
            obj.setdefault("status", {}).setdefault("phase", "Pending")
            self._bump(obj)
            self._pods[key] = obj
            return _dup(self._publish_pod(key))

    def list_pods(self) -> list[Obj]:
        with self._lock:
            return list(self._pub_pods.values())

    def get_pod(self, namespace: str, name: str) -> Obj:
        with self._lock:
            pub = self._pub_pods.get((namespace, name))
            if pub is None:
                raise NotFound(f"pod {namespace}/{name} not found")
            return pub

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
            return _dup(self._publish_pod((namespace, name)))

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
            self._publish_pod((namespace, name))

    def set_pod_phase(self, namespace: str, name: str, phase: str) -> Obj:
        """What the kubelet does (demo and tests): Running, Succeeded, Failed."""
        with self._lock:
            obj = self._pods.get((namespace, name))
            if obj is None:
                raise NotFound(f"pod {namespace}/{name} not found")
            obj.setdefault("status", {})["phase"] = phase
            self._bump(obj)
            return _dup(self._publish_pod((namespace, name)))

    def delete_pod(self, namespace: str, name: str) -> None:
        with self._lock:
            obj = self._pods.pop((namespace, name), None)
            if obj is None:
                raise NotFound(f"pod {namespace}/{name} not found")
            pub = self._pub_pods.pop((namespace, name))
            self._rv += 1
            self._notify("pod-deleted", pub)


def _copy(obj: Any) -> Any:
    """A deep, plain (mutable) copy of a JSON-shaped object (dicts, lists, immutable scalars): what
    ``copy.deepcopy`` does for API objects at a fraction of its cost (no memo)."""
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


def _freeze_value(obj: Any) -> Any:
    if isinstance(obj, dict):
        return ReadOnlyDict({k: _freeze_value(v) for k, v in obj.items()})
    if isinstance(obj, list):
        return ReadOnlyList([_freeze_value(v) for v in obj])
    if isinstance(obj, tuple):
        return tuple(_freeze_value(v) for v in obj)
    return _copy(obj)  # scalars as they are; anything else not JSON-shaped deep-copied, as before


def _freeze(obj: Obj) -> Obj:
    """The read-only copy of ``obj`` that readers share (the store's own ``obj`` stays private)."""
    return cast(Obj, _freeze_value(obj))


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
