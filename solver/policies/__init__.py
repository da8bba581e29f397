"""Policies (one registry, :mod:`.registry`): who decides where a pod goes. Layer above the planner
and the baselines, below the simulator."""

from .registry import (
    CLUSTER_POLICIES,
    FGD_POLICIES,
    MILLI_POLICIES,
    POLICIES,
    Placer,
    PolicyContext,
    PolicyInfo,
    info,
    names,
    placer,
)

__all__ = ["CLUSTER_POLICIES", "FGD_POLICIES", "MILLI_POLICIES", "POLICIES", "Placer", "PolicyContext", "PolicyInfo",
           "info", "names", "placer"]
