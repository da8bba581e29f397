"""The chart takes HAMi's value names: aliases where dynamig has the same setting, a failure naming
the key to use where it does not. Rendered with the real helm (scripts/fetch-helm.sh)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from test_chart import _template

from models.config import load_device_config_text


def _docs(proc: Any) -> list[dict[str, Any]]:
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def _configmap(docs: list[dict[str, Any]], suffix: str, key: str) -> str:
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith(suffix))
    return str(cm["data"][key])


def test_hami_value_names_are_aliases(helm: str, tmp_path: Path) -> None:
    values = tmp_path / "hami-values.yaml"
    values.write_text(yaml.safe_dump({
        "resourceName": "example.com/vgpu", "resourceMem": "example.com/vgpu-memory",
        "resourceMemPercentage": "example.com/vgpu-memory-percentage", "resourceCores": "example.com/vgpu-cores",
        "resourcePriority": "example.com/vgpu-priority", "devicePlugin": {"deviceSplitCount": 4},
        "scheduler": {"defaultSchedulerPolicy": {"nodeSchedulerPolicy": "binpack", "gpuSchedulerPolicy": "spread"}},
        "hamiMetrics": "v2.10",
    }))
    docs = _docs(_template(helm, values))
    text = _configmap(docs, "-device-config", "device-config.yaml")
    cfg = load_device_config_text(text, "rendered").config
    assert (cfg.resources.gpu, cfg.resources.gpumem, cfg.resources.gpumem_percentage, cfg.resources.gpucores,
            cfg.resources.priority) == ("example.com/vgpu", "example.com/vgpu-memory",
                                        "example.com/vgpu-memory-percentage", "example.com/vgpu-cores",
                                        "example.com/vgpu-priority")
    assert cfg.split == 4
    sched = yaml.safe_load(_configmap(docs, "-scheduler-config", "config.yaml"))
    managed = {r["name"] for r in sched["extenders"][0]["managedResources"]}
    assert managed == {"example.com/vgpu", "example.com/vgpu-memory", "example.com/vgpu-memory-percentage",
                       "example.com/vgpu-cores"}
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    containers = deploy["spec"]["template"]["spec"]["containers"]
    args = [a for c in containers for a in c.get("command", []) + c.get("args", [])]
    assert "--hami-metrics=v2.10" in args


@pytest.mark.parametrize(("set_arg", "hint"), [
    ("devicePlugin.nvidianodeSelector.gpu=on", "set devicePlugin.nodeSelector instead"),
    ("devicePlugin.deviceMemoryScaling=2", "set nodeConfig[].devicememoryscaling"),
    ("devicePlugin.deviceCoreScaling=2", "devicePlugin.deviceCoreScaling is not supported"),
    ("scheduler.kubeScheduler.imageTag=v1.31.0", "set scheduler.kubeScheduler.image.tag instead"),
    ("scheduler.defaultSchedulerPolicy.gpuSchedulerPolicy=binpack", "hami.io/gpu-scheduler-policy"),
])
def test_hami_names_without_an_equivalent_name_the_key_to_use(helm: str, set_arg: str, hint: str) -> None:
    proc = _template(helm, None, "--set", set_arg)
    assert proc.returncode != 0
    assert hint in proc.stderr, proc.stderr
