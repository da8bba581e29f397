"""The extender keeps the planner's workload estimate: every filtered GPU pod is counted once, the
estimate is rebuilt from the store's pods after a restart, and solver.plan receives it."""

from __future__ import annotations

from typing import Any

import pytest
from test_extender_support import filter_body, memory_store, pod_manifest

import solver
from extender import ExtenderConfig
from extender.core import Extender
from extender.wire import parse_extender_args

MIG = """
nodes:
  - name: m
    mode: mig
    gpus: {model: A100-SXM4-80GB, count: 8}
"""


def recording_plan(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """solver.plan, recording the ``workload`` each call got (the extender resolves solver.plan lazily)."""
    seen: list[Any] = []
    real = solver.plan

    def plan(*a: Any, **kw: Any) -> Any:
        seen.append(kw.get("workload"))
        return real(*a, **kw)

    monkeypatch.setattr(solver, "plan", plan)
    return seen


def filter_pod(ext: Extender, pod: dict[str, Any]) -> Any:
    return ext.filter(parse_extender_args(filter_body(pod, ["m"])))


def test_estimate_is_rebuilt_from_the_stores_pods_and_passed_to_the_planner(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = recording_plan(monkeypatch)
    store = memory_store(MIG)
    for i in range(70):  # more than OnlineWorkload.min_pods: a learned estimate, not the prior
        store.create_pod(pod_manifest(f"old-{i}", gpu="1", mem="30000"))
    ext = Extender(store, ExtenderConfig())
    pod = store.create_pod(pod_manifest("new", gpu="1", mem="30000"))
    out = filter_pod(ext, pod)
    assert out.result["NodeNames"] == ["m"]
    wl = ext.workload
    assert wl is not None and wl.online.seen == 71  # 70 listed after the "restart" + the filtered one
    est = wl.estimate()
    assert est.pods == 64  # the snapshot taken at 64 requests (OnlineWorkload.REFRESH_AT)
    assert any(d == (30000, None, 0) for d, _ in est.mix)  # the learned demand is in the mix
    assert seen == [est]  # solver.plan got the estimate


def test_a_pod_filtered_again_is_counted_once(monkeypatch: pytest.MonkeyPatch) -> None:
    recording_plan(monkeypatch)
    store = memory_store(MIG)
    ext = Extender(store, ExtenderConfig())
    pod = store.create_pod(pod_manifest("p", gpu="1", mem="10000"))
    filter_pod(ext, pod)
    filter_pod(ext, pod)
    other = store.create_pod(pod_manifest("q", gpu="1", mem="10000"))
    filter_pod(ext, other)
    assert ext.workload is not None and ext.workload.online.seen == 2
    assert ext.workload.estimate().pods == 0  # fewer than min_pods: still the prior


def test_bad_and_cpu_only_pods_do_not_count_on_rebuild(monkeypatch: pytest.MonkeyPatch) -> None:
    recording_plan(monkeypatch)
    store = memory_store(MIG)
    store.create_pod(pod_manifest("cpu", gpu=None))
    store.create_pod(pod_manifest("bad", gpu="1", mem="-5"))
    ext = Extender(store, ExtenderConfig())
    filter_pod(ext, store.create_pod(pod_manifest("p", gpu="1", mem="10000")))
    assert ext.workload is not None and ext.workload.online.seen == 1


def test_no_learning_when_off_or_with_a_custom_planner(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = recording_plan(monkeypatch)
    store = memory_store(MIG)
    ext = Extender(store, ExtenderConfig(learn_workload=False))
    filter_pod(ext, store.create_pod(pod_manifest("p", gpu="1", mem="10000")))
    assert ext.workload is None and seen == [None]
    custom = Extender(store, ExtenderConfig(planner=solver.planner.plan, planner_config=solver.PlannerConfig()))
    assert custom.workload is None
