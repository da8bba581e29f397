"""Node locks of dead extenders over a (fake) API server: the presence Lease (issue 15, finding 6).

An extender that crashed between taking a node lock and posting the Binding leaves the lock
behind. Its presence Lease (named after its pod, holder = its identity) says whether it still
runs: gone, held by another identity (the container restarted) or not renewed -> the lock is
broken at once instead of after ``lock_expiry_s``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fakes.apiserver import FakeApiServer
from test_extender_support import cluster, fake_plan, pod_manifest

from extender import ExtenderConfig
from extender.core import Extender
from extender.wire import BindingArgs, parse_extender_args
from kube import KubeClient, KubeStore
from kube.lease import PresenceLease, presence_lease_name
from models.codecs import NODE_LOCK, NodeLock
from models.store import node_objects

INVENTORY = """
nodes:
  - name: n1
    mode: mig
    gpus: {model: A100-SXM4-40GB, count: 2}
"""
NS = "dynamig-system"


class Clock:
    def __init__(self) -> None:
        self.t = 2_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    srv = FakeApiServer()
    srv.start()
    for n in node_objects(cluster(INVENTORY)):
        srv.add_node(n)
    yield srv
    srv.stop()


def test_presence_lease_names_and_liveness(api: FakeApiServer) -> None:
    clock = Clock()
    client = KubeClient.for_host(api.url)
    a = PresenceLease(client, NS, "sched-7f9c_aaaa", clock=clock)
    b = PresenceLease(client, NS, "sched-abcd_bbbb", clock=clock)
    assert a.name == presence_lease_name("sched-7f9c_aaaa") == "dynamig-extender-presence-sched-7f9c"
    assert a.renew() and b.renew()
    assert api.lease(NS, a.name)["spec"]["holderIdentity"] == "sched-7f9c_aaaa"
    assert b.is_alive("sched-7f9c_aaaa")
    assert not b.is_alive("sched-7f9c_cccc")  # same pod, another process: the old one is dead
    assert not b.is_alive("gone-pod_dddd")  # no Lease at all
    clock.t += 31
    assert not b.is_alive("sched-7f9c_aaaa")  # not renewed within its duration
    assert a.renew()
    assert b.is_alive("sched-7f9c_aaaa")
    # a restarted container of the same pod takes the Lease over
    a2 = PresenceLease(client, NS, "sched-7f9c_eeee", clock=clock)
    assert a2.renew()
    assert not b.is_alive("sched-7f9c_aaaa") and b.is_alive("sched-7f9c_eeee")


def test_lock_of_a_crashed_extender_is_broken_at_once(api: FakeApiServer) -> None:
    clock = Clock()
    client = KubeClient.for_host(api.url)
    store = KubeStore(client, watch_timeout_s=1, backoff_min_s=0.05, backoff_max_s=0.2).start()
    try:
        assert store.wait_synced(10)
        me = PresenceLease(client, NS, "sched-new_1111", clock=clock)
        me.renew()
        dead = PresenceLease(client, NS, "sched-old_2222", clock=clock)
        dead.renew()
        ext = Extender(store, ExtenderConfig(planner=fake_plan, planner_config=object(), identity=me.identity,
                                             clock=clock, holder_alive=me.is_alive))
        for name in ("a", "b"):
            api.create_pod(pod_manifest(name, mem="9000"))
        for name in ("a", "b"):
            pod = store.get_pod("ml", name)
            out = ext.filter(parse_extender_args({"Pod": pod, "NodeNames": ["n1"]}))
            assert out.result["NodeNames"] == ["n1"], out.result
        # the old extender took the lock for "a" and is still renewing: the lock holds
        store.patch_node_annotations("n1", {NODE_LOCK: NodeLock(clock(), "ml/a", dead.identity).encode()})
        b = store.get_pod("ml", "b")
        assert "locked" in ext.bind(BindingArgs("b", "ml", b["metadata"]["uid"], "n1"))
        # it crashes: 31 s without renewal (we keep renewing ours); the lock's pod is unbound
        clock.t += 31
        me.renew()
        assert ext.bind(BindingArgs("b", "ml", b["metadata"]["uid"], "n1")) == ""
        assert api.pod("ml", "b")["spec"]["nodeName"] == "n1"
    finally:
        store.stop()
