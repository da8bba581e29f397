"""The demo's scheduling backoff and when it checks invariants: fewer filters and checks, the same catches."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_demo import SMALL, spec

from dynamig.demo.backoff import INITIAL_S, MAX_S, Backoff
from dynamig.demo.runner import Demo

MIG = {"nvidia.com/vgpu-mode": "mig"}


@given(st.lists(st.floats(min_value=0, max_value=1e4, allow_nan=False), min_size=1, max_size=12))
def test_backoff_doubles_from_one_second_up_to_ten(gaps: list[float]) -> None:
    b = Backoff()
    now = 0.0
    for k, gap in enumerate(gaps, start=1):
        now += gap
        until = b.failed("p", now)
        assert until - now == pytest.approx(min(INITIAL_S * 2 ** (k - 1), MAX_S))
        assert not b.ready("p", now) and b.ready("p", until) and b.until("p") == until
    b.forget("p")
    assert b.ready("p", now) and b.failed("p", now) == now + INITIAL_S  # a scheduled pod starts over


def test_a_pending_pod_is_not_filtered_at_every_departure() -> None:
    # nine pods end within 0.8 s while the giant waits: it is retried when its backoff allows, not nine times
    pods = [*[spec(f"small-{i}", 0.1 * i, 5.0, {"nvidia.com/gpumem": "4000"}, MIG) for i in range(9)],
            spec("giant", 1.0, 5.0, {"nvidia.com/gpumem": "100000"})]
    with Demo(SMALL) as demo:
        assert demo.client is not None
        asked: list[str] = []
        real = demo.client.filter

        def counting(pod: dict[str, Any], nodes: list[str]) -> dict[str, Any]:
            asked.append(pod["metadata"]["name"])
            return real(pod, nodes)

        demo.client.filter = counting  # type: ignore[method-assign]
        r = demo.run(pods)
    assert r.violations == [] and r.placed == 9 and set(r.pending) == {"giant"}
    # arrival (t=1, backoff 1 s), first departure t=5.0 (backoff 2 s), then its retry at 7.0: three
    assert asked.count("giant") == 3
    assert "larger than any GPU in the cluster" in r.pending["giant"]


@pytest.mark.parametrize("fault", ["instance-vanishes", "layout-changes"])
def test_a_fault_between_two_departures_is_reported_at_the_next_check(fault: str) -> None:
    # "long" runs across the whole window and is seen by the check at short-a's departure (t=0.8);
    # "victim" is bound at t=1 (no check then) and the hardware is broken under it or under "long":
    # the check at short-b's departure (t=3.0) must report it.
    share = ({"nvidia.com/gpumem": "20000", "nvidia.com/gpucores": "30"}, {"nvidia.com/vgpu-mode": "hami-core"})
    pods = [spec("long", 0.0, 30.0, {"nvidia.com/gpumem": "4000"}, MIG),
            spec("short-a", 0.5, 0.3, *share), spec("short-b", 0.6, 2.4, *share),
            spec("victim", 1.0, 30.0, {"nvidia.com/gpumem": "4000"}, MIG)]
    with Demo(SMALL) as demo:
        real = demo.start_containers
        pids: dict[str, int] = {}

        def breaking(ns: str, name: str, node: str) -> Any:
            run = real(ns, name, node)
            pids[name] = run.pids[0][2]
            if name == "victim":
                target = pids["victim" if fault == "instance-vanishes" else "long"]
                with demo.backends[node].transaction() as state:
                    for g in state.gpus:
                        on = {p["mig_uuid"] for p in g["processes"] if p["pid"] == target}
                        for x in g["instances"]:
                            if x["uuid"] in on:
                                if fault == "instance-vanishes":
                                    x["uuid"] = "MIG-recut-behind-the-scheduler"
                                else:  # the same instance moved: what re-cutting a busy GPU does
                                    x["start"] += 1
            return run

        demo.start_containers = breaking  # type: ignore[method-assign]
        r = demo.run(pods)
    want = "which no longer exists" if fault == "instance-vanishes" else "layout changed while process(es)"
    at_short_departure = [v for v in r.violations if v.startswith("t=3.0:") and want in v]
    assert at_short_departure, r.violations
