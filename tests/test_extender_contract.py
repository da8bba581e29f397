"""Wire contract of the extender (reference/extender-api.md): bodies exactly as kube-scheduler v1
sends them (nulls, Pod without apiVersion/kind, quantities as strings), answers checked field by
field, malformed bodies -> 400 (never 500). Real planner, real HTTP on loopback."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_extender_support import bind_body, filter_body, memory_store, pod_manifest

from extender import ExtenderConfig, ServerHandle, create_app, serve_in_thread
from models.codecs import (
    NODE_LOCK,
    POD_ALLOCATION,
    POD_BIND_PHASE,
    POD_BIND_TIME,
    POD_NODE,
    POD_PLAN_TIME,
    decode_allocation,
    decode_lock,
)
from models.store import InMemoryStore

FILTER_KEYS = ["Nodes", "NodeNames", "FailedNodes", "FailedAndUnresolvableNodes", "Error"]

# A filter request byte-for-byte in the shape kube-scheduler (Go encoding/json, nodeCacheCapable: true)
# produces: PascalCase args, explicit nulls, the informer's Pod (no apiVersion/kind), string quantities.
RAW_FILTER = (
    '{"Pod":{"metadata":{"name":"train-1","namespace":"ml","uid":"7c1e0b2a-1111-2222-3333-444455556666",'
    '"resourceVersion":"RV","creationTimestamp":"2025-03-01T08:00:00Z","labels":null,"annotations":null,'
    '"ownerReferences":null,"managedFields":[{"manager":"kubectl","operation":"Update"}]},'
    '"spec":{"volumes":null,"initContainers":null,"containers":[{"name":"c","image":"cuda:12",'
    '"resources":{"limits":{"nvidia.com/gpu":"1","nvidia.com/gpumem":"10000"},'
    '"requests":{"nvidia.com/gpu":"1","nvidia.com/gpumem":"10000"}},"env":null,"ports":null}],'
    '"restartPolicy":"Always","schedulerName":"dynamig-scheduler","nodeSelector":null,"tolerations":null,'
    '"priority":0},"status":{"phase":"Pending","conditions":null,"qosClass":"BestEffort"}},'
    '"Nodes":null,"NodeNames":["mig-0","mig-1","share-0"]}'
)


@pytest.fixture
def store() -> InMemoryStore:
    return memory_store()


@pytest.fixture
def server(store: InMemoryStore) -> Iterator[ServerHandle]:
    app = create_app(store, ExtenderConfig(identity="ext-test"))
    h = serve_in_thread(app, "127.0.0.1", 0, metrics_port=0)
    yield h
    h.stop()


@pytest.fixture(scope="module")
def shared_http() -> Iterator[httpx.Client]:
    """One server for the tests that change nothing."""
    h = serve_in_thread(create_app(memory_store(), ExtenderConfig()))
    with httpx.Client(base_url=h.url, timeout=10) as c:
        yield c
    h.stop()


@pytest.fixture
def http(server: ServerHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def post_raw(http: httpx.Client, path: str, body: str | bytes) -> httpx.Response:
    return http.post(path, content=body, headers={"Content-Type": "application/json"})


def test_filter_raw_scheduler_body_field_by_field(http: httpx.Client, store: InMemoryStore) -> None:
    pod = store.create_pod(pod_manifest("train-1", mem="10000"))
    body = RAW_FILTER.replace('"RV"', json.dumps(pod["metadata"]["resourceVersion"])).replace(
        "7c1e0b2a-1111-2222-3333-444455556666", pod["metadata"]["uid"])
    r = post_raw(http, "/filter", body)
    assert r.status_code == 200
    doc = r.json()
    assert list(doc) == FILTER_KEYS
    assert doc["Nodes"] is None
    assert doc["Error"] == ""
    assert doc["FailedAndUnresolvableNodes"] == {}
    assert isinstance(doc["NodeNames"], list) and len(doc["NodeNames"]) == 1  # exactly one node, like HAMi
    chosen = doc["NodeNames"][0]
    assert chosen in ("mig-0", "mig-1", "share-0")
    # every other candidate has a reason a person can read
    assert set(doc["FailedNodes"]) == {"mig-0", "mig-1", "share-0"} - {chosen}
    assert all(isinstance(v, str) and v for v in doc["FailedNodes"].values())
    # the reservation is in the pod's annotations
    ann = store.get_pod("ml", "train-1")["metadata"]["annotations"]
    assert ann[POD_NODE] == chosen
    alloc = decode_allocation(ann[POD_ALLOCATION])
    assert alloc.node == chosen and alloc.pod == "ml/train-1" and len(alloc.units) == 1
    assert alloc.units[0].memory_mib >= 10000
    assert float(ann[POD_PLAN_TIME]) > 0
    # raw bytes: canonical keys, no floats anywhere
    assert b'"NodeNames":[' in r.content and b'"Error":""' in r.content


def test_filter_non_gpu_pod_echoes_node_names(http: httpx.Client, store: InMemoryStore) -> None:
    pod = store.create_pod({"metadata": {"name": "web", "namespace": "ml"},
                            "spec": {"containers": [{"name": "c", "resources": {"limits": {"cpu": "1"}}}]}})
    r = http.post("/filter", json=filter_body(pod, ["a", "b", "mig-0"]))
    assert r.status_code == 200
    assert r.json() == {"Nodes": None, "NodeNames": ["a", "b", "mig-0"], "FailedNodes": {},
                        "FailedAndUnresolvableNodes": {}, "Error": ""}
    assert POD_ALLOCATION not in (store.get_pod("ml", "web")["metadata"].get("annotations") or {})


def test_filter_nothing_fits_returns_empty_list_and_reasons(http: httpx.Client, store: InMemoryStore) -> None:
    pod = store.create_pod(pod_manifest("huge", mem="90000"))
    doc = http.post("/filter", json=filter_body(pod, ["mig-0", "mig-1", "share-0", "cpu-node"])).json()
    assert doc["NodeNames"] == []
    assert doc["Error"] == ""
    assert set(doc["FailedNodes"]) == {"mig-0", "mig-1", "share-0", "cpu-node"}
    assert "90000 MiB" in doc["FailedNodes"]["mig-0"]
    assert "dynamig.io/node-gpus" in doc["FailedNodes"]["cpu-node"]


def test_filter_null_node_names_and_no_nodes(http: httpx.Client, store: InMemoryStore) -> None:
    pod = store.create_pod(pod_manifest("p"))
    doc = post_raw(http, "/filter", json.dumps({"Pod": filter_body(pod, None)["Pod"], "Nodes": None,
                                                 "NodeNames": None})).json()
    assert doc["NodeNames"] == [] and doc["Error"] == ""


def test_filter_node_cache_capable_false_returns_nodes(http: httpx.Client, store: InMemoryStore) -> None:
    pod = store.create_pod(pod_manifest("p", mem="3000"))
    items = [{"metadata": {"name": n, "labels": None}, "status": {}} for n in ("mig-0", "mig-1")]
    body = {"Pod": filter_body(pod, None)["Pod"], "Nodes": {"metadata": {}, "items": items}, "NodeNames": None}
    doc = http.post("/filter", json=body).json()
    assert doc["NodeNames"] and len(doc["Nodes"]["items"]) == 1
    assert doc["Nodes"]["items"][0]["metadata"]["name"] == doc["NodeNames"][0]


def test_filter_invalid_gpu_request_is_unresolvable(http: httpx.Client, store: InMemoryStore) -> None:
    pod = store.create_pod(pod_manifest("bad", mem="0"))
    doc = http.post("/filter", json=filter_body(pod, ["mig-0"])).json()
    assert doc["NodeNames"] == [] and doc["Error"] == ""
    assert "gpumem" in doc["FailedAndUnresolvableNodes"]["mig-0"]


@pytest.mark.parametrize("body", [
    b"", b"{", b"[]", b"null", b'"x"', b'{"Pod": null}', b'{"Pod": []}', b'{"Pod": {"metadata": {}}}',
    b'{"Pod": {"metadata": {"name": "x"}}, "NodeNames": "a"}',
    b'{"Pod": {"metadata": {"name": "x"}}, "NodeNames": [1, 2]}',
    b'{"Pod": {"metadata": {"name": "x"}}, "Nodes": {"items": [{}]}}',
    b'{"Pod": {"metadata": {"name": "x"}}, "Nodes": {"items": [{"metadata": [1]}]}}',
    b'{"Pod": {"metadata": {"name": "x", "namespace": 7}}}',
    b'{"Pod": {"metadata": {"name": "x"}, "spec": {"containers": [{"securityContext": 1}]}}}',
    b'{"Pod": {"metadata": {"name": "x"}, "spec": {"containers": "c"}}}',
    b'{"Pod": {"metadata": {"name": "x"}, "spec": {"containers": [{"resources": {"limits": []}}]}}}',
    b'{"Pod": {"metadata": {"name": "x", "annotations": []}}}',
    b"\xff\xfe",
])
@pytest.mark.parametrize("verb", ["/filter", "/prioritize"])
def test_malformed_extender_args_are_400(shared_http: httpx.Client, verb: str, body: bytes) -> None:
    r = post_raw(shared_http, verb, body)
    assert r.status_code == 400, r.text
    assert r.json()["Error"]


@pytest.mark.parametrize("body", [b"", b"{", b"[]", b'{"PodName": 1}', b'{"PodName": "a"}',
                                  b'{"PodName": "a", "Node": null}', b'{"Node": "n"}'])
def test_malformed_binding_args_are_400(shared_http: httpx.Client, body: bytes) -> None:
    r = post_raw(shared_http, "/bind", body)
    assert r.status_code == 400 and r.json()["Error"]


def test_prioritize_integer_scores(http: httpx.Client, store: InMemoryStore) -> None:
    pod = store.create_pod(pod_manifest("p", mem="3000"))
    chosen = http.post("/filter", json=filter_body(pod, ["mig-0", "mig-1", "share-0"])).json()["NodeNames"][0]
    pod = store.get_pod("ml", "p")
    r = http.post("/prioritize", json=filter_body(pod, ["mig-0", "mig-1", "share-0", "ghost"]))
    assert r.status_code == 200
    doc = r.json()
    assert isinstance(doc, list)  # a bare HostPriorityList
    assert [d["Host"] for d in doc] == ["mig-0", "mig-1", "share-0", "ghost"]
    assert all(list(d) == ["Host", "Score"] for d in doc)
    assert all(type(d["Score"]) is int and 0 <= d["Score"] <= 10 for d in doc)
    scores = {d["Host"]: d["Score"] for d in doc}
    assert scores[chosen] == 10
    assert scores["ghost"] == 0
    assert all(s < 10 for h, s in scores.items() if h != chosen)
    assert b"." not in r.content.replace(b"mig-", b"")  # no float anywhere


def test_prioritize_non_gpu_pod_all_zero(shared_http: httpx.Client) -> None:
    http = shared_http
    body = {"Pod": {"metadata": {"name": "w", "namespace": "x"}, "spec": {"containers": [{"name": "c"}]}},
            "Nodes": None, "NodeNames": ["a", "b"]}
    assert http.post("/prioritize", json=body).json() == [{"Host": "a", "Score": 0}, {"Host": "b", "Score": 0}]


def test_bind_takes_lock_stamps_and_binds(http: httpx.Client, store: InMemoryStore) -> None:
    pod = store.create_pod(pod_manifest("p", mem="3000"))
    node = http.post("/filter", json=filter_body(pod, ["mig-0", "mig-1"])).json()["NodeNames"][0]
    r = http.post("/bind", json=bind_body(pod, node))
    assert r.status_code == 200 and r.json() == {"Error": ""}
    got = store.get_pod("ml", "p")
    assert got["spec"]["nodeName"] == node
    assert got["metadata"]["annotations"][POD_BIND_PHASE] == "allocating"
    assert int(got["metadata"]["annotations"][POD_BIND_TIME]) > 0
    lock = decode_lock(store.get_node(node)["metadata"]["annotations"][NODE_LOCK])
    assert lock.pod == "ml/p" and lock.owner == "ext-test"
    # binding again: 409 from the API -> Error with HTTP 200, and the lock is not ours to keep
    r2 = http.post("/bind", json=bind_body(pod, node))
    assert r2.status_code == 200 and "already assigned" in r2.json()["Error"]


def test_bind_failure_releases_lock_and_reports(http: httpx.Client, store: InMemoryStore) -> None:
    pod = store.create_pod(pod_manifest("p", mem="3000"))
    node = http.post("/filter", json=filter_body(pod, ["mig-0"])).json()["NodeNames"][0]
    body = bind_body(pod, node)
    body["PodUID"] = "not-the-uid"
    r = http.post("/bind", json=body)
    assert r.status_code == 200 and "UID" in r.json()["Error"]
    assert NODE_LOCK not in store.get_node(node)["metadata"]["annotations"]
    # bind to a node other than the reserved one: refused, nothing locked
    r = http.post("/bind", json=bind_body(pod, "mig-1" if node != "mig-1" else "mig-0"))
    assert "reserved on node" in r.json()["Error"]
    # unknown pod
    assert "not found" in http.post("/bind", json={"PodName": "nope", "PodNamespace": "ml", "PodUID": "",
                                                    "Node": node}).json()["Error"]


def test_bind_when_binding_post_fails_releases_lock(store: InMemoryStore) -> None:
    pod = store.create_pod(pod_manifest("p", mem="3000"))
    app = create_app(store, ExtenderConfig(identity="x"))
    with serve_in_thread(app) as h, httpx.Client(base_url=h.url) as http:
        node = http.post("/filter", json=filter_body(pod, ["mig-1"])).json()["NodeNames"][0]
        store.delete_pod("ml", "p")  # gone between filter and bind
        assert "not found" in http.post("/bind", json=bind_body(pod, node)).json()["Error"]
        assert NODE_LOCK not in store.get_node(node)["metadata"]["annotations"]


def test_refilter_replaces_reservation(http: httpx.Client, store: InMemoryStore) -> None:
    # mig-0 has a single A100-40GB: a whole-GPU pod fits there exactly once
    pod = store.create_pod(pod_manifest("whole", gpu="1"))
    first = http.post("/filter", json=filter_body(pod, ["mig-0"])).json()
    assert first["NodeNames"] == ["mig-0"]
    # filtered again (e.g. after a failed bind): its own old reservation must not block it
    pod = store.get_pod("ml", "whole")
    again = http.post("/filter", json=filter_body(pod, ["mig-0"])).json()
    assert again["NodeNames"] == ["mig-0"], again
    # but another whole-GPU pod cannot get mig-0
    other = store.create_pod(pod_manifest("other", gpu="1"))
    assert http.post("/filter", json=filter_body(other, ["mig-0"])).json()["NodeNames"] == []


def test_routes_under_extender_prefix_health_and_monitor(http: httpx.Client, store: InMemoryStore,
                                                         server: ServerHandle) -> None:
    pod = store.create_pod(pod_manifest("p", mem="3000"))
    assert http.post("/extender/filter", json=filter_body(pod, ["mig-0"])).json()["NodeNames"] == ["mig-0"]
    assert http.get("/healthz").text == "ok" and http.get("/readyz").status_code == 200
    page = http.get("/monitor")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "<script" in page.text and "http://" not in page.text and "https://" not in page.text  # no external assets
    st = http.get("/monitor/state").json()
    gpu = st["nodes"][0]["gpus"][0]
    assert st["nodes"][0]["name"] == "mig-0" and any(i["pod"] == "ml/p" for i in gpu["instances"])
    assert server.metrics_url and "hami_gpu_memory_limit_bytes" in httpx.get(server.metrics_url).text


def test_readyz_follows_leadership(store: InMemoryStore) -> None:
    leader = {"on": False}
    app = create_app(store, ExtenderConfig(is_leader=lambda: leader["on"]))
    pod = store.create_pod(pod_manifest("p", mem="3000"))
    with serve_in_thread(app) as h, httpx.Client(base_url=h.url) as http:
        assert http.get("/readyz").status_code == 503
        assert "not the leader" in http.post("/filter", json=filter_body(pod, ["mig-0"])).json()["Error"]
        leader["on"] = True
        assert http.get("/readyz").status_code == 200
        assert http.post("/filter", json=filter_body(pod, ["mig-0"])).json()["NodeNames"] == ["mig-0"]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_tls(tmp_path: Path, store: InMemoryStore) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    pod = store.create_pod(pod_manifest("p", mem="3000"))
    app = create_app(store, ExtenderConfig())
    with serve_in_thread(app, ssl_certfile=str(cert), ssl_keyfile=str(key)) as h:
        assert h.url.startswith("https://")
        # kube-scheduler with enableHTTPS and no CA skips verification; so does this client
        with httpx.Client(base_url=h.url, verify=False) as http:
            assert http.post("/filter", json=filter_body(pod, ["mig-0"])).json()["NodeNames"] == ["mig-0"]
        with pytest.raises(httpx.HTTPError), httpx.Client(base_url=h.url.replace("https", "http")) as plain:
            plain.get("/healthz")


JSON = st.recursive(st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=4),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                    max_leaves=8)
POD_KEYS = st.sampled_from(["metadata", "spec", "status", "containers", "resources", "limits", "name",
                            "nvidia.com/gpu", "nvidia.com/gpumem", "annotations", "initContainers"])


def shaped(draw: st.DrawFn, depth: int = 0) -> object:
    if depth > 3 or draw(st.booleans()):
        return draw(JSON)
    return {draw(POD_KEYS): shaped(draw, depth + 1) for _ in range(draw(st.integers(0, 3)))}


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzzed_bodies_never_500(shared_http: httpx.Client, data: st.DataObject) -> None:
    pod = data.draw(st.builds(lambda p: p, st.composite(shaped)()))
    if isinstance(pod, dict) and data.draw(st.booleans()):
        pod.setdefault("metadata", {"name": "fuzz", "namespace": "f"})
    verb = data.draw(st.sampled_from(["/filter", "/prioritize", "/bind", "/webhook"]))
    if verb == "/webhook":
        body = {"request": {"uid": "u", "operation": data.draw(st.sampled_from(["CREATE", "UPDATE", 7])),
                            "object": pod, "oldObject": data.draw(JSON), "userInfo": data.draw(JSON)}}
    elif verb == "/bind":
        body = {"PodName": data.draw(JSON), "PodNamespace": "x", "PodUID": "", "Node": data.draw(JSON)}
    else:
        body = {"Pod": pod, "Nodes": data.draw(JSON), "NodeNames": data.draw(st.none() | st.lists(st.text(max_size=3)))}
    r = shared_http.post(verb, json=body)
    assert r.status_code in (200, 400), (verb, body, r.text)
    doc = r.json()
    if r.status_code == 200 and verb in ("/filter", "/bind"):
        assert isinstance(doc["Error"], str)
    if r.status_code == 200 and verb == "/webhook":
        assert doc["response"]["uid"] == "u"
