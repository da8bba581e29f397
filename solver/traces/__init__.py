"""Traces: where pods and their lifetimes come from (the openb CSV loaders, Pod YAML, durations).
Pure data; imports neither the planner nor the simulator."""

from solver.openb import OpenbFormatError, OpenbNode, OpenbPod, load_nodes, load_pods

from .durations import COMPLETED_PHASES, DEFAULT_MAX_DURATION_S, Durations, parse_duration, trace_durations

__all__ = ["COMPLETED_PHASES", "DEFAULT_MAX_DURATION_S", "Durations", "OpenbFormatError", "OpenbNode", "OpenbPod",
           "load_nodes", "load_pods", "parse_duration", "trace_durations"]
