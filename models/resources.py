"""The extended resource names a pod asks with (HAMi's defaults; configurable like HAMi's
``nvidia.resource*Name`` keys of device-config.yaml and the chart's ``resourceName`` values)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ResourceNames:
    gpu: str = "nvidia.com/gpu"
    gpumem: str = "nvidia.com/gpumem"
    gpumem_percentage: str = "nvidia.com/gpumem-percentage"
    gpucores: str = "nvidia.com/gpucores"
    priority: str = "nvidia.com/priority"

    @property
    def all(self) -> tuple[str, str, str, str]:
        """The four that describe a GPU request (priority is a runtime hint, not a request)."""
        return (self.gpu, self.gpumem, self.gpumem_percentage, self.gpucores)


DEFAULT_RESOURCES = ResourceNames()

#: device-config.yaml key (HAMi ``NvidiaConfig``) -> ResourceNames field
DEVICE_CONFIG_KEYS: dict[str, str] = {
    "resourceCountName": "gpu",
    "resourceMemoryName": "gpumem",
    "resourceMemoryPercentageName": "gpumem_percentage",
    "resourceCoreName": "gpucores",
    "resourcePriorityName": "priority",
}
