"""The demo workload: seeded, in arrival order, two phases and a whole-GPU burst that must queue."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dynamig.demo.workload import BURST, TOO_LARGE, generate


def _limits(spec: object) -> dict[str, str]:
    return spec.manifest["spec"]["containers"][0]["resources"]["limits"]  # type: ignore[attr-defined, no-any-return]


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 400), seed=st.integers(0, 10_000))
def test_arrival_order_names_and_one_giant(n: int, seed: int) -> None:
    specs = generate(n, seed)
    assert [s.arrival for s in specs] == sorted(s.arrival for s in specs)
    assert [s.name for s in specs] == [f"job-{i:04d}" for i in range(n)]
    assert sum(_limits(s) == TOO_LARGE for s in specs) == (1 if n > 0 else 0)
    assert specs == generate(n, seed)  # seeded


def test_the_burst_asks_for_whole_gpus_all_at_once() -> None:
    specs = generate(240, 7)
    burst = [s for s in specs if _limits(s) == BURST[0] and s.manifest["metadata"]["annotations"] == BURST[1]]
    inside = specs[120:160]
    assert all(s in burst for s in inside)  # n // 6 pods from the phase change on
    assert inside[-1].arrival - inside[0].arrival < 0.1 < specs[160].arrival - specs[119].arrival
    # 40 whole GPUs while ~half the workload still runs on the built-in cluster's 48: a queue forms
    assert len(inside) == 40
    assert generate(240, 7, burst=0)[120:160] != inside
