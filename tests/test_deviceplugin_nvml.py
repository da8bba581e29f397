"""The device plugin with the ``nvml`` applier: Allocate changes a busy GPU in part through
``deviceplugin.apply.Relayout`` (held instances untouched), the registration publishes the applier
and the orphans adoption finds, and after any injected NVML failure it reports what NVML has.

Table-driven over the simulated backend's MigOps with ``faults.nvml`` (the same calls and errors as
``tests/fakes/fake_pynvml.py``).
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from deviceplugin.backend import (
    NVML_ERROR_IN_USE,
    NVML_ERROR_INSUFFICIENT_RESOURCES,
    NVML_ERROR_UNKNOWN,
)
from models.codecs import POD_ALLOC_ERROR, POD_BIND_PHASE
from models.types import Applier
from tests.fakes.kubelet import NodeHarness

A100 = "A100-SXM4-40GB"
SMALL = [("1g.5gb", 0)]
GROWN = [("1g.5gb", 0), ("3g.20gb", 4)]


@pytest.fixture
def nvml_node() -> Iterator[NodeHarness]:
    with NodeHarness([(A100, 1)], mode="mig", applier=Applier.NVML) as h:
        yield h


def registered(h: NodeHarness) -> set[tuple[str, int, str]]:
    h.agent.refresh()
    return {(i.slot.profile, i.slot.start, i.uuid) for i in h.registration().gpus[0].instances}


def reported(h: NodeHarness) -> set[tuple[str, int, str]]:
    return {(d.profile, d.start, d.uuid) for d in h.gpu(0).instances}


def hold_small(h: NodeHarness) -> str:
    h.pod("p1", [{"gpu": 0, "profile": "1g.5gb", "start": 0}], [{"gpu": 0, "slots": SMALL}])
    h.kubelet.admit(1)
    inst = h.gpu(0).instance_at("1g.5gb", 0)
    assert inst is not None and h.agent.relayout.counts == {"whole": 1, "partial": 0}
    return str(inst.uuid)


def grow(h: NodeHarness, name: str) -> grpc.RpcError | None:
    h.pod(name, [{"gpu": 0, "profile": "3g.20gb", "start": 4}], [{"gpu": 0, "slots": GROWN, "incremental": True}])
    try:
        h.kubelet.admit(1)
    except grpc.RpcError as e:
        return e
    return None


def test_registration_publishes_the_applier(nvml_node: NodeHarness) -> None:
    assert nvml_node.registration().applier is Applier.NVML


def test_a_partial_change_keeps_the_held_instance(nvml_node: NodeHarness) -> None:
    h = nvml_node
    held = hold_small(h)
    assert grow(h, "p2") is None
    g = h.gpu(0)
    assert g.instance_at("1g.5gb", 0).uuid == held  # untouched: same UUID
    assert g.instance_at("3g.20gb", 4) is not None
    assert h.agent.relayout.counts == {"whole": 1, "partial": 1}
    assert h.annotations("p2")[POD_BIND_PHASE] == "success"
    assert registered(h) == reported(h)


#: (injected NVML failures, in call order) -> the first Allocate fails; a retry converges.
FAULTS = [
    [("create_gpu_instance", NVML_ERROR_UNKNOWN)],
    [("create_gpu_instance", NVML_ERROR_INSUFFICIENT_RESOURCES)],
    [("create_compute_instance", NVML_ERROR_UNKNOWN)],
    [("create_compute_instance", NVML_ERROR_UNKNOWN), ("destroy_gpu_instance", NVML_ERROR_IN_USE)],
]


@pytest.mark.parametrize("faults", FAULTS, ids=lambda f: "+".join(c for c, _ in f))
def test_injected_nvml_failures_leave_a_truthful_registration(nvml_node: NodeHarness,
                                                              faults: list[tuple[str, int]]) -> None:
    h = nvml_node
    held = hold_small(h)
    for call, code in faults:
        h.backend.inject_nvml_failure(call, code)
    err = grow(h, "p2")
    assert err is not None and err.code() is grpc.StatusCode.FAILED_PRECONDITION
    ann = h.annotations("p2")
    assert ann[POD_BIND_PHASE] == "failed" and ann[POD_ALLOC_ERROR]
    assert h.gpu(0).instance_at("1g.5gb", 0).uuid == held  # the held instance survived the failure
    assert registered(h) == reported(h)  # what NVML has, nothing cached
    assert grow(h, "p3") is None  # re-running the same change converges
    assert h.gpu(0).instance_at("1g.5gb", 0).uuid == held
    assert h.gpu(0).instance_at("3g.20gb", 4) is not None
    assert registered(h) == reported(h)


def test_a_mig_parted_node_refuses_a_partial_change() -> None:
    with NodeHarness([(A100, 1)], mode="mig") as h:
        h.pod("p1", [{"gpu": 0, "profile": "1g.5gb", "start": 0}], [{"gpu": 0, "slots": SMALL}])
        h.kubelet.admit(1)
        held = h.gpu(0).instance_at("1g.5gb", 0).uuid
        assert h.registration().applier is Applier.MIG_PARTED
        err = grow(h, "p2")
        assert err is not None and "re-cuts whole GPUs with nvidia-mig-parted" in err.details()
        assert reported(h) == {("1g.5gb", 0, held)}


def test_adoption_reports_an_instance_no_pod_holds_as_an_orphan(nvml_node: NodeHarness) -> None:
    h = nvml_node
    hold_small(h)
    with h.backend.transaction() as st:  # a process nobody accounts for, on a new instance
        x = st.create_gpu_instance(0, "1g.5gb", 1, with_ci=True)
        st.gpu(0)["processes"].append({"pid": 4242, "used_memory_mib": 100, "mig_uuid": x["uuid"]})
    h.agent.refresh()
    reg = h.registration()
    assert [(o.profile, o.start, o.reason) for o in reg.orphans] == [("1g.5gb", 1, "process")]
    assert h.agent.adoption is not None and any(a.state == "held" for a in h.agent.adoption.instances)
