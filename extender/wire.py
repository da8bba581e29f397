"""kube-scheduler extender v1 wire format (``reference/extender-api.md`` §2-3).

Requests: Go ``encoding/json`` of the args structs: PascalCase keys, explicit ``null`` for nil
lists and maps, the Pod without ``apiVersion``/``kind``, quantities as strings. Keys are matched
case-insensitively (Go's decoder does the same), canonical PascalCase is emitted. Scores are
always Python ints. Anything malformed raises :class:`BadRequest` (-> HTTP 400).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .limits import depth_exceeds

MIN_PRIORITY = 0
MAX_PRIORITY = 10


class BadRequest(Exception):
    """A request body the extender cannot read (answered with HTTP ``status``, 400 by default,
    and this message)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def load_json(body: bytes, max_depth: int | None = None) -> Any:
    """The decoded body; BadRequest when it is empty, not JSON, or nested deeper than ``max_depth``."""
    if not body:
        raise BadRequest("empty request body")
    try:
        doc = json.loads(body)
    except RecursionError:
        raise BadRequest(f"request body nests JSON too deeply (limit {max_depth or 'exceeded'})") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"request body is not JSON: {e}") from None
    if max_depth is not None and depth_exceeds(doc, max_depth):
        raise BadRequest(f"request body nests JSON deeper than {max_depth} levels")
    return doc


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _field(doc: Mapping[str, Any], name: str) -> Any:
    if name in doc:
        return doc[name]
    low = name.lower()
    for k, v in doc.items():
        if isinstance(k, str) and k.lower() == low:
            return v
    return None


@dataclass(frozen=True)
class ExtenderArgs:
    pod: dict[str, Any]
    node_names: list[str] | None  # nodeCacheCapable: true
    nodes: dict[str, Any] | None  # nodeCacheCapable: false (a v1.NodeList)

    @property
    def candidates(self) -> list[str]:
        if self.node_names is not None:
            return list(self.node_names)
        if self.nodes is not None:
            return [str((i.get("metadata") or {}).get("name")) for i in self.nodes.get("items") or []]
        return []

    @property
    def pod_key(self) -> str:
        meta = self.pod.get("metadata") or {}
        return f"{meta.get('namespace') or 'default'}/{meta.get('name')}"


def check_pod_shape(pod: Any, where: str, require_name: bool = True) -> dict[str, Any]:
    """The parts of a Pod dynamig reads must have the right JSON types (else BadRequest)."""
    if not isinstance(pod, dict):
        raise BadRequest(f"{where} must be a Pod object")
    meta = pod.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise BadRequest(f"{where}.metadata must be an object")
    meta = meta or {}
    if require_name and (not isinstance(meta.get("name"), str) or not meta.get("name")):
        raise BadRequest(f"{where}.metadata.name is missing")
    for f in ("name", "namespace", "generateName", "uid", "resourceVersion"):
        if meta.get(f) is not None and not isinstance(meta.get(f), str):
            raise BadRequest(f"{where}.metadata.{f} must be a string")
    for part in ("spec", "status"):
        if pod.get(part) is not None and not isinstance(pod.get(part), dict):
            raise BadRequest(f"{where}.{part} must be an object")
    for part in ("annotations", "labels"):
        if meta.get(part) is not None and not isinstance(meta.get(part), dict):
            raise BadRequest(f"{where}.metadata.{part} must be an object")
    spec = pod.get("spec") or {}
    for f in ("nodeName", "schedulerName"):
        if spec.get(f) is not None and not isinstance(spec.get(f), str):
            raise BadRequest(f"{where}.spec.{f} must be a string")
    for part in ("containers", "initContainers"):
        cs = spec.get(part)
        if cs is not None and (not isinstance(cs, list) or not all(isinstance(c, dict) for c in cs)):
            raise BadRequest(f"{where}.spec.{part} must be a list of containers")
        for c in cs or []:
            res = c.get("resources")
            if res is not None and not isinstance(res, dict):
                raise BadRequest(f"{where}.spec.{part}[].resources must be an object")
            for k in ("limits", "requests"):
                if res and res.get(k) is not None and not isinstance(res.get(k), dict):
                    raise BadRequest(f"{where}.spec.{part}[].resources.{k} must be an object")
            sc = c.get("securityContext")
            if sc is not None and not isinstance(sc, dict):
                raise BadRequest(f"{where}.spec.{part}[].securityContext must be an object")
    return pod


def _named(obj: Any) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("metadata"), dict) and isinstance(obj["metadata"].get("name"),
                                                                                          str)


def parse_extender_args(doc: Any) -> ExtenderArgs:
    if not isinstance(doc, dict):
        raise BadRequest("expected a JSON object (ExtenderArgs: Pod, Nodes, NodeNames)")
    pod = check_pod_shape(_field(doc, "Pod"), "ExtenderArgs.Pod")
    names = _field(doc, "NodeNames")
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        raise BadRequest("ExtenderArgs.NodeNames must be a list of node names or null")
    nodes = _field(doc, "Nodes")
    if nodes is not None:
        if not isinstance(nodes, dict):
            raise BadRequest("ExtenderArgs.Nodes must be a NodeList object or null")
        items = nodes.get("items")
        if items is not None and (not isinstance(items, list) or not all(_named(i) for i in items)):
            raise BadRequest("ExtenderArgs.Nodes.items must be a list of nodes with metadata.name")
    return ExtenderArgs(pod, names, nodes)


@dataclass(frozen=True)
class BindingArgs:
    pod_name: str
    pod_namespace: str
    pod_uid: str
    node: str


def parse_binding_args(doc: Any) -> BindingArgs:
    if not isinstance(doc, dict):
        raise BadRequest("expected a JSON object (ExtenderBindingArgs: PodName, PodNamespace, PodUID, Node)")
    vals = {}
    for name in ("PodName", "PodNamespace", "PodUID", "Node"):
        v = _field(doc, name)
        if v is None:
            v = ""
        if not isinstance(v, str):
            raise BadRequest(f"ExtenderBindingArgs.{name} must be a string")
        vals[name] = v
    for name in ("PodName", "Node"):
        if not vals[name]:
            raise BadRequest(f"ExtenderBindingArgs.{name} is missing")
    return BindingArgs(vals["PodName"], vals["PodNamespace"] or "default", vals["PodUID"], vals["Node"])


def filter_result(
    args: ExtenderArgs | None,
    node_names: list[str] | None,
    failed: Mapping[str, str] | None = None,
    unresolvable: Mapping[str, str] | None = None,
    error: str = "",
) -> dict[str, Any]:
    """ExtenderFilterResult. With nodeCacheCapable: false (the request carried ``Nodes``), the
    surviving nodes are also returned in ``Nodes``, which is what the scheduler reads then."""
    nodes = None
    if args is not None and args.node_names is None and args.nodes is not None and node_names is not None:
        keep = set(node_names)
        nodes = {**args.nodes, "items": [i for i in args.nodes.get("items") or []
                                         if (i.get("metadata") or {}).get("name") in keep]}
    return {
        "Nodes": nodes,
        "NodeNames": node_names,
        "FailedNodes": dict(failed or {}),
        "FailedAndUnresolvableNodes": dict(unresolvable or {}),
        "Error": error,
    }


def host_priorities(scores: Mapping[str, int]) -> list[dict[str, Any]]:
    return [{"Host": h, "Score": max(MIN_PRIORITY, min(MAX_PRIORITY, int(s)))} for h, s in scores.items()]


def binding_result(error: str = "") -> dict[str, Any]:
    return {"Error": error}
