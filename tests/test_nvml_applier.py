"""The nvml applier over a fake pynvml and over the simulated backend; the relayout dispatcher;
restart adoption.

Properties: whatever NVML fails (injected errors before or after a call takes effect), a held or
running instance is never destroyed, and what the node registration publishes (read back through
NvmlBackend, encoded and decoded) is exactly what the GPU has; re-running the apply converges.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deviceplugin.adoption import adopt, adopt_backend, with_adoption
from deviceplugin.apply import Relayout, RelayoutError
from deviceplugin.backend import NVML_ERROR_IN_USE, NVML_ERROR_INSUFFICIENT_RESOURCES, GpuInfo
from deviceplugin.nvml import NvmlBackend
from deviceplugin.nvml_applier import NvmlApplier, NvmlApplyError
from deviceplugin.sim import SimBackend
from models.codecs import (
    POD_ALLOCATED,
    POD_ALLOCATION,
    POD_BIND_PHASE,
    AllocatedUnit,
    NodeRegistration,
    PodAllocation,
    decode_node,
    encode_allocated,
    encode_allocation,
    encode_node,
    orphan_holder,
)
from models.layouts import Slot, enumerate_layouts, is_valid, make_layout
from models.plan import UnitAssignment
from models.types import Applier, Gpu, MigInstance, NodeMode, UnitKind
from tests.fakes import fake_pynvml
from tests.fakes.fake_pynvml import FakeNvml

A100 = "A100-SXM4-80GB"
G1, G3, G7 = "1g.10gb", "3g.40gb", "7g.80gb"
MUTATING = set(fake_pynvml.MUTATING)


def seven_1g(fake: FakeNvml, index: int = 0) -> None:
    for s in range(7):
        fake.create(index, G1, s)


def slots(g: GpuInfo) -> list[tuple[str, int]]:
    return sorted((d.profile, d.start) for d in g.instances)


def registration(backend: NvmlBackend) -> NodeRegistration:
    """What a node agent publishes, round-tripped through the annotation codec."""
    gpus = tuple(Gpu(g.uuid, g.index, A100, NodeMode.MIG, g.memory_mib,
                     instances=tuple(MigInstance(Slot(d.profile, d.start), None, d.uuid) for d in g.instances))
                 for g in backend.gpus())
    return decode_node(encode_node(NodeRegistration(NodeMode.MIG, gpus, applier=Applier.NVML)))


def grow_3g() -> list[Slot]:
    return [Slot(G3, 0), Slot(G1, 4), Slot(G1, 5), Slot(G1, 6)]


# ----------------------------------------------------------------------------- the fake pynvml itself


def test_fake_nvml_models_placement_errors() -> None:
    fake = FakeNvml([A100])
    b = NvmlBackend(fake)
    fake.create(0, G1, 6)
    assert b.possible_placements(0, G3) == ((0, 4), (4, 4))  # whatever is occupied
    with pytest.raises(Exception) as e:
        b.create_gpu_instance(0, G3, 4)  # 1g@6 sits in slices 4-7
    assert getattr(e.value, "code", None) == NVML_ERROR_INSUFFICIENT_RESOURCES
    with pytest.raises(Exception) as e:
        b.create_gpu_instance(0, G3, 2)
    assert getattr(e.value, "code", None) == 2  # INVALID_ARGUMENT: not a placement
    gi = b.create_gpu_instance(0, G3, 0)
    assert [(r.profile, r.start, r.ci_ids) for r in b.gpu_instances(0)] == [(G1, 6, (0,)), (G3, 0, ())]
    assert slots(b.gpus()[0]) == [(G1, 6)]  # no MIG device until the compute instance exists
    b.create_compute_instance(0, gi)
    assert slots(b.gpus()[0]) == [(G1, 6), (G3, 0)]
    fake.add_process(0, 42, fake.gi_at(0, G1, 6))
    one = fake.gi_at(0, G1, 6)
    with pytest.raises(Exception) as e:
        b.destroy_compute_instance(0, one, 0)
    assert getattr(e.value, "code", None) == NVML_ERROR_IN_USE
    with pytest.raises(Exception) as e:
        b.destroy_gpu_instance(0, one)  # its compute instance is still there
    assert getattr(e.value, "code", None) == NVML_ERROR_IN_USE


# ----------------------------------------------------------------------------- the applier


def test_partial_relayout_keeps_the_held_instance() -> None:
    fake = FakeNvml([A100])
    seven_1g(fake)
    b = NvmlBackend(fake)
    held = b.gpus()[0].instance_at(G1, 6)
    assert held is not None
    ap = NvmlApplier("n", b)
    rep = ap.apply(0, grow_3g(), {held.uuid})
    assert slots(rep.gpu) == sorted((s.profile, s.start) for s in grow_3g())
    assert rep.gpu.instance_at(G1, 6) == held  # same GI, same MIG UUID
    assert sorted(rep.destroyed) == [Slot(G1, s) for s in range(4)] and rep.created == (Slot(G3, 0),)
    assert "nvmlDeviceCreateGpuInstanceWithPlacement" in fake.calls
    before = fake.mutations
    again = ap.apply(0, grow_3g(), {held.uuid})  # idempotent: nothing to do
    assert fake.mutations == before and not again.changed


def test_refuses_before_any_call_when_a_held_or_running_instance_would_go() -> None:
    fake = FakeNvml([A100])
    seven_1g(fake)
    b = NvmlBackend(fake)
    held = b.gpus()[0].instance_at(G1, 6)
    assert held is not None
    with pytest.raises(NvmlApplyError, match=r"destroys held or running instance\(s\) 1g.10gb@6"):
        NvmlApplier("n", b).apply(0, [Slot(G7, 0)], {held.uuid})
    fake.add_process(0, 77, fake.gi_at(0, G1, 0))  # no pod holds it, but a process runs there
    with pytest.raises(NvmlApplyError, match=r"1g\.10gb@0"):
        NvmlApplier("n", b).apply(0, grow_3g())
    assert fake.mutations == 0 and len(b.gpus()[0].instances) == 7


def test_in_use_on_destroy_stops_and_reports_truthfully() -> None:
    fake = FakeNvml([A100])
    seven_1g(fake)
    b = NvmlBackend(fake)
    fake.fail("nvmlComputeInstanceDestroy", NVML_ERROR_IN_USE)  # a process started meanwhile
    with pytest.raises(NvmlApplyError, match=r"In use by another client.*a process uses it"):
        NvmlApplier("n", b).apply(0, grow_3g())
    reg = registration(b)
    assert sorted((i.slot.profile, i.slot.start) for i in reg.gpus[0].instances) == fake.gpus[0].slots()
    rep = NvmlApplier("n", b).apply(0, grow_3g())  # the retry converges
    assert slots(rep.gpu) == sorted((s.profile, s.start) for s in grow_3g())


def test_half_made_instance_is_completed_on_rerun() -> None:
    fake = FakeNvml([A100])
    b = NvmlBackend(fake)
    fake.fail("nvmlGpuInstanceCreateComputeInstance", fake_pynvml.UNKNOWN)
    fake.fail("nvmlGpuInstanceDestroy", fake_pynvml.UNKNOWN)  # and the clean-up fails too
    with pytest.raises(NvmlApplyError, match="left without a compute instance"):
        NvmlApplier("n", b).apply(0, [Slot(G7, 0)])
    assert slots(b.gpus()[0]) == [] and [r.ci_ids for r in b.gpu_instances(0)] == [()]
    found = adopt_backend("n", b, [])
    assert [(o.reason, o.profile, o.uuid) for o in found.orphans] == [("incomplete", G7, None)]
    rep = NvmlApplier("n", b).apply(0, [Slot(G7, 0)])
    assert rep.completed == (Slot(G7, 0),) and slots(rep.gpu) == [(G7, 0)]


def test_insufficient_resources_at_the_wanted_placement_adopts_it() -> None:
    fake = FakeNvml([A100])
    b = NvmlBackend(fake)
    # the create takes effect but answers INSUFFICIENT_RESOURCES (NVML's answer for an occupied placement)
    fake.fail("nvmlDeviceCreateGpuInstanceWithPlacement", NVML_ERROR_INSUFFICIENT_RESOURCES, after=True)
    rep = NvmlApplier("n", b).apply(0, [Slot(G3, 4)])
    assert rep.adopted == (Slot(G3, 4),) and slots(rep.gpu) == [(G3, 4)]


def test_occupied_placement_names_what_occupies_it() -> None:
    fake = FakeNvml([A100])
    b = NvmlBackend(fake)
    ap = NvmlApplier("n", b)
    fake.fail("nvmlDeviceCreateGpuInstanceWithPlacement", NVML_ERROR_INSUFFICIENT_RESOURCES)
    with pytest.raises(NvmlApplyError, match=r"placement 3g.40gb@0 is occupied \(NVML: Insufficient Resources\)"):
        ap.apply(0, [Slot(G3, 0)])


@st.composite
def scenarios(draw: Any) -> dict[str, Any]:
    layouts = enumerate_layouts(A100)
    steps = []
    for _ in range(draw(st.integers(1, 4))):
        steps.append({
            "target": draw(st.sampled_from(layouts)),
            "hold": draw(st.lists(st.integers(0, 6), max_size=3)),
            "grow": draw(st.booleans()),
            "faults": draw(st.dictionaries(st.integers(0, 8), st.tuples(
                st.sampled_from([NVML_ERROR_IN_USE, NVML_ERROR_INSUFFICIENT_RESOURCES, fake_pynvml.UNKNOWN]),
                st.booleans()), max_size=2)),
        })
    return {"start": draw(st.sampled_from(layouts)), "steps": steps}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_apply_sequences_with_injected_failures_stay_truthful(sc: dict[str, Any]) -> None:
    fake = FakeNvml([A100])
    for s in sc["start"]:
        fake.create(0, s.profile, s.start)
    b = NvmlBackend(fake)
    ap = NvmlApplier("n", b)
    for step in sc["steps"]:
        g = b.gpus()[0]
        held = {g.instances[i].uuid for i in step["hold"] if i < len(g.instances)}
        kept = {(d.profile, d.start, d.uuid) for d in g.instances if d.uuid in held}
        target = list(step["target"])
        if step["grow"]:  # keep the held instances and add what fits: a partial change
            target = [Slot(p, s) for p, s, _ in kept]
            for t in step["target"]:
                if is_valid(g_model(), [*target, t]):
                    target.append(t)
        fake.schedule = {fake.mutations + k: v for k, v in step["faults"].items()}
        try:
            rep = ap.apply(0, target, held)
            assert slots(rep.gpu) == sorted((s.profile, s.start) for s in make_layout(target))
        except NvmlApplyError:
            pass
        fake.schedule = {}
        now = b.gpus()[0]
        # held instances are never destroyed, moved or re-made
        assert kept <= {(d.profile, d.start, d.uuid) for d in now.instances}
        # the registration says exactly what the GPU has
        reg = registration(b)
        assert sorted((i.slot.profile, i.slot.start) for i in reg.gpus[0].instances) == fake.gpus[0].slots()
        assert {i.uuid for i in reg.gpus[0].instances} == {u for gi in fake.gpus[0].gis.values()
                                                           for u in gi.cis.values()}
        # without faults, the same apply converges when it keeps the held instances
        if {(s.profile, s.start) for s in make_layout(target)} >= {(p, s) for p, s, _ in kept}:
            rep = ap.apply(0, target, held)
            assert slots(rep.gpu) == sorted((s.profile, s.start) for s in make_layout(target))
            assert kept <= {(d.profile, d.start, d.uuid) for d in rep.gpu.instances}


def g_model() -> Any:
    from models.catalog import model
    return model(A100)


# ----------------------------------------------------------------------------- the simulated backend


@pytest.fixture
def sim() -> Iterator[SimBackend]:
    with tempfile.TemporaryDirectory() as d:
        yield SimBackend.create(os.path.join(d, "gpus.json"), "n", [(A100, 1)], NodeMode.MIG)


def test_sim_backend_speaks_the_same_calls(sim: SimBackend) -> None:
    ap = NvmlApplier("n", sim)
    ap.apply(0, [Slot(G1, s) for s in range(7)])
    held = sim.gpus()[0].instance_at(G1, 6)
    assert held is not None
    sim.add_process(0, 9, sim.gpus()[0].instance_at(G1, 0).uuid)  # type: ignore[union-attr]
    with pytest.raises(NvmlApplyError, match=r"1g\.10gb@0"):
        ap.apply(0, grow_3g(), {held.uuid})  # the running 1g@0 is in the way
    sim.remove_process(9)
    sim.inject_nvml_failure("destroy_compute_instance", NVML_ERROR_IN_USE)
    with pytest.raises(NvmlApplyError, match="In use"):
        ap.apply(0, grow_3g(), {held.uuid})
    rep = ap.apply(0, grow_3g(), {held.uuid})
    assert slots(rep.gpu) == sorted((s.profile, s.start) for s in grow_3g())
    assert rep.gpu.instance_at(G1, 6) == held
    sim.inject_nvml_failure("create_compute_instance", fake_pynvml.UNKNOWN)
    with pytest.raises(NvmlApplyError, match="destroyed again"):
        ap.apply(0, [Slot(G3, 0), Slot(G3, 4)], set())
    assert len(sim.gpu_instances(0)) == len(sim.gpus()[0].instances)  # nothing half-made left


# ----------------------------------------------------------------------------- the dispatcher


def test_relayout_dispatches_by_applier(sim: SimBackend) -> None:
    nv = Relayout("n", Applier.NVML, None, NvmlApplier("n", sim))
    g = nv.ensure(sim.gpus()[0], make_layout(Slot(G1, s) for s in range(7)))
    assert nv.counts == {"whole": 1, "partial": 0}
    held = {g.instance_at(G1, 6).uuid}  # type: ignore[union-attr]
    g = nv.ensure(g, make_layout(grow_3g()), held)
    assert nv.counts == {"whole": 1, "partial": 1} and g.instance_at(G1, 6) is not None
    assert nv.ensure(g, make_layout(grow_3g()), held) == g  # none
    with pytest.raises(RelayoutError, match="move, resize or destroy held instance"):
        nv.ensure(g, make_layout([Slot(G7, 0)]), held)
    from deviceplugin.apply import LayoutApplier, make_relayout
    from deviceplugin.migparted import MigPartedRunner
    mp = make_relayout("n", Applier.MIG_PARTED, sim, LayoutApplier("n", sim, MigPartedRunner(["false"]), None))
    assert mp.nvml is None and make_relayout("n", Applier.NVML, sim, mp.migparted).nvml is not None  # type: ignore[arg-type]
    with pytest.raises(RelayoutError, match=r"re-cuts whole GPUs with nvidia-mig-parted; held: 1g\.10gb@6"):
        mp.ensure(g, make_layout([Slot(G3, 0), Slot(G1, 4), Slot(G1, 6)]), held)


# ----------------------------------------------------------------------------- restart adoption


def _pod(name: str, alloc: PodAllocation, phase: str, served: tuple[AllocatedUnit, ...] = ()) -> dict[str, Any]:
    ann = {POD_ALLOCATION: encode_allocation(alloc), POD_BIND_PHASE: phase}
    if served:
        ann[POD_ALLOCATED] = encode_allocated(served)
    return {"metadata": {"name": name, "namespace": "t", "annotations": ann}, "spec": {"nodeName": "n"},
            "status": {"phase": "Running"}}


def _unit(pod: str, gpu: GpuInfo, slot: Slot) -> UnitAssignment:
    return UnitAssignment(f"t/{pod}", "c", 0, 0, "n", gpu.uuid, gpu.index, UnitKind.MIG, 9728, 14, slot)


def test_restart_adoption_matches_pods_and_reports_orphans() -> None:
    fake = FakeNvml([A100])
    seven_1g(fake)
    b = NvmlBackend(fake)
    g = b.gpus()[0]
    inst = {d.start: d for d in g.instances}
    running = _pod("a", PodAllocation("t/a", "n", (_unit("a", g, Slot(G1, 0)),)), "success",
                   (AllocatedUnit(0, 0, inst[0].uuid),))
    pending = _pod("b", PodAllocation("t/b", "n", (_unit("b", g, Slot(G1, 1)),)), "allocating")
    ghost = _pod("c", PodAllocation("t/c", "n", (_unit("c", g, Slot(G1, 2)),)), "success",
                 (AllocatedUnit(0, 0, "MIG-gone"),))
    fake.add_process(0, 55, fake.gi_at(0, G1, 5))  # nobody's process
    found = adopt("n", b.gpus(), [running, pending, ghost], b)
    states = {i.slot.start: i.state for i in found.instances}
    assert states == {0: "held", 1: "reserved", 2: "free", 3: "free", 4: "free", 5: "orphan", 6: "free"}
    assert [(o.reason, o.start, o.detail) for o in found.orphans] == [("process", 5, "pid 55")]
    assert found.lost == ("t/c: MIG-gone",)
    assert found.summary() == "1 held, 1 reserved, 4 free, 1 orphan(s), 1 lost allocation(s)"
    assert fake.mutations == 0  # adoption never changes anything
    # published: the busy orphan comes back held, so no plan takes or re-cuts it
    reg = with_adoption(registration(b), found)
    back = decode_node(encode_node(reg))
    five = back.gpus[0].instance(Slot(G1, 5))
    assert five is not None and five.holder == orphan_holder(inst[5].uuid)
    assert all(i.free for i in back.gpus[0].instances if i.slot.start != 5)
