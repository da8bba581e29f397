from __future__ import annotations

from typing import Any

import pytest

from models.catalog import model
from models.errors import RequestError
from models.requests import gpu_allowed, mig_unit_memory, parse_pod, profile_serves, share_fit_problem
from models.types import Gpu, NodeMode, ShareUsage


def pod(limits: dict[str, Any], ann: dict[str, str] | None = None, init: bool = False) -> dict[str, Any]:
    c = {"name": "main", "resources": {"limits": limits}}
    spec: dict[str, Any] = {"containers": [c]}
    if init:
        spec["initContainers"] = [{"name": "init", "resources": {"limits": {"nvidia.com/gpu": "1",
                                                                           "nvidia.com/gpumem": "1000"}}}]
    return {"metadata": {"name": "p", "namespace": "ml", "annotations": ann or {}}, "spec": spec}


def test_hami_defaults() -> None:
    r = parse_pod(pod({"nvidia.com/gpumem": "3000"}))
    c = r.containers[0]
    assert (c.count, c.memory_mib, c.cores) == (1, 3000, 0)  # count defaults to 1
    whole = parse_pod(pod({"nvidia.com/gpu": "2"})).containers[0]
    assert (whole.count, whole.memory_mib, whole.memory_percent, whole.cores) == (2, None, None, 100)
    pct = parse_pod(pod({"nvidia.com/gpu": 1, "nvidia.com/gpumem-percentage": "50"})).containers[0]
    assert pct.memory_for(40000) == 20000 and pct.cores == 0


def test_init_containers_come_first() -> None:
    r = parse_pod(pod({"nvidia.com/gpu": "1", "nvidia.com/gpumem": "2000"}, init=True))
    assert [(c.name, c.index) for c in r.containers] == [("init", 0), ("main", 1)]


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"nvidia.com/gpumem": "-5"}, "must not be negative"),
        ({"nvidia.com/gpu": "1", "nvidia.com/gpumem": "0"}, "gpumem is 0"),
        ({"nvidia.com/gpumem-percentage": "150"}, "1..100"),
        ({"nvidia.com/gpucores": "120"}, "percentage of one GPU"),
        ({"nvidia.com/gpu": "0", "nvidia.com/gpumem": "10"}, "is 0 but"),
        ({"nvidia.com/gpumem": "ten"}, "expected an integer quantity"),
    ],
)
def test_invalid_requests_name_pod_container_and_field(limits: dict[str, str], message: str) -> None:
    with pytest.raises(RequestError, match=message) as e:
        parse_pod(pod(limits))
    assert "pod ml/p container 'main'" in str(e.value)


def test_annotations() -> None:
    r = parse_pod(pod({"nvidia.com/gpumem": "10"}, {"nvidia.com/vgpu-mode": "mig",
                                                     "nvidia.com/use-gputype": "A100,H100",
                                                     "hami.io/node-scheduler-policy": "spread"}))
    assert r.modes == frozenset({NodeMode.MIG}) and r.use_types == ("A100", "H100") and r.node_policy == "spread"
    both = parse_pod(pod({"nvidia.com/gpumem": "10"}, {"nvidia.com/vgpu-mode": "mig,hami-core"}))
    assert both.modes == frozenset({NodeMode.MIG, NodeMode.HAMI_CORE})
    with pytest.raises(RequestError, match="vgpu-mode"):
        parse_pod(pod({"nvidia.com/gpumem": "10"}, {"nvidia.com/vgpu-mode": "mps"}))


def test_mig_fit_uses_real_memory_and_compute() -> None:
    m = model("A100-SXM4-40GB")
    r = parse_pod(pod({"nvidia.com/gpumem": "5000"})).containers[0]
    assert not profile_serves(m, m.profile("1g.5gb"), r)  # 4864 MiB < 5000: HAMi #1054 would say it fits
    assert profile_serves(m, m.profile("2g.10gb"), r)
    cores = parse_pod(pod({"nvidia.com/gpumem": "1000", "nvidia.com/gpucores": "30"})).containers[0]
    assert not profile_serves(m, m.profile("2g.10gb"), cores) and profile_serves(m, m.profile("3g.20gb"), cores)
    whole = parse_pod(pod({"nvidia.com/gpu": "1"})).containers[0]
    assert mig_unit_memory(whole, m) == 40192 and profile_serves(m, m.profile("7g.40gb"), whole)


def test_share_fit_and_gpu_filters() -> None:
    g = Gpu("GPU-1", 0, "A100-SXM4-80GB", NodeMode.HAMI_CORE, 81920, split=2,
            shares=(ShareUsage("a/b/0/0", 40000, 50),))
    assert share_fit_problem(g, 40000, 50) is None
    assert "MiB free" in (share_fit_problem(g, 50000, 10) or "")
    assert "cores" in (share_fit_problem(g, 100, 60) or "")
    assert "shares in use" in (share_fit_problem(g, 10, 1, extra=((10, 1),)) or "")
    assert "exclusive" in (share_fit_problem(g, 10, 100) or "")
    r = parse_pod(pod({"nvidia.com/gpumem": "10"}, {"nvidia.com/vgpu-mode": "mig"}))
    assert "vgpu-mode" in (gpu_allowed(r, g) or "")
    r2 = parse_pod(pod({"nvidia.com/gpumem": "10"}, {"nvidia.com/nouse-gpuuuid": "GPU-1"}))
    assert gpu_allowed(r2, g) == "nouse-gpuuuid excludes this GPU"
    r3 = parse_pod(pod({"nvidia.com/gpumem": "10"}, {"nvidia.com/use-gputype": "H100"}))
    assert "use-gputype" in (gpu_allowed(r3, g) or "")
