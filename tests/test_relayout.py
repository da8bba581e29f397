"""models.relayout: when a MIG GPU may change layout, and the validator enforcing it.

Properties: a legal change never moves, resizes or destroys a held instance; every change that keeps
the held instances in a valid layout is legal (no false refusals); a plan the validator accepts,
applied, leaves every held instance exactly where it was.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.catalog import model
from models.codecs import decode_node, encode_node, orphan_holder, registration_of
from models.config import load_inventory_text, parse_node_config
from models.errors import ConfigError
from models.layouts import Slot, enumerate_layouts, is_valid, make_layout
from models.plan import LayoutChange, Plan, apply_plan
from models.relayout import Illegal, change_kind, gpu_change, held_slots, layouts_keeping
from models.types import Applier, ClusterState, Gpu, MigInstance, Node, NodeMode
from models.validate import validate
from models.yamlsrc import load_text

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MODELS = ["A100-SXM4-40GB", "A100-SXM4-80GB", "H100-80GB", "A30"]


@st.composite
def gpu_cases(draw: Any) -> tuple[Gpu, tuple[Slot, ...]]:
    """A MIG GPU with a random layout and random held instances, and a random candidate layout:
    any valid layout, or one that keeps the held instances and adds random others."""
    m = model(draw(st.sampled_from(MODELS)))
    layouts = enumerate_layouts(m.name)
    old = draw(st.sampled_from(layouts)) if draw(st.booleans()) else ()
    held = [s for s in old if draw(st.booleans())]
    insts = tuple(MigInstance(s, f"t/p{i}/0/0" if s in held else None, f"MIG-{i}") for i, s in enumerate(old))
    gpu = Gpu("GPU-x", 0, m.name, NodeMode.MIG, m.memory_mib, instances=insts)
    if draw(st.booleans()):
        new = draw(st.sampled_from(layouts))
    else:
        new_list = list(held)
        for p in m.profiles:
            for s in p.starts:
                if draw(st.integers(0, 5)) == 0 and is_valid(m, [*new_list, Slot(p.name, s)]):
                    new_list.append(Slot(p.name, s))
        new = make_layout(new_list)
    return gpu, new


@SETTINGS
@given(gpu_cases())
def test_change_kind_never_moves_or_resizes_a_held_instance(case: tuple[Gpu, tuple[Slot, ...]]) -> None:
    gpu, new = case
    held = held_slots(gpu)
    kind = change_kind(gpu.gpu_model, gpu.layout, new, held)
    keeps = set(held) <= set(new)
    if isinstance(kind, Illegal):
        # refused only for a reason: a held instance lost, or an invalid layout
        assert not keeps or not is_valid(gpu.gpu_model, new), kind
        return
    assert keeps
    assert kind == "none" or is_valid(gpu.gpu_model, new)
    assert (kind == "none") == (make_layout(new) == gpu.layout)
    if kind == "whole":
        assert not held
    if kind == "partial":
        assert held
        # the new instances sit on memory slices no held instance uses
        m = gpu.gpu_model
        used = {i for s in held for i in range(s.start, s.start + m.profile(s.profile).memory_slices)}
        for s in set(new) - set(gpu.layout):
            assert not used & set(range(s.start, s.start + m.profile(s.profile).memory_slices))
    if keeps and is_valid(gpu.gpu_model, new):
        assert not isinstance(kind, Illegal)  # no false refusal


def _state(gpu: Gpu, applier: Applier) -> ClusterState:
    return ClusterState((Node("n", NodeMode.MIG, (gpu,), applier=applier),), layouts_any=True)


@SETTINGS
@given(gpu_cases(), st.sampled_from(list(Applier)), st.booleans(), st.sampled_from(["dynamig", "hami-v210"]))
def test_validated_plans_leave_held_instances_in_place(case: tuple[Gpu, tuple[Slot, ...]], applier: Applier,
                                                       incremental: bool, policy: str) -> None:
    gpu, new = case
    if make_layout(new) == gpu.layout:
        return
    state = _state(gpu, applier)
    plan = Plan((), (LayoutChange("n", gpu.uuid, make_layout(new), None, incremental),), policy=policy)
    kinds = {v.kind for v in validate(state, plan, {})}
    held = {i.slot: i for i in gpu.instances if not i.free}
    if not kinds:
        after = apply_plan(state, plan).gpu("n", gpu.uuid)
        for slot, inst in held.items():
            assert after.instance(slot) == inst  # same profile, placement, holder and UUID
        if held:
            assert incremental and (applier is Applier.NVML or policy == "hami-v210")
    else:
        assert kinds <= {"layout-busy", "layout-applier", "layout-invalid"}, kinds
        if held and incremental and set(held) <= set(new) and is_valid(gpu.gpu_model, new):
            assert kinds == {"layout-applier"} and applier is Applier.MIG_PARTED and policy != "hami-v210"


G1 = "1g.10gb"


def _busy_a100() -> Gpu:
    m = model("A100-SXM4-80GB")
    insts = tuple(MigInstance(Slot("1g.10gb", s), "t/long/0/0" if s == 6 else None, f"MIG-{s}") for s in range(7))
    return Gpu("GPU-a", 0, m.name, NodeMode.MIG, m.memory_mib, instances=insts)


def test_issue_example_a_busy_1g_leaves_room_for_a_3g_only_with_nvml() -> None:
    gpu = _busy_a100()  # one long-running 1g at slice 6, six free 1g
    grow = make_layout([Slot("3g.40gb", 0), Slot("1g.10gb", 4), Slot("1g.10gb", 5), Slot("1g.10gb", 6)])
    assert gpu_change(Node("a", NodeMode.MIG, (gpu,), applier=Applier.NVML), gpu, grow) == "partial"
    refused = gpu_change(Node("a", NodeMode.MIG, (gpu,)), gpu, grow)
    assert isinstance(refused, Illegal) and refused.kind == "layout-applier"
    assert "applier nvml" in refused.reason and "1g.10gb@6" in refused.reason
    moved = make_layout([Slot("3g.40gb", 4), Slot("1g.10gb", 0)])  # the held 1g would go
    lost = gpu_change(Node("a", NodeMode.MIG, (gpu,), applier=Applier.NVML), gpu, moved)
    assert isinstance(lost, Illegal) and lost.kind == "layout-busy" and "1g.10gb@6" in lost.reason
    whole = gpu_change(Node("a", NodeMode.MIG, (gpu,), applier=Applier.NVML), gpu, grow, incremental=False)
    assert isinstance(whole, Illegal) and "as a whole" in whole.reason
    idle = replace(gpu, instances=tuple(replace(i, holder=None) for i in gpu.instances))
    assert gpu_change(Node("a", NodeMode.MIG, (idle,)), idle, grow) == "whole"
    assert gpu_change(Node("a", NodeMode.MIG, (idle,)), idle, idle.layout) == "none"


def test_validator_names_the_applier_violation() -> None:
    gpu = _busy_a100()
    grow = make_layout([Slot("3g.40gb", 0), Slot("1g.10gb", 4), Slot("1g.10gb", 5), Slot("1g.10gb", 6)])
    plan = Plan((), (LayoutChange("n", gpu.uuid, grow, None, True),))
    got = validate(_state(gpu, Applier.MIG_PARTED), plan, {})
    assert [v.kind for v in got] == ["layout-applier"] and "node n" in got[0].message
    assert validate(_state(gpu, Applier.NVML), plan, {}) == []


def test_registration_carries_the_applier_and_orphans() -> None:
    gpu = _busy_a100()
    node = Node("a", NodeMode.MIG, (gpu,), applier=Applier.NVML)
    reg = registration_of(node)
    raw = encode_node(reg)
    back = decode_node(raw)
    assert back.applier is Applier.NVML and all(i.free for g in back.gpus for i in g.instances)
    default = registration_of(replace(node, applier=Applier.MIG_PARTED))
    assert "applier" not in encode_node(default) and decode_node(encode_node(default)).applier is Applier.MIG_PARTED
    from models.codecs import Orphan
    orphan = Orphan(gpu.uuid, "1g.10gb", 3, "MIG-3", "process", "pid 77")
    back = decode_node(encode_node(replace(reg, orphans=(orphan,))))
    assert back.orphans == (orphan,)
    assert back.gpus[0].instance(Slot("1g.10gb", 3)) == MigInstance(Slot("1g.10gb", 3), orphan_holder("MIG-3"),
                                                                     "MIG-3")
    with pytest.raises(Exception, match="unknown applier 'bogus'"):
        decode_node(raw.replace('"applier":"nvml"', '"applier":"bogus"'))


def test_inventory_and_nodeconfig_choose_the_applier() -> None:
    inv = load_inventory_text("nodes:\n- {name: a, mode: mig, gpus: {model: A100-SXM4-80GB}, applier: nvml}\n"
                              "- {name: b, mode: mig, gpus: {model: A100-SXM4-80GB}}\n")
    assert [n.applier for n in inv.nodes] == [Applier.NVML, Applier.MIG_PARTED]
    from models.cluster import state_from_inventory
    assert [n.applier for n in state_from_inventory(inv).nodes] == [Applier.NVML, Applier.MIG_PARTED]
    with pytest.raises(ConfigError, match=r"nodes\[0\]\.applier.*'nvml'"):
        load_inventory_text("nodes:\n- {name: a, mode: mig, gpus: {model: A30}, applier: dra}\n", "inv.yaml")
    with pytest.raises(ConfigError, match="only for mode mig"):
        load_inventory_text("nodes:\n- {name: a, mode: hami-core, gpus: {model: A30}, applier: nvml}\n")
    entries = parse_node_config(load_text('{"nodeconfig": [{"name": "a", "operatingmode": "mig", '
                                          '"migapplier": "nvml"}, {"name": "b", "operatingmode": "mig"}]}', "nc.json"))
    assert [e.applier for e in entries] == [Applier.NVML, None]
    with pytest.raises(ConfigError, match=r"nodeconfig\[0\]\.migapplier"):
        parse_node_config(load_text('{"nodeconfig": [{"name": "a", "migapplier": "x"}]}', "nc.json"))


def test_layouts_keeping_lists_exactly_the_partial_candidates() -> None:
    gpu = _busy_a100()
    cands = layouts_keeping(gpu.model, held_slots(gpu))
    assert cands and all(Slot(G1, 6) in lay for lay in cands)
    node = Node("a", NodeMode.MIG, (gpu,), applier=Applier.NVML)
    assert all(gpu_change(node, gpu, lay) in ("partial", "none") for lay in cands)
    assert make_layout([Slot("3g.40gb", 0), Slot(G1, 4), Slot(G1, 5), Slot(G1, 6)]) in cands
    assert len(layouts_keeping(gpu.model, ())) == 297  # reference/mig.md section 5
