"""Finding 3 of issue 15: pod-writable annotations are not proof. Each consequence measured there is
reproduced here against the real device plugin (gRPC, simulated GPUs) and the extender's state
rebuild, with an allocation key configured as the chart does."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_extender_support import memory_store, pod_manifest

from deviceplugin.agent import REASON_NOT_PROVEN
from deviceplugin.ledger import Served, ServedLedger
from extender import ExtenderConfig
from extender.core import Extender
from extender.wire import BindingArgs, ExtenderArgs
from models.cluster import state_from_objects
from models.codecs import (
    POD_ALLOC_ERROR,
    POD_ALLOCATED,
    POD_ALLOCATION,
    POD_ALLOCATION_SIG,
    POD_BIND_PHASE,
    POD_NODE,
    AllocatedUnit,
    PodAllocation,
    encode_allocated,
    encode_allocation,
)
from models.errors import ConfigError
from models.layouts import Slot
from models.plan import LayoutChange, UnitAssignment
from models.signing import Keyring, load_keyring, parse_keyring, sign_reservation, signature_problem
from models.types import UnitKind
from tests.fakes.kubelet import NodeHarness

A100 = "A100-SXM4-40GB"
KEYS = Keyring((b"k" * 40,))
OTHER = Keyring((b"o" * 40,))


def sign(h: NodeHarness, name: str, keys: Keyring = KEYS, namespace: str = "default") -> None:
    """What the extender does at reservation time, for a pod the harness created."""
    pod = h.store.get_pod(namespace, name)
    ann = pod["metadata"]["annotations"]
    h.store.patch_pod_annotations(namespace, name, {
        POD_ALLOCATION_SIG: sign_reservation(keys, pod["metadata"]["uid"], f"{namespace}/{name}", ann)})


@pytest.fixture
def node() -> Iterator[tuple[NodeHarness, list[tuple[str, str, str]]]]:
    events: list[tuple[str, str, str]] = []
    with NodeHarness([(A100, 2)], mode="mig", allocation_keys=KEYS) as h:
        h.agent.events = lambda pod, reason, msg: events.append(
            (f"{pod['metadata']['namespace']}/{pod['metadata']['name']}", reason, msg))
        yield h, events


# ----------------------------------------------------------------------------- the signature itself


def test_signature_binds_uid_name_node_plan_time_and_allocation() -> None:
    ann = {POD_ALLOCATION: '{"v":1}', POD_NODE: "n1", "dynamig.io/plan-time": "1.5"}
    pod = {"metadata": {"name": "p", "namespace": "ml", "uid": "u1", "annotations": dict(ann)}}
    pod["metadata"]["annotations"][POD_ALLOCATION_SIG] = sign_reservation(KEYS, "u1", "ml/p", ann)
    assert signature_problem(pod, KEYS) is None
    assert signature_problem(pod, None) is None  # unsigned mode trusts everything
    for path, value in ((("uid",), "u2"), (("name",), "q"), (("namespace",), "other"),
                        (("annotations", POD_NODE), "n2"), (("annotations", "dynamig.io/plan-time"), "2"),
                        (("annotations", POD_ALLOCATION), '{"v":1} ')):
        bad = json.loads(json.dumps(pod))
        target = bad["metadata"]
        for p in path[:-1]:
            target = target[p]
        target[path[-1]] = value
        assert "does not match" in (signature_problem(bad, KEYS) or ""), path
    assert "which this component does not hold" in (signature_problem(pod, OTHER) or "")
    del pod["metadata"]["annotations"][POD_ALLOCATION_SIG]
    assert "not signed" in (signature_problem(pod, KEYS) or "")
    # rotation: a keyring holding the old key as its second line still verifies
    pod["metadata"]["annotations"][POD_ALLOCATION_SIG] = sign_reservation(KEYS, "u1", "ml/p", ann)
    assert signature_problem(pod, Keyring((b"n" * 40, b"k" * 40))) is None
    assert "k" * 40 not in repr(KEYS)


@settings(max_examples=150, deadline=None)
@given(field=st.sampled_from(["uid", "name", "namespace", POD_NODE, "dynamig.io/plan-time", POD_ALLOCATION]),
       value=st.text(max_size=12), uid=st.text(min_size=1, max_size=12), alloc=st.text(min_size=1, max_size=40))
def test_any_change_of_a_signed_field_breaks_the_signature(field: str, value: str, uid: str, alloc: str) -> None:
    ann = {POD_ALLOCATION: alloc, POD_NODE: "n1", "dynamig.io/plan-time": "1.5"}
    meta: dict[str, Any] = {"name": "p", "namespace": "ml", "uid": uid, "annotations": dict(ann)}
    meta["annotations"][POD_ALLOCATION_SIG] = sign_reservation(KEYS, uid, "ml/p", ann)
    assert signature_problem({"metadata": meta}, KEYS) is None
    bad = json.loads(json.dumps(meta))
    target = bad if field in ("uid", "name", "namespace") else bad["annotations"]
    old = target[field]
    target[field] = value
    changed = value != old and not (field == "namespace" and not value and old == "default")
    assert (signature_problem({"metadata": bad}, KEYS) is None) is (not changed)


def test_key_files(tmp_path: Any) -> None:
    f = tmp_path / "key"
    f.write_text("# rotated 2026-12\n" + "a" * 32 + "\n\n  " + "b" * 40 + "  \n")
    assert load_keyring(str(f)).keys == (b"a" * 32, b"b" * 40)
    for text, msg in (("", "no key"), ("short\n", "line 1: key is 5 characters")):
        with pytest.raises(ConfigError, match=msg):
            parse_keyring(text, "k")
    with pytest.raises(ConfigError, match="cannot read the allocation key"):
        load_keyring(str(tmp_path / "missing"))


# ----------------------------------------------------------------------------- device plugin


def forged_pod(h: NodeHarness, name: str, units: list[dict[str, Any]], layouts: list[dict[str, Any]] = (),
               lock: bool = False) -> None:
    """A pod its owner created with spec.nodeName and hand-written dynamig.io/ annotations."""
    h.pod(name, units, layouts, lock=lock)


def test_a_forged_allocation_with_node_name_gets_no_gpu_repartitioned(node: Any) -> None:
    h, events = node
    before = h.gpu(0).profile_counts()
    forged_pod(h, "thief", [{"gpu": 0, "profile": "7g.40gb", "start": 0}], [{"gpu": 0, "slots": [("7g.40gb", 0)]}])
    with pytest.raises(grpc.RpcError) as err:
        h.kubelet.admit(1)
    assert "allocation not proven" in err.value.details() and "default/thief" in err.value.details()
    assert h.agent.applier.applies == 0 and h.gpu(0).profile_counts() == before
    assert [(k, r) for k, r, _ in events] == [("default/thief", REASON_NOT_PROVEN)]
    assert "not signed" in events[0][2]
    ann = h.annotations("thief")
    assert ann[POD_BIND_PHASE] == "failed" and "no device for this pod" in ann[POD_ALLOC_ERROR]
    # copying a genuine signature from another pod does not help either
    h.pod("genuine", [{"gpu": 1, "profile": "7g.40gb", "start": 0}], [{"gpu": 1, "slots": [("7g.40gb", 0)]}],
          lock=False)
    sign(h, "genuine")
    sig = h.annotations("genuine")[POD_ALLOCATION_SIG]
    h.store.patch_pod_annotations("default", "genuine", {POD_BIND_PHASE: "failed"})
    forged_pod(h, "copycat", [{"gpu": 1, "profile": "7g.40gb", "start": 0}], [{"gpu": 1, "slots": [("7g.40gb", 0)]}])
    h.store.patch_pod_annotations("default", "copycat", {POD_ALLOCATION_SIG: sig})
    with pytest.raises(grpc.RpcError) as err:
        h.kubelet.admit(1)
    assert "does not match" in err.value.details() and h.agent.applier.applies == 0


def test_a_forged_pod_next_to_the_lock_holder_neither_fails_it_nor_gets_its_instance(node: Any) -> None:
    h, events = node
    lay = [("3g.20gb", 0), ("3g.20gb", 4)]
    h.pod("victim", [{"gpu": 0, "profile": "3g.20gb", "start": 0}], [{"gpu": 0, "slots": lay}])  # takes the lock
    sign(h, "victim")
    forged_pod(h, "thief", [{"gpu": 0, "profile": "3g.20gb", "start": 0}], [{"gpu": 0, "slots": lay}])
    _, resp = h.kubelet.admit(1)  # kubelet admits the victim
    inst = h.gpu(0).instance_at("3g.20gb", 0)
    assert dict(resp.envs) == {"NVIDIA_VISIBLE_DEVICES": inst.uuid}
    assert h.annotations("victim")[POD_BIND_PHASE] == "success"
    with pytest.raises(grpc.RpcError):  # kubelet admits the thief
        h.kubelet.admit(1)
    assert h.annotations("victim")[POD_BIND_PHASE] == "success"
    assert h.annotations("thief")[POD_BIND_PHASE] == "failed"
    assert {k for k, _, _ in events} == {"default/thief"}


def test_a_forged_allocated_annotation_does_not_block_repartitioning(node: Any) -> None:
    h, _ = node
    g = h.gpu(0)
    squatter = pod_manifest("squatter", ns="default", annotations={
        POD_ALLOCATED: encode_allocated((AllocatedUnit(0, 0, g.uuid),)), POD_BIND_PHASE: "success"})
    squatter["spec"]["nodeName"] = h.node
    h.store.create_pod(squatter)
    h.store.set_pod_phase("default", "squatter", "Running")
    h.pod("p1", [{"gpu": 0, "profile": "7g.40gb", "start": 0}], [{"gpu": 0, "slots": [("7g.40gb", 0)]}])
    sign(h, "p1")
    _, resp = h.kubelet.admit(1)
    assert h.agent.applier.applies == 1 and h.gpu(0).profile_counts() == {"7g.40gb": 1}
    assert dict(resp.envs)["NVIDIA_VISIBLE_DEVICES"] == h.gpu(0).instance_at("7g.40gb", 0).uuid


def test_a_running_pod_stripped_of_its_annotations_keeps_its_instance(node: Any) -> None:
    h, _ = node
    lay = [("3g.20gb", 0), ("3g.20gb", 4)]
    h.pod("p1", [{"gpu": 0, "profile": "3g.20gb", "start": 0}], [{"gpu": 0, "slots": lay}])
    sign(h, "p1")
    _, resp = h.kubelet.admit(1)
    mig = resp.envs["NVIDIA_VISIBLE_DEVICES"]
    h.store.set_pod_phase("default", "p1", "Running")
    h.store.patch_pod_annotations("default", "p1",
                                  {k: None for k in h.annotations("p1") if k.startswith("dynamig.io/")})
    # a second pod planned on the same instance is refused ...
    h.pod("p2", [{"gpu": 0, "profile": "3g.20gb", "start": 0}], [{"gpu": 0, "slots": lay}])
    sign(h, "p2")
    with pytest.raises(grpc.RpcError) as err:
        h.kubelet.admit(1)
    assert f"({mig}) on GPU 0 is already allocated to default/p1" in err.value.details()
    # ... and so is a pod whose plan re-partitions the GPU under it
    h.pod("p3", [{"gpu": 0, "profile": "7g.40gb", "start": 0}], [{"gpu": 0, "slots": [("7g.40gb", 0)]}])
    sign(h, "p3")
    with pytest.raises(grpc.RpcError) as err:
        h.kubelet.admit(1)
    assert "holds allocated instances (default/p1" in err.value.details()
    assert h.agent.applier.applies == 1 and h.gpu(0).instance_at("3g.20gb", 0).uuid == mig
    # the record survives a plugin restart (it lives beside the kubelet socket)
    again = ServedLedger(h.agent.ledger.path)
    assert [(s.pod, s.device) for s in again.entries()] == [("default/p1", mig)]
    # once p1 is over, its instance is free again
    h.store.set_pod_phase("default", "p1", "Succeeded")
    h.pod("p4", [{"gpu": 0, "profile": "3g.20gb", "start": 0}], [{"gpu": 0, "slots": lay}])
    sign(h, "p4")
    _, resp = h.kubelet.admit(1)
    assert resp.envs["NVIDIA_VISIBLE_DEVICES"] == mig
    assert [s.pod for s in h.agent.ledger.entries()] == ["default/p4"]


def test_unsigned_pods_get_nothing_and_a_key_mismatch_says_so(node: Any) -> None:
    h, events = node
    h.pod("p1", [{"gpu": 1, "profile": "7g.40gb", "start": 0}], [{"gpu": 1, "slots": [("7g.40gb", 0)]}])
    sign(h, "p1", OTHER)  # signed by an extender holding another key (a botched rotation)
    with pytest.raises(grpc.RpcError) as err:
        h.kubelet.admit(1)
    assert "does not hold" in err.value.details() and h.agent.applier.applies == 0
    assert events and events[0][1] == REASON_NOT_PROVEN


def test_ledger_drops_pods_that_are_gone_or_recreated(tmp_path: Any) -> None:
    path = os.path.join(str(tmp_path), "served.json")
    led = ServedLedger(path)
    led.record([Served("u1", "ml/a", 0, 0, "GPU-1", "MIG-1", 1.0), Served("u2", "ml/b", 0, 0, "GPU-1", "MIG-2", 1.0)])
    assert [s.uid for s in led.prune(lambda s: s.uid == "u2")] == ["u2"]
    assert [s.uid for s in ServedLedger(path).entries()] == ["u2"]
    with open(path, "w") as f:
        f.write("{not json")
    assert ServedLedger(path).entries() == ()  # unreadable: moved aside, logged, starts empty
    assert any(n.startswith("served.json.unreadable-") for n in os.listdir(str(tmp_path)))


# ----------------------------------------------------------------------------- extender


def test_extender_rebuild_ignores_forged_claims_and_reports_them() -> None:
    store = memory_store()
    ext = Extender(store, ExtenderConfig(allocation_keys=KEYS, validate_plans=True))
    honest = store.create_pod(pod_manifest("honest", gpu="1", mem="30000"))
    out = ext.filter(ExtenderArgs(honest, ["mig-0"], None))
    assert out.status == "placed"
    ann = store.get_pod("ml", "honest")["metadata"]["annotations"]
    assert signature_problem(store.get_pod("ml", "honest"), KEYS) is None
    # a forged claim on mig-1 (a whole-GPU layout and its instance), and a copy of the honest pod's claim
    target = snap_gpu = ext.snapshot().state.node("mig-1").gpus[0]
    unit = UnitAssignment("ml/thief", "main", 0, 0, "mig-1", target.uuid, 0, UnitKind.MIG, 40192, 100,
                          Slot("7g.40gb", 0), True, 3)
    claim = encode_allocation(PodAllocation("ml/thief", "mig-1", (unit,),
                                            (LayoutChange("mig-1", target.uuid, (Slot("7g.40gb", 0),), 3),)))
    thief = pod_manifest("thief", gpu="1", annotations={POD_ALLOCATION: claim, POD_NODE: "mig-1",
                                                        POD_ALLOCATION_SIG: ann[POD_ALLOCATION_SIG]})
    thief["spec"]["nodeName"] = "mig-1"
    store.create_pod(thief)
    copy = pod_manifest("copy", gpu="1", annotations=dict(ann))
    store.create_pod(copy)
    snap = ext.snapshot()
    assert not snap.state.node("mig-1").gpus[0].busy and snap.state.node("mig-1").gpus[0].layout == snap_gpu.layout
    held = [i.holder for n in snap.state.nodes for g in n.gpus for i in g.instances if i.holder]
    assert held and all(h.startswith("ml/honest") for h in held)
    assert {p.obj for p in snap.problems if "allocation ignored" in p.message} == {"pod ml/thief", "pod ml/copy"}
    # proof that the check matters: unsigned, the thief would hold mig-1's GPU
    unsigned, _ = state_from_objects(store.list_nodes(), store.list_pods())
    assert unsigned.node("mig-1").gpus[0].busy
    # bind refuses a pod whose reservation does not verify
    store.patch_pod_annotations("ml", "honest", {POD_ALLOCATION_SIG: "v1:00000000:00"})
    reason = ext.bind(BindingArgs("honest", "ml", honest["metadata"]["uid"], "mig-0"))
    assert "was signed with key 00000000" in reason and "must be filtered again" in reason


# ----------------------------------------------------------------------------- command line


@pytest.mark.parametrize("command", ["extender", "deviceplugin"])
def test_services_against_a_cluster_need_the_key(command: str, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    from dynamig.cli import main

    monkeypatch.delenv("DYNAMIG_ALLOCATION_KEY_FILE", raising=False)
    assert main([command, "--store", "kube"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--allocation-key-file" in err[0] and "Traceback" not in err[0]
    short = tmp_path / "key"
    short.write_text("too-short\n")
    assert main([command, "--store", "kube", "--allocation-key-file", str(short)]) == 1
    assert f"{short}: line 1: key is 9 characters" in capsys.readouterr().err


def test_extender_flags_reach_the_config(tmp_path: Any) -> None:
    import argparse

    from test_extender_support import INVENTORY

    from dynamig.commands import extender as cmd

    key = tmp_path / "key"
    key.write_text("s" * 48 + "\n")
    inv = tmp_path / "inv.yaml"
    inv.write_text(INVENTORY)
    ap = argparse.ArgumentParser()
    cmd.add_parser(ap.add_subparsers())
    args = ap.parse_args(["extender", "--store", "memory", "--inventory", str(inv), "--allocation-key-file", str(key),
                          "--trusted-user", "system:serviceaccount:d:ext", "--node-agent-user",
                          "system:serviceaccount:d:dp"])
    _, config, _ = cmd.build(args)
    assert config.allocation_keys == Keyring((b"s" * 48,))
    assert config.trusted_users == ("system:serviceaccount:d:ext",)
    assert config.node_agent_users == ("system:serviceaccount:d:dp",)
