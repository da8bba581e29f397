"""dynamig: deviceplugin — the node agent.

kubelet device plugin (v1beta1 over grpcio), GPU discovery behind :class:`GpuBackend` (NVML or a
simulator), layout application through nvidia-mig-parted, node registration. Entry point for
in-process use: :class:`NodeAgent`. Exports load lazily, so the simulated ``nvidia-mig-parted``
(``deviceplugin.migparted_sim``) starts without importing grpc.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AgentConfig": "agent", "NodeAgent": "agent", "DEFAULT_PLUGIN_DIR": "agent", "RESOURCE_NAME": "agent",
    "SOCKET_NAME": "agent",
    "GiProfile": "backend", "GpuBackend": "backend", "GpuBackendError": "backend", "GpuInfo": "backend",
    "GpuProcess": "backend", "MigDevice": "backend",
    "MigPartedError": "migparted", "MigPartedRunner": "migparted",
    "ENV_STATE": "sim", "SimBackend": "sim",
    "NvmlBackend": "nvml",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'deviceplugin' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{mod}"), name)
