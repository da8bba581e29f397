"""The chart grants no verb the code does not use, and the code uses no verb the chart does not grant.

Every API call the Kubernetes adapter can make is driven against the fake API server; its request
log, mapped to (API group, resource, verb), must equal the chart's rules for the extender (the
device plugin uses the same store minus Binding and the Lease).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fakes.apiserver import FakeApiServer
from test_chart import EXPECTED_RBAC

from kube import KubeClient, KubeStore, LeaderElector
from models import nodelock

PATH = re.compile(r"^/(?:api/v1|apis/(?P<group>[^/]+)/v1)(?:/namespaces/(?P<ns>[^/]+))?/(?P<res>[a-z]+)"
                  r"(?:/(?P<name>[^/?]+))?(?:/(?P<sub>[a-z]+))?")


def verbs_used(api: FakeApiServer) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for method, path, _, _ in list(api.requests):
        m = PATH.match(path.split("?")[0])
        assert m, path
        group = m.group("group") or ""
        resource = f"{m.group('res')}/{m.group('sub')}" if m.group("sub") else m.group("res")
        verb = {"GET": "watch" if path.endswith("?watch") else ("get" if m.group("name") else "list"),
                "PATCH": "patch", "POST": "create", "PUT": "update", "DELETE": "delete"}[method]
        out.setdefault((group, resource), set()).add(verb)
    return out


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    srv = FakeApiServer()
    srv.start()
    srv.add_node({"metadata": {"name": "n1"}})
    srv.add_namespace("ml")
    yield srv
    srv.stop()


def test_extender_calls_match_the_chart_rbac(api: FakeApiServer) -> None:
    store = KubeStore(KubeClient.for_host(api.url), watch_timeout_s=1, backoff_min_s=0.05)
    store.start()
    try:
        assert store.wait_synced(5)
        api.create_pod({"metadata": {"name": "p", "namespace": "ml"},
                     "spec": {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}})
        pod = store.get_pod("ml", "p")
        store.patch_pod_annotations("ml", "p", {"dynamig.io/x": "1"}, pod["metadata"]["resourceVersion"])
        nodelock.acquire(store, "n1", "ml/p", "ext", now=1.0)
        nodelock.release(store, "n1", "ml/p")
        store.bind("ml", "p", pod["metadata"]["uid"], "n1")
        store.namespace_labels("ml")
        LeaderElector(KubeClient.for_host(api.url), "dynamig", "dynamig-extender", "me").try_acquire_or_renew()
    finally:
        store.stop()
    used = verbs_used(api)
    granted = EXPECTED_RBAC["extender"]
    for key, verbs in used.items():
        assert verbs <= granted.get(key, set()), f"code uses {key} {verbs - granted.get(key, set())} not granted"
    for key, verbs in granted.items():
        if key == ("coordination.k8s.io", "leases"):
            verbs = verbs - {"update"}  # a renewal (PUT) needs a second round; covered by test_kube_store
        assert verbs <= used.get(key, set()), f"chart grants {key} {verbs - used.get(key, set())}, code never uses it"
    dp = EXPECTED_RBAC["device-plugin"]
    for key in (("", "pods"), ("", "nodes")):
        assert used[key] <= dp[key]


def test_device_plugin_events_match_the_chart_rbac(api: FakeApiServer) -> None:
    from kube.client import EventRecorder

    pod = api.create_pod({"metadata": {"name": "p", "namespace": "ml"}, "spec": {"containers": [{"name": "c"}]}})
    EventRecorder(KubeClient.for_host(api.url), "dynamig-device-plugin", "n1").pod_event(
        pod, "DynamigAllocationNotProven", "x" * 5000)
    (ev,) = api.events
    assert ev["involvedObject"] == {"apiVersion": "v1", "kind": "Pod", "namespace": "ml", "name": "p",
                                    "uid": pod["metadata"]["uid"]}
    assert ev["reason"] == "DynamigAllocationNotProven" and len(ev["message"]) == 1024 and ev["type"] == "Warning"
    assert ev["source"] == {"component": "dynamig-device-plugin", "host": "n1"}
    used = verbs_used(api)
    assert used[("", "events")] == {"create"} <= EXPECTED_RBAC["device-plugin"][("", "events")]
    # best effort: an API error is logged, not raised
    api.failures.append(("POST", "/events", 500))
    EventRecorder(KubeClient.for_host(api.url), "c", "n1").pod_event(pod, "R", "m")
