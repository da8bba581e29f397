"""Mutating admission webhook (AdmissionReview ``admission.k8s.io/v1``, JSONPatch answers).

For pods (``reference/hami.md`` §8, with dynamig's additions; the trust model is docs/security.md):

1. CREATE: every ``dynamig.io/`` annotation is removed, always and for everyone: no pod can be
   created claiming a device it was not given.
2. UPDATE: a change to any ``dynamig.io/`` annotation is denied unless the user is exactly one of
   ``trusted_users`` (the extender's service account: every key) or ``node_agent_users`` (the device
   plugin: only ``codecs.NODE_AGENT_POD_KEYS``, and only on pods bound to the node its token was
   issued on, ``authentication.kubernetes.io/node-name``).
3. Pods or namespaces labelled ``dynamig.io/webhook=ignore`` or ``hami.io/webhook=ignore`` opt out of
   the mutation below (resource defaults, schedulerName, request checks), never out of 1 and 2.
4. Per container with GPU resources: memory/cores without ``nvidia.com/gpu`` -> ``nvidia.com/gpu: 1``;
   ``nvidia.com/gpu`` without memory and cores (or percentage 100) -> ``nvidia.com/gpucores: 100``.
5. Invalid values are denied with a message (negative, percentage outside 1..100, ``gpumem: 0``,
   cores over 100, non-integers), as are privileged GPU containers and a preset ``nodeName``.
6. GPU pods get ``schedulerName`` unless they name another non-default scheduler.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable, Mapping
from typing import Any

from models.codecs import NODE_AGENT_POD_KEYS, PREFIX
from models.errors import RequestError
from models.quantity import QuantityError, parse_quantity
from models.requests import GPU_RESOURCES, RES_CORES, RES_GPU, RES_MEM, RES_MEM_PCT, parse_pod

from .config import ExtenderConfig
from .wire import BadRequest, check_pod_shape

DEFAULT_SCHEDULER = "default-scheduler"
IGNORE = "ignore"
#: HAMi's opt-out label, honoured too (a cluster migrating from HAMi keeps its opt-outs)
HAMI_IGNORE_LABEL = "hami.io/webhook"
#: the node a bound service-account token was issued on (Kubernetes >= 1.30)
NODE_NAME_EXTRA = "authentication.kubernetes.io/node-name"


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def parse_review(doc: Any) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise BadRequest("expected a JSON object (AdmissionReview)")
    req = doc.get("request")
    if not isinstance(req, dict):
        raise BadRequest("AdmissionReview.request is missing")
    if not isinstance(req.get("uid"), str) or not req.get("uid"):
        raise BadRequest("AdmissionReview.request.uid is missing")
    for f in ("kind", "userInfo"):
        if req.get(f) is not None and not isinstance(req.get(f), dict):
            raise BadRequest(f"AdmissionReview.request.{f} must be an object")
    for f in ("operation", "namespace"):
        if req.get(f) is not None and not isinstance(req.get(f), str):
            raise BadRequest(f"AdmissionReview.request.{f} must be a string")
    extra = (req.get("userInfo") or {}).get("extra")
    if extra is not None and not (isinstance(extra, dict) and all(
            isinstance(v, list) and all(isinstance(x, str) for x in v) for v in extra.values())):
        raise BadRequest("AdmissionReview.request.userInfo.extra must map names to lists of strings")
    kind = (req.get("kind") or {}).get("kind")
    if kind in (None, "Pod"):
        for f in ("object", "oldObject"):
            if req.get(f) is not None:
                check_pod_shape(req[f], f"AdmissionReview.request.{f}", require_name=False)
    return req


def _response(doc: Mapping[str, Any], uid: str, allowed: bool, message: str = "", code: int = 200,
              patch: list[dict[str, Any]] | None = None, warnings: list[str] | None = None) -> dict[str, Any]:
    resp: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if not allowed:
        resp["status"] = {"code": code, "message": message, "reason": "Forbidden" if code == 403 else "BadRequest"}
    if patch:
        resp["patchType"] = "JSONPatch"
        resp["patch"] = base64.b64encode(json.dumps(patch, separators=(",", ":")).encode()).decode()
    if warnings:
        resp["warnings"] = warnings
    return {"apiVersion": doc.get("apiVersion") or "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": resp}


def _has_gpu(c: Mapping[str, Any]) -> bool:
    res = c.get("resources") or {}
    return any(k in (res.get(part) or {}) for part in ("limits", "requests") for k in GPU_RESOURCES)


def _int_qty(v: Any) -> int | None:
    try:
        q = parse_quantity(v)
    except QuantityError:
        return None
    return int(q) if q == q.to_integral_value() else None


def _default_container(c: dict[str, Any]) -> bool:
    """HAMi's resource defaults on one container; True if changed."""
    res = c.setdefault("resources", {})
    limits = res.get("limits")
    if limits is None:
        limits = res["limits"] = {}
    requests = res.get("requests") or {}
    merged = {**requests, **limits}
    changed = False
    targets = [limits] + ([requests] if any(k in requests for k in GPU_RESOURCES) else [])
    if RES_GPU not in merged and any(k in merged for k in (RES_MEM, RES_MEM_PCT, RES_CORES)):
        for t in targets:
            t[RES_GPU] = "1"
        changed = True
        merged[RES_GPU] = "1"
    if RES_GPU in merged and (_int_qty(merged[RES_GPU]) or 0) > 0 and RES_CORES not in merged:
        pct = _int_qty(merged.get(RES_MEM_PCT)) if RES_MEM_PCT in merged else None
        if RES_MEM not in merged and (pct is None or pct == 100):
            for t in targets:
                t[RES_CORES] = "100"
            changed = True
    return changed


def _dynamig_keys(ann: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in ann if str(k).startswith(PREFIX))


def _update_denial(req: Mapping[str, Any], config: ExtenderConfig) -> str | None:
    """Why this UPDATE may not change the pod's dynamig.io/ annotations (None: it may)."""
    meta = (req.get("object") or {}).get("metadata") or {}
    old_meta = (req.get("oldObject") or {}).get("metadata") or {}
    ann, old_ann = meta.get("annotations") or {}, old_meta.get("annotations") or {}
    changed = [k for k in sorted(set(_dynamig_keys(ann)) | set(_dynamig_keys(old_ann))) if ann.get(k) != old_ann.get(k)]
    if not changed:
        return None
    info = req.get("userInfo") or {}
    user = str(info.get("username") or "")
    if user and user in config.trusted_users:
        return None
    if user and user in config.node_agent_users:
        foreign = [k for k in changed if k not in NODE_AGENT_POD_KEYS]
        if foreign:
            return f"the dynamig device plugin ({user}) may not set {', '.join(foreign)}"
        node = ((info.get("extra") or {}).get(NODE_NAME_EXTRA) or [""])[0]
        bound = ((req.get("object") or {}).get("spec") or {}).get("nodeName") or \
            ((req.get("oldObject") or {}).get("spec") or {}).get("nodeName")
        if node and bound != node:
            return (f"the dynamig device plugin on node {node} may only write pods bound to it "
                    f"(this pod is {'bound to ' + bound if bound else 'not bound'})")
        return None
    return f"only dynamig may set {', '.join(changed)} (user {user or 'unknown'} is not dynamig's service account)"


def _ignored(labels: Mapping[str, Any], config: ExtenderConfig) -> bool:
    return any(labels.get(k) == IGNORE for k in (config.webhook_ignore_label, HAMI_IGNORE_LABEL))


def review(doc: Any, config: ExtenderConfig,
           namespace_labels: Callable[[str], Mapping[str, str]] | None = None) -> dict[str, Any]:
    req = parse_review(doc)
    uid = req["uid"]
    kind = (req.get("kind") or {}).get("kind")
    pod = req.get("object")
    if (kind not in (None, "Pod")) or pod is None or req.get("operation") in ("DELETE", "CONNECT"):
        return _response(doc, uid, True)
    op = req.get("operation") or "CREATE"
    meta = pod.get("metadata") or {}
    ann = meta.get("annotations") or {}
    if op == "UPDATE":
        denial = _update_denial(req, config)
        if denial is not None:
            return _response(doc, uid, False, denial, 403)
        return _response(doc, uid, True)

    patch: list[dict[str, Any]] = []
    warnings: list[str] = []
    stripped = _dynamig_keys(ann)
    for k in stripped:
        patch.append({"op": "remove", "path": f"/metadata/annotations/{_escape(k)}"})
    if stripped:
        warnings.append(f"dynamig: removed {', '.join(stripped)}: only dynamig may set them")

    labels = meta.get("labels") or {}
    ns = str(meta.get("namespace") or req.get("namespace") or "default")
    ignored = _ignored(labels, config)
    if not ignored and namespace_labels is not None:
        ignored = _ignored(namespace_labels(ns) or {}, config)
    if ignored:
        return _response(doc, uid, True, patch=patch, warnings=warnings)

    spec = pod.get("spec")
    if not isinstance(spec, dict) or not spec.get("containers"):
        return _response(doc, uid, False, "pod has no containers", 400)
    mutated = copy.deepcopy(pod)
    mspec = mutated["spec"]
    gpu_pod = False
    for part in ("initContainers", "containers"):
        for i, c in enumerate(mspec.get(part) or []):
            if not isinstance(c, dict) or not _has_gpu(c):
                continue
            gpu_pod = True
            if config.deny_privileged and ((c.get("securityContext") or {}).get("privileged") is True):
                return _response(doc, uid, False, f"container {c.get('name')!r} is privileged and requests GPU "
                                                  "resources; a privileged container sees every GPU", 403)
            if _default_container(c):
                patch.append({"op": "add", "path": f"/spec/{part}/{i}/resources", "value": c["resources"]})
    if not gpu_pod:
        return _response(doc, uid, True, patch=patch, warnings=warnings)
    # validate the request as the extender will read it (after the defaults)
    check = copy.deepcopy(mutated)
    check.setdefault("metadata", {}).setdefault("name", meta.get("generateName") or "pod")
    check["metadata"]["annotations"] = {k: v for k, v in ann.items() if k not in stripped}
    try:
        parse_pod(check)
    except RequestError as e:
        return _response(doc, uid, False, str(e), 400)
    if spec.get("nodeName"):
        return _response(doc, uid, False, f"pod requests GPU resources but sets spec.nodeName "
                                          f"({spec['nodeName']}); GPU pods must be placed by "
                                          f"{config.scheduler_name}", 400)
    sched = spec.get("schedulerName")
    if not sched or sched == DEFAULT_SCHEDULER:
        patch.append({"op": "add", "path": "/spec/schedulerName", "value": config.scheduler_name})
    return _response(doc, uid, True, patch=patch, warnings=warnings)
