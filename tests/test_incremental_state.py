"""The incremental caches answer exactly what a fresh, uncached computation answers (issues 12, 13).

Caches under test: the planner's per-node views and answers (keyed by the identity of the frozen
``Node``), the answers shared by nodes with equal GPU classes, the lower-bound pruning and the lazy
binding of ``solve_single``; the extender's per-node registered state, the decode caches of
``models.codecs`` and the registered-node cache of ``models.cluster``. After random sequences of
placements, releases, re-filters, deletions, node re-registrations and label changes, a long-lived
(warm) planner or extender must answer what a fresh one with every cache emptied answers, and every
plan must validate.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import models.cluster as cluster_mod
import models.codecs as codecs_mod
import solver.planner.context as context_mod
from extender import ExtenderConfig
from extender.core import Extender
from extender.loadbench import random_pod as loadbench_pod
from extender.wire import parse_extender_args
from models.cluster import state_from_inventory, state_from_objects
from models.codecs import NODE_GPUS, POD_ALLOCATION, decode_node, encode_node
from models.config import builtin_device_config, load_inventory_text
from models.plan import Plan, apply_plan, release_pod
from models.requests import PodRequest, parse_pod
from models.store import InMemoryStore, node_objects
from models.types import ClusterState, Node
from models.validate import validate
from solver import PlannerConfig, plan
from solver.bench import build_cluster, random_pod
from solver.planner.context import Context
from solver.planner.nodesolve import NodeResult, make_query, reason_for, solve_node
from solver.planner.single import solve_single
from solver.planner.views import build_view

TEMPLATES = builtin_device_config()
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@contextmanager
def uncached() -> Iterator[None]:
    """Run with every module-level cache empty (then put the warm ones back)."""
    saved = (dict(context_mod._CONTEXTS), list(context_mod._LAST), dict(codecs_mod._NODE_CACHE),
             dict(codecs_mod._ALLOCATION_CACHE), dict(cluster_mod._REGISTERED))
    tables = (context_mod._CONTEXTS, context_mod._LAST, codecs_mod._NODE_CACHE, codecs_mod._ALLOCATION_CACHE,
              cluster_mod._REGISTERED)
    for t in tables:
        t.clear()
    try:
        yield
    finally:
        for t, s in zip(tables, saved, strict=True):
            t.clear()
            if isinstance(t, list):
                t.extend(s)  # type: ignore[arg-type]
            else:
                t.update(s)  # type: ignore[call-overload]


def comparable(p: Plan) -> Plan:
    """The plan without its wall-clock times."""
    return replace(p, solve_ms=0.0, stages=tuple(replace(s, wall_ms=0.0) for s in p.stages))


def bound(r: NodeResult | None) -> Any:
    """A node answer by what it places where (GPU uuids and patterns), not by cache objects."""
    if r is None:
        return None
    return (r.node, r.cost, r.comps, tuple((tuple(g.uuid for g in gr.gpus), pats) for gr, pats in r.choice))


def reference(config: PlannerConfig, state: ClusterState, pod: PodRequest, names: list[str]) -> tuple[Any, Any]:
    """Every node solved from scratch (a fresh context per node: no shared answers, no views, no
    pruning), the first node with the least tie key wins: what solve_single must answer."""
    best: NodeResult | None = None
    best_key = 0
    reasons = []
    for name in names:
        ctx = Context(config, state.layouts_any)
        node = state.node(name)
        why = node.host_fit_problem(pod.cpu_milli, pod.host_memory_mib)
        if why is not None:
            reasons.append((name, why))
            continue
        q = make_query(ctx, pod)
        view = build_view(ctx, node)
        res = solve_node(ctx, view, q)
        if res.cost is None:
            reasons.append((name, reason_for(ctx, view, q)))
            continue
        quantum, wf = config.tie_quantum, ctx.weights[2]
        f = res.comps[2]
        key = res.cost if quantum == 1 or not wf else res.cost + ((f + quantum // 2) // quantum * quantum - f) * wf
        if best is None or key < best_key:
            best, best_key = res, key
    return bound(best), reasons


def step_state(rng: random.Random, state: ClusterState, p: Plan, live: list[str]) -> ClusterState:
    """Apply a placed plan; now and then release a pod or replace a node by an equal new object."""
    if p.placed:
        state = apply_plan(state, p)
        live.append(p.placements[0].pod)
    r = rng.random()
    if live and r < 0.4:
        state = release_pod(state, live.pop(rng.randrange(len(live))))
    elif r < 0.5:  # a re-registration with the same content: a new object, equal to the old one
        i = rng.randrange(len(state.nodes))
        n = state.nodes[i]
        state = state.with_nodes((*state.nodes[:i], Node(n.name, n.mode, tuple(n.gpus), n.cpu_milli, n.memory_mib,
                                                         n.labels, n.host, n.applier), *state.nodes[i + 1:]))
    return state


@SETTINGS
@given(seed=st.integers(0, 10_000), nodes=st.integers(2, 14), gpus=st.integers(1, 4),
       quantum=st.sampled_from([1, 1, 250]))
def test_warm_planner_answers_what_a_fresh_one_answers(seed: int, nodes: int, gpus: int, quantum: int) -> None:
    config = PlannerConfig(tie_quantum=quantum)
    state = build_cluster(nodes, gpus, seed)
    rng = random.Random(seed)
    live: list[str] = []
    for i in range(14):
        pod = random_pod(rng, f"q{seed}-{i}")
        warm = plan(state, pod, config)
        with uncached():
            fresh = plan(state, pod, config)
        assert comparable(warm) == comparable(fresh)
        assert validate(state, warm, {pod.key: pod}, TEMPLATES) == []
        state = step_state(rng, state, warm, live)


@SETTINGS
@given(seed=st.integers(0, 10_000), nodes=st.integers(2, 16), gpus=st.integers(1, 4),
       quantum=st.sampled_from([1, 1, 250]))
def test_pruned_single_path_is_the_brute_force_optimum(seed: int, nodes: int, gpus: int, quantum: int) -> None:
    """Lower-bound pruning and lazy binding never change the winner, its placement or a reason."""
    config = PlannerConfig(tie_quantum=quantum)
    ctx = context_mod.context_for(config, False)
    state = build_cluster(nodes, gpus, seed)
    rng = random.Random(seed + 7)
    names = sorted(n.name for n in state.nodes)
    live: list[str] = []
    for i in range(10):
        pod = random_pod(rng, f"r{seed}-{i}")
        got = solve_single(ctx, state, pod, names, float("inf"))
        want, reasons = reference(config, state, pod, names)
        assert bound(got.best) == want
        assert sorted(got.reasons) == sorted(reasons)
        p = plan(state, pod, config)
        assert validate(state, p, {pod.key: pod}, TEMPLATES) == []
        state = step_state(rng, state, p, live)


def test_pruning_keeps_the_first_of_equal_nodes() -> None:
    """Identical empty nodes tie exactly: the first candidate wins, with or without pruning."""
    config = PlannerConfig()
    text = "nodes:\n" + "".join(f"  - name: n{i}\n    mode: mig\n    gpus: {{model: A100-SXM4-80GB, count: 2}}\n"
                                 for i in range(8))
    state = state_from_inventory(load_inventory_text(text))
    pod = parse_pod({"metadata": {"name": "tie", "namespace": "t"},
                     "spec": {"containers": [{"name": "c", "resources": {"limits": {
                         "nvidia.com/gpu": 2, "nvidia.com/gpumem": 8000}}}]}})
    got = plan(state, pod, config)
    assert got.placed and got.placements[0].node == "n0"
    assert validate(state, got, {pod.key: pod}, TEMPLATES) == []
    with uncached():
        assert comparable(plan(state, pod, config)) == comparable(got)


# --------------------------------------------------------------------------- extender

INVENTORY = """
nodes:
  - name: mig-a
    mode: mig
    gpus: {model: A100-SXM4-80GB, count: 2}
  - name: mig-b
    mode: mig
    gpus: {model: A100-SXM4-40GB, count: 2}
  - name: mig-c
    mode: mig
    gpus: {model: A100-SXM4-80GB, count: 1}
  - name: hami-a
    mode: hami-core
    gpus: {model: A100-SXM4-80GB, count: 2}
"""


def twin_stores() -> tuple[InMemoryStore, InMemoryStore]:
    out = []
    for _ in range(2):
        s = InMemoryStore()
        for obj in node_objects(state_from_inventory(load_inventory_text(INVENTORY))):
            s.add_node(obj)
        out.append(s)
    return out[0], out[1]


def pods_view(store: InMemoryStore) -> list[tuple[str, Any, Any]]:
    return sorted((p["metadata"]["name"], (p["metadata"].get("annotations") or {}).get(POD_ALLOCATION),
                   (p.get("spec") or {}).get("nodeName")) for p in store.list_pods())


def reregister(store: InMemoryStore, name: str, rng: random.Random) -> None:
    """The node's device plugin publishes again: one GPU's health flips (the state must change)."""
    raw = store.get_node(name)["metadata"]["annotations"][NODE_GPUS]
    reg = decode_node(raw)
    i = rng.randrange(len(reg.gpus))
    gpus = tuple(replace(g, health=not g.health) if j == i else g for j, g in enumerate(reg.gpus))
    store.patch_node_annotations(name, {NODE_GPUS: encode_node(replace(reg, gpus=gpus))})


def relabel(store: InMemoryStore, name: str, value: str) -> None:
    obj = copy.deepcopy(store.get_node(name))  # what the store hands out is read-only
    obj["metadata"]["labels"] = {**(obj["metadata"].get("labels") or {}), "pool": value}
    store.add_node(obj)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000))
def test_warm_extender_answers_what_a_fresh_one_answers(seed: int) -> None:
    """Two stores in lockstep: one long-lived extender (its snapshots, advanced states, per-node
    registered state and the warm caches) and, per step, a fresh extender with every cache empty.
    Every filter answer and every reservation written must be the same."""
    rng = random.Random(seed)
    a, b = twin_stores()
    now = [1000.0]
    cfg = ExtenderConfig(clock=lambda: now[0], reservation_ttl_s=60.0)
    warm = Extender(a, cfg)
    names = ["mig-a", "mig-b", "mig-c", "hami-a", "missing"]
    made = 0
    for _ in range(30):
        # time moves on between steps (reservations with equal plan times replay by pod name, which
        # is not the order an advanced snapshot applied them in; real clocks never repeat)
        now[0] += 0.001
        op = rng.choice(["new", "new", "new", "refilter", "delete", "reregister", "relabel", "tick"])
        pods = [p["metadata"]["name"] for p in a.list_pods()]
        if op == "new" or (op in ("refilter", "delete") and not pods):
            manifest = loadbench_pod(rng, made)
            manifest["metadata"]["name"] = f"p{made}"
            made += 1
            for s in (a, b):
                s.create_pod(json.loads(json.dumps(manifest)))
            target = manifest["metadata"]["name"]
        elif op == "refilter":
            target = rng.choice(pods)
        elif op == "delete":
            name = rng.choice(pods)
            for s in (a, b):
                s.delete_pod("bench", name)
            continue
        elif op == "reregister":
            node = rng.choice(names[:4])
            state = rng.getstate()
            for s in (a, b):
                rng.setstate(state)
                reregister(s, node, rng)
            continue
        elif op == "relabel":
            node, value = rng.choice(names[:4]), rng.choice(["x", "y"])
            for s in (a, b):
                relabel(s, node, value)
            continue
        else:
            now[0] += rng.choice([1.0, 30.0, 70.0])
            continue
        if a.get_pod("bench", target).get("spec", {}).get("nodeName"):
            continue
        outs = []
        for s, ext in ((a, warm), (b, None)):
            pod = copy.deepcopy(s.get_pod("bench", target))
            pod.pop("apiVersion", None)
            pod.pop("kind", None)
            args = parse_extender_args({"Pod": pod, "NodeNames": names})
            if ext is not None:
                outs.append(ext.filter(args))
                continue
            with uncached():
                fresh = Extender(s, cfg)
                base = fresh.state_without(fresh.snapshot(), f"bench/{target}")
                outs.append(fresh.filter(args))
            if outs[-1].plan is not None and outs[-1].plan.placed:
                req = parse_pod(pod, TEMPLATES.resources)
                assert validate(base, outs[-1].plan, {req.key: req}, TEMPLATES) == []
        assert outs[0].result == outs[1].result and outs[0].status == outs[1].status
        assert pods_view(a) == pods_view(b)
    # the warm extender's state is what a rebuild from the objects gives
    with uncached():
        rebuilt = Extender(a, cfg).snapshot().state
    assert warm.snapshot().state == rebuilt


def test_registered_node_is_one_object_per_registration() -> None:
    """Rebuilding state keeps the identity of nodes nothing is allocated on (the planner's views
    stay warm) and picks up a changed registration at once."""
    a, _ = twin_stores()
    first, _ = state_from_objects(a.list_nodes(), [])
    again, _ = state_from_objects(a.list_nodes(), [])
    assert all(x is y for x, y in zip(first.nodes, again.nodes, strict=True))
    reregister(a, "mig-b", random.Random(1))
    changed, _ = state_from_objects(a.list_nodes(), [])
    assert changed.node("mig-b") is not first.node("mig-b")
    assert changed.node("mig-b") != first.node("mig-b")
    assert changed.node("mig-a") is first.node("mig-a")
    with uncached():
        fresh, _ = state_from_objects(a.list_nodes(), [])
    assert fresh == changed


def test_decode_errors_are_raised_every_time() -> None:
    import pytest

    from models.errors import CodecError

    for _ in range(2):
        with pytest.raises(CodecError):
            decode_node('{"v":1,"mode":"mig","gpus":[{"uuid":3}]}')
    assert '{"v":1,"mode":"mig","gpus":[{"uuid":3}]}' not in codecs_mod._NODE_CACHE


# ---------------------------------------------------------------- lookahead reservations (issue 13)
def reference_apply(state: ClusterState, p: Plan, requests: Any = None) -> ClusterState:
    """``apply_plan`` as it was: every node walked, a fresh state (and name index) built."""
    from models.plan import _grow, _hold
    from models.types import HostUsage

    changes = {(c.node, c.gpu): c for c in p.layout_changes}
    by_gpu: dict[tuple[str, str], list[Any]] = {}
    for u in p.units():
        by_gpu.setdefault((u.node, u.gpu), []).append(u)
    host: dict[str, list[HostUsage]] = {}
    for pl in p.placements:
        req = requests.get(pl.pod) if requests is not None else None
        if pl.placed and pl.node is not None and req is not None and (req.cpu_milli or req.host_memory_mib):
            host.setdefault(pl.node, []).append(HostUsage(pl.pod, req.cpu_milli, req.host_memory_mib))
    touched = {n for n, _ in changes} | {n for n, _ in by_gpu} | set(host)
    nodes = []
    for node in state.nodes:
        if node.name not in touched:
            nodes.append(node)
            continue
        gpus = []
        for gpu in node.gpus:
            key = (node.name, gpu.uuid)
            if key in changes:
                ch = changes[key]
                gpu = _grow(gpu, ch.layout) if ch.incremental else gpu.with_layout(ch.layout)
            if by_gpu.get(key):
                gpu = _hold(gpu, by_gpu[key])
            gpus.append(gpu)
        nodes.append(replace(node, gpus=tuple(gpus), host=node.host + tuple(host.get(node.name, ()))))
    return ClusterState(tuple(nodes), state.layouts_any)


def reference_reserved(batch: Any, state: ClusterState, requests: Any, except_key: str) -> ClusterState:
    """``reserved_for_queue`` as it was: each queued pod's sub-plan checked and applied on the full state."""
    from solver.lookahead import sub_plan

    out = state
    for key in batch.queue:
        req = requests.get(key)
        if key == except_key or req is None:
            continue
        sub = sub_plan(batch, key, out)
        if sub is None or validate(out, sub, {key: req}, TEMPLATES):
            continue
        out = reference_apply(out, sub, {key: req})
    return out


def same_state(a: ClusterState, b: ClusterState) -> None:
    assert a == b
    for n in b.nodes:  # the shared index finds every node where a rebuilt one would
        assert a.node(n.name) is a.nodes[[m.name for m in a.nodes].index(n.name)]
        assert a.node(n.name) == n


@SETTINGS
@given(seed=st.integers(0, 10_000), queued=st.integers(2, 6), stale=st.integers(0, 4))
def test_reserved_state_equals_the_full_state_walk(seed: int, queued: int, stale: int) -> None:
    """The O(touched) reservation (small per-pod states, one rebuild, shared index) equals applying
    each still-valid sub-plan on the whole state, on fresh and stale batch plans; for a pod the plan
    leaves waiting the excepted key changes nothing (so the extender keeps one result per state)."""
    from solver.lookahead import needs_reservation, reserved_for_queue, solve_queue

    rng = random.Random(seed)
    state = build_cluster(6, 2, seed)
    reqs = [random_pod(rng, f"l{i}") for i in range(queued)]
    reqs = [replace(r, cpu_milli=rng.choice((0, 500))) for r in reqs]
    batch = solve_queue(plan, PlannerConfig(time_budget_ms=200), state, reqs, 0, 0.0)
    assert batch is not None
    by_key = {r.key: r for r in reqs}
    live = state
    for i in range(stale):  # the cluster moved on since the plan: intruders placed, pods released
        intruder = random_pod(rng, f"x{i}")
        got = plan(live, intruder, PlannerConfig())
        if got.placed:
            assert validate(live, got, {intruder.key: intruder}, TEMPLATES) == []
            fast, slow = apply_plan(live, got), reference_apply(live, got)
            same_state(fast, slow)
            live = fast
        if rng.random() < 0.5:
            live = release_pod(live, f"bench/fill-node-{rng.randrange(6):04d}-{rng.randrange(2)}")
    for except_key in [*batch.queue, "t/none"]:
        want = reference_reserved(batch, live, by_key, except_key)
        got_state = reserved_for_queue(batch, live, by_key, TEMPLATES, except_key)
        same_state(got_state, want)
        assert (got_state is live) == (want is live)
        if needs_reservation(batch, except_key) or except_key == "t/none":
            same_state(got_state, reserved_for_queue(batch, live, by_key, TEMPLATES, "t/none"))
    # across live states, equal reserved nodes are the previous result's objects, and nothing else
    first = reserved_for_queue(batch, state, by_key, TEMPLATES, "t/none")
    again = reserved_for_queue(batch, live, by_key, TEMPLATES, "t/none", previous=first)
    same_state(again, reference_reserved(batch, live, by_key, "t/none"))
    for n in again.nodes:
        if n is not live.node(n.name):
            assert (n is first.node(n.name)) == (n == first.node(n.name))


def test_with_replaced_is_with_nodes_of_the_same_tuple() -> None:
    import pytest

    state = build_cluster(5, 2, 3)
    pod = random_pod(random.Random(3), "w")
    got = plan(state, pod, PlannerConfig())
    assert got.placed
    name = got.primary.node if got.primary is not None else ""
    new = apply_plan(state, got).node(name)
    fast = state.with_replaced({name: new})
    same_state(fast, state.with_nodes(tuple(new if n.name == name else n for n in state.nodes)))
    assert all(a is b for a, b in zip(fast.nodes, state.nodes, strict=True) if a.name != name)
    assert state.node(name) is not new  # the old state is untouched (its index is shared, not changed)
    assert state.with_replaced({}) is state
    with pytest.raises(ValueError):
        state.with_replaced({"node-0000": new if name != "node-0000" else state.node("node-0001")})
    with pytest.raises(KeyError):
        state.with_replaced({"nowhere": replace(new, name="nowhere")})
