"""The mutating admission webhook: AdmissionReview v1 in, JSONPatch out (over real HTTP)."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from test_extender_support import filter_body, memory_store, pod_manifest

from extender import ExtenderConfig, create_app, serve_in_thread
from models.cluster import state_from_objects
from models.codecs import (
    ALLOCATION_KEYS,
    POD_ALLOCATED,
    POD_ALLOCATION,
    POD_ALLOCATION_SIG,
    POD_BIND_PHASE,
    POD_NODE,
    PodAllocation,
    encode_allocation,
)
from models.layouts import Slot
from models.plan import LayoutChange, UnitAssignment
from models.store import InMemoryStore
from models.types import UnitKind

EXTENDER_SA = "system:serviceaccount:dynamig-system:dyn-dynamig-scheduler"
PLUGIN_SA = "system:serviceaccount:dynamig-system:dyn-dynamig-device-plugin"


class Store(InMemoryStore):
    def __init__(self, ns_labels: dict[str, dict[str, str]]) -> None:
        super().__init__()
        self.ns_labels = ns_labels

    def namespace_labels(self, ns: str) -> dict[str, str]:
        return self.ns_labels.get(ns, {})


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    store = Store({"quiet": {"dynamig.io/webhook": "ignore"}, "hami-quiet": {"hami.io/webhook": "ignore"}})
    h = serve_in_thread(create_app(store, ExtenderConfig(scheduler_name="dynamig-scheduler",
                                                         trusted_users=(EXTENDER_SA,), node_agent_users=(PLUGIN_SA,))))
    with httpx.Client(base_url=h.url, timeout=10) as c:
        yield c
    h.stop()


def review(pod: dict[str, Any], op: str = "CREATE", old: dict[str, Any] | None = None,
           user: str = "alice", extra: dict[str, list[str]] | None = None) -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                        "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "resource": {"group": "", "version": "v1", "resource": "pods"},
                        "namespace": pod["metadata"].get("namespace", "default"), "operation": op,
                        "userInfo": {"username": user, **({"extra": extra} if extra else {})},
                        "object": pod, "oldObject": old, "dryRun": False}}


def apply_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """Enough of RFC 6902 (add, remove, replace) to apply the webhook's answers."""
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent: Any = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        last = parts[-1]
        if op["op"] in ("add", "replace"):
            if isinstance(parent, list):
                parent.insert(int(last), op["value"]) if op["op"] == "add" else parent.__setitem__(int(last),
                                                                                                 op["value"])
            else:
                parent[last] = op["value"]
        elif op["op"] == "remove":
            del parent[int(last) if isinstance(parent, list) else last]
        else:
            raise AssertionError(op)
    return doc


def admit(http: httpx.Client, pod: dict[str, Any], **kw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    r = http.post("/webhook", json=review(pod, **kw))
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["apiVersion"] == "admission.k8s.io/v1" and doc["kind"] == "AdmissionReview"
    resp = doc["response"]
    assert resp["uid"] == "705ab4f5-6393-11e8-b7cc-42010a800002"
    patched = pod
    if resp.get("patch"):
        assert resp["patchType"] == "JSONPatch"
        patched = apply_patch(pod, json.loads(base64.b64decode(resp["patch"])))
    return resp, patched


def limits(pod: dict[str, Any], i: int = 0, part: str = "containers") -> dict[str, str]:
    return pod["spec"][part][i]["resources"]["limits"]


def test_memory_only_gets_one_gpu_and_scheduler(http: httpx.Client) -> None:
    resp, pod = admit(http, pod_manifest("p", gpu=None, mem="3000"))
    assert resp["allowed"] is True
    assert limits(pod) == {"nvidia.com/gpumem": "3000", "nvidia.com/gpu": "1"}
    assert pod["spec"]["schedulerName"] == "dynamig-scheduler"


@pytest.mark.parametrize(("kw", "cores"), [
    ({"gpu": "1"}, "100"),
    ({"gpu": "2", "pct": "100"}, "100"),
    ({"gpu": "1", "pct": "50"}, None),
    ({"gpu": "1", "mem": "1000"}, None),
    ({"gpu": "1", "cores": "30"}, "30"),
])
def test_count_only_is_exclusive(http: httpx.Client, kw: dict[str, str], cores: str | None) -> None:
    resp, pod = admit(http, pod_manifest("p", **kw))
    assert resp["allowed"] is True
    assert limits(pod).get("nvidia.com/gpucores") == cores


def test_scheduler_name_rules(http: httpx.Client) -> None:
    _, pod = admit(http, pod_manifest("p", scheduler="default-scheduler"))
    assert pod["spec"]["schedulerName"] == "dynamig-scheduler"
    resp, pod = admit(http, pod_manifest("p", scheduler="volcano"))
    assert resp["allowed"] and pod["spec"]["schedulerName"] == "volcano"
    cpu = {"metadata": {"name": "web", "namespace": "x"}, "spec": {"containers": [{"name": "c"}]}}
    resp, pod = admit(http, cpu)
    assert resp["allowed"] and "patch" not in resp and "schedulerName" not in pod["spec"]


def test_requests_kept_equal_to_limits(http: httpx.Client) -> None:
    p = pod_manifest("p", gpu=None, mem="2000")
    p["spec"]["containers"][0]["resources"]["requests"] = {"nvidia.com/gpumem": "2000"}
    _, pod = admit(http, p)
    res = pod["spec"]["containers"][0]["resources"]
    assert res["requests"] == res["limits"] == {"nvidia.com/gpumem": "2000", "nvidia.com/gpu": "1"}


def test_init_containers_are_defaulted(http: httpx.Client) -> None:
    p = pod_manifest("p", mem="1000")
    p["spec"]["initContainers"] = [{"name": "init", "resources": {"limits": {"nvidia.com/gpumem": "500"}}}]
    _, pod = admit(http, p)
    assert limits(pod, 0, "initContainers") == {"nvidia.com/gpumem": "500", "nvidia.com/gpu": "1"}


@pytest.mark.parametrize(("kw", "needle"), [
    ({"gpu": "-1"}, "negative"),
    ({"gpu": "1", "mem": "-5"}, "negative"),
    ({"gpu": "1", "pct": "150"}, "1..100"),
    ({"gpu": "1", "pct": "0"}, "1..100"),
    ({"gpu": "1", "mem": "0"}, "gpumem is 0"),
    ({"gpu": "1", "cores": "150"}, "percentage"),
    ({"gpu": "1", "mem": "lots"}, "integer"),
    ({"gpu": "0", "mem": "100"}, "is 0"),
])
def test_invalid_values_are_denied_with_a_message(http: httpx.Client, kw: dict[str, str], needle: str) -> None:
    resp, _ = admit(http, pod_manifest("p", **kw))
    assert resp["allowed"] is False
    assert needle in resp["status"]["message"] and resp["status"]["code"] == 400


def test_preset_node_name_privileged_and_empty_pods_denied(http: httpx.Client) -> None:
    p = pod_manifest("p", mem="1000")
    p["spec"]["nodeName"] = "mig-0"
    resp, _ = admit(http, p)
    assert not resp["allowed"] and "nodeName" in resp["status"]["message"]
    p = pod_manifest("p", mem="1000")
    p["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    resp, _ = admit(http, p)
    assert not resp["allowed"] and "privileged" in resp["status"]["message"]
    resp, _ = admit(http, {"metadata": {"name": "e", "namespace": "x"}, "spec": {"containers": []}})
    assert not resp["allowed"] and "no containers" in resp["status"]["message"]


def forged(pod_name: str, node: str, gpu: str) -> dict[str, str]:
    """Annotations a user might write to claim an instance they were never given."""
    unit = UnitAssignment(f"ml/{pod_name}", "main", 0, 0, node, gpu, 0, UnitKind.MIG, 40192, 100,
                          Slot("7g.40gb", 0))
    layout = LayoutChange(node, gpu, (Slot("7g.40gb", 0),), 3)
    return {POD_ALLOCATION: encode_allocation(PodAllocation(f"ml/{pod_name}", node, (unit,), (layout,))),
            POD_NODE: node, POD_BIND_PHASE: "success", "keep.me/too": "yes"}


def test_user_cannot_claim_a_device_with_allocation_annotations(http: httpx.Client) -> None:
    store = memory_store()
    gpu = store.get_node("mig-0")
    gpu_uuid = json.loads(gpu["metadata"]["annotations"]["dynamig.io/node-gpus"])["gpus"][0]["uuid"]
    thief = pod_manifest("thief", gpu="1", annotations=forged("thief", "mig-0", gpu_uuid))
    thief["metadata"]["labels"] = {"dynamig.io/webhook": "ignore"}  # even an ignored pod is stripped
    resp, admitted = admit(http, thief)
    assert resp["allowed"] is True and any("only dynamig" in w for w in resp.get("warnings", []))
    ann = admitted["metadata"]["annotations"]
    assert not any(k in ann for k in ALLOCATION_KEYS) and ann["keep.me/too"] == "yes"
    # proof that it matters: the forged pod, had it been admitted as is, would hold the GPU...
    forged_store = memory_store()
    forged_store.create_pod(thief)
    state, _ = state_from_objects(forged_store.list_nodes(), forged_store.list_pods())
    assert state.node("mig-0").gpus[0].busy
    # ... but the admitted pod holds nothing, and an honest whole-GPU pod still gets the GPU
    store.create_pod(admitted)
    state, _ = state_from_objects(store.list_nodes(), store.list_pods())
    assert not state.node("mig-0").gpus[0].busy
    honest = store.create_pod(pod_manifest("honest", gpu="1"))
    app = create_app(store, ExtenderConfig())
    with serve_in_thread(app) as h, httpx.Client(base_url=h.url) as c:
        assert c.post("/filter", json=filter_body(honest, ["mig-0"])).json()["NodeNames"] == ["mig-0"]


def test_update_of_allocation_annotations_needs_a_trusted_user(http: httpx.Client) -> None:
    old = pod_manifest("p", gpu="1")
    new = copy.deepcopy(old)
    new["metadata"]["annotations"][POD_NODE] = "mig-0"
    resp, _ = admit(http, new, op="UPDATE", old=old, user="alice")
    assert resp["allowed"] is False and resp["status"]["code"] == 403
    resp, _ = admit(http, new, op="UPDATE", old=old, user=EXTENDER_SA)
    assert resp["allowed"] is True
    other = copy.deepcopy(old)
    other["metadata"]["annotations"]["team"] = "x"
    assert admit(http, other, op="UPDATE", old=old)[0]["allowed"] is True


@pytest.mark.parametrize("user", [
    # finding 3: the old pattern system:serviceaccount:*:dynamig* trusted these
    "system:serviceaccount:team-a:dynamig", "system:serviceaccount:team-a:dyn-dynamig-scheduler",
    "system:serviceaccount:dynamig-system:dyn-dynamig-scheduler-x", "system:serviceaccount:dynamig-system:dynamig",
    "", "system:anonymous",
])
def test_only_the_exact_extender_account_is_trusted(http: httpx.Client, user: str) -> None:
    old = pod_manifest("p", gpu="1")
    new = copy.deepcopy(old)
    new["metadata"]["annotations"][POD_ALLOCATION] = "{}"
    resp, _ = admit(http, new, op="UPDATE", old=old, user=user)
    assert resp["allowed"] is False and "only dynamig may set dynamig.io/allocation" in resp["status"]["message"]


def test_update_guards_every_dynamig_key_also_removal_and_unknown_keys(http: httpx.Client) -> None:
    old = pod_manifest("p", gpu="1", annotations={POD_ALLOCATION: "x", POD_ALLOCATION_SIG: "v1:a:b"})
    for change in ({POD_ALLOCATION: None}, {POD_ALLOCATION_SIG: None}, {"dynamig.io/anything-new": "1"},
                   {POD_BIND_PHASE: "failed"}):
        new = copy.deepcopy(old)
        for k, v in change.items():
            if v is None:
                del new["metadata"]["annotations"][k]
            else:
                new["metadata"]["annotations"][k] = v
        resp, _ = admit(http, new, op="UPDATE", old=old, user="alice")
        assert resp["allowed"] is False, change
        # the opt-out label does not exempt an update either
        new["metadata"]["labels"] = {"dynamig.io/webhook": "ignore", "hami.io/webhook": "ignore"}
        assert admit(http, new, op="UPDATE", old=old, user="alice")[0]["allowed"] is False, change


def test_device_plugin_writes_only_its_keys_on_its_own_nodes_pods(http: httpx.Client) -> None:
    old = pod_manifest("p", gpu="1", annotations={POD_ALLOCATION: "x", POD_BIND_PHASE: "allocating"})
    old["spec"]["nodeName"] = "node-a"
    mine = {"authentication.kubernetes.io/node-name": ["node-a"]}
    theirs = {"authentication.kubernetes.io/node-name": ["node-b"]}
    ok = copy.deepcopy(old)
    ok["metadata"]["annotations"].update({POD_BIND_PHASE: "success", POD_ALLOCATED: "{}"})
    assert admit(http, ok, op="UPDATE", old=old, user=PLUGIN_SA, extra=mine)[0]["allowed"] is True
    resp, _ = admit(http, ok, op="UPDATE", old=old, user=PLUGIN_SA, extra=theirs)
    assert resp["allowed"] is False and "only write pods bound to it" in resp["status"]["message"]
    grab = copy.deepcopy(old)
    grab["metadata"]["annotations"][POD_ALLOCATION] = "y"
    resp, _ = admit(http, grab, op="UPDATE", old=old, user=PLUGIN_SA, extra=mine)
    assert resp["allowed"] is False and "may not set dynamig.io/allocation" in resp["status"]["message"]


def test_ignored_pods_and_namespaces(http: httpx.Client) -> None:
    for label in ("dynamig.io/webhook", "hami.io/webhook"):
        p = pod_manifest("p", gpu="1")
        p["metadata"]["labels"] = {label: "ignore"}
        resp, pod = admit(http, p)
        assert resp["allowed"] and "patch" not in resp and "schedulerName" not in pod["spec"]
    for ns in ("quiet", "hami-quiet"):
        resp, pod = admit(http, pod_manifest("p", gpu="1", ns=ns))
        assert resp["allowed"] and "patch" not in resp


def test_ignored_pods_are_still_stripped_of_every_dynamig_key(http: httpx.Client) -> None:
    for label in ("dynamig.io/webhook", "hami.io/webhook"):
        p = pod_manifest("p", gpu="1", annotations={POD_ALLOCATION: "x", POD_ALLOCATION_SIG: "v1:a:b",
                                                    "dynamig.io/future-key": "1", "hami.io/keep": "y"})
        p["metadata"]["labels"] = {label: "ignore"}
        resp, pod = admit(http, p, user=EXTENDER_SA)  # also the extender cannot create claims
        ann = pod["metadata"]["annotations"]
        assert resp["allowed"] and not [k for k in ann if k.startswith("dynamig.io/")] and ann["hami.io/keep"] == "y"
        assert "schedulerName" not in pod["spec"]


@pytest.mark.parametrize("body", [b"", b"{", b"[]", b"{}", b'{"request": {}}', b'{"request": {"uid": 5}}',
                                  b'{"request": {"uid": "u", "object": []}}',
                                  b'{"request": {"uid": "u", "userInfo": {"extra": {"a": "b"}}}}',
                                  b'{"request": {"uid": "u", "userInfo": {"extra": []}}}'])
def test_malformed_reviews_are_400(http: httpx.Client, body: bytes) -> None:
    r = http.post("/webhook", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["Error"]
