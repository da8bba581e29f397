"""Invariants the demo checks before every departure, after an allocation failure and at the end,
reported as violations (never asserted silently). Between two departures the cluster only gains
(binds, instances cut for them, processes started), so whatever a bind breaks below still shows at
the next check: checking after every bind as well found nothing more, at twice the cost.

- the state rebuilt from the API (node registrations + pod allocations) has no conflict;
- every held MIG instance exists on the simulated GPU and is held by exactly one running pod;
- every running process sits on an existing MIG instance (a re-cut instance gets a new UUID, so a
  process started since the last check whose instance was re-cut shows here), and no GPU's layout
  changed under a process that was running at the last check and still runs: its instance keeps its
  UUID, profile and placement (a partial change of a busy GPU on an nvml node passes; re-cutting
  it does not);
- hami-core GPUs stay within memory, cores and split limits;
- the metrics endpoint reports what the state says (per-GPU unit counts and MIG instance slots).
"""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from deviceplugin.sim import SimBackend
from models.cluster import state_from_objects
from models.requests import pod_of_holder
from models.store import InMemoryStore
from models.types import ClusterState, NodeMode


class InvariantChecker:
    def __init__(self, store: InMemoryStore, backends: Mapping[str, SimBackend], metrics_url: str | None,
                 metrics_every: int = 50) -> None:
        self.store = store
        self.backends = backends
        self.metrics_url = metrics_url
        self.metrics_every = metrics_every
        self.checks = 0
        self.last_state: ClusterState | None = None
        self.repartitioned_after_free = 0
        self.peak_mig_held = 0
        self.peak_shares = 0
        self._prev: dict[tuple[str, int], tuple[tuple[tuple[str, int], ...], dict[int, Any]]] = {}
        self._ever_busy: set[tuple[str, int]] = set()

    def check(self, out: list[str], now: float, final: bool = False) -> None:
        self.checks += 1
        when = "end" if final else f"t={now:.1f}"
        pods = self.store.list_pods()  # shared, read-only objects: no copy per check
        nodes = self.store.list_nodes()
        phase = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": (p.get("status") or {}).get("phase")
                 for p in pods}
        state, problems = state_from_objects(nodes, pods)
        self.last_state = state
        self.peak_mig_held = max(self.peak_mig_held, sum(1 for n in state.nodes for g in n.gpus
                                                         for i in g.instances if not i.free))
        self.peak_shares = max(self.peak_shares, sum(len(g.shares) for n in state.nodes for g in n.gpus))
        out.extend(f"{when}: state: {p.obj}: {p.message}" for p in problems)
        for node in state.nodes:
            sim = {g.uuid: g for g in self.backends[node.name].gpus()}
            for g in node.gpus:
                hw = sim.get(g.uuid)
                if hw is None:
                    out.append(f"{when}: {node.name}: registered GPU {g.uuid} does not exist")
                    continue
                key = (node.name, g.index)
                if node.mode is NodeMode.MIG:
                    for inst in g.instances:
                        if inst.free:
                            continue
                        if hw.instance_at(inst.slot.profile, inst.slot.start) is None:
                            out.append(f"{when}: {node.name}/{g.index}: {inst.slot} held by {inst.holder} "
                                       "does not exist on the GPU")
                        owner = pod_of_holder(inst.holder or "")
                        if phase.get(owner) != "Running":
                            out.append(f"{when}: {node.name}/{g.index}: {inst.slot} held by {owner}, which is "
                                       f"{phase.get(owner) or 'gone'}")
                else:
                    if g.used_memory_mib > g.memory_mib or g.used_cores > 100 or len(g.shares) > g.split:
                        out.append(f"{when}: {node.name}/{g.index}: hami-core limits exceeded "
                                   f"({g.used_memory_mib}/{g.memory_mib} MiB, {g.used_cores}% cores, "
                                   f"{len(g.shares)}/{g.split} shares)")
                layout = tuple(sorted((d.profile, d.start) for d in hw.instances))
                pids = frozenset(p.pid for p in hw.processes)
                for p in hw.processes:
                    if p.mig_uuid and hw.instance_by_uuid(p.mig_uuid) is None:
                        out.append(f"{when}: {node.name}/{g.index}: process {p.pid} runs on {p.mig_uuid}, "
                                   "which no longer exists")
                prev = self._prev.get(key)
                procs = {p.pid: _instance_of(hw, p.mig_uuid) for p in hw.processes}
                if prev is not None and prev[0] != layout:
                    under = sorted(pid for pid, at in prev[1].items()
                                   if pid in pids and (at is None or procs[pid] != at))
                    if under:
                        out.append(f"{when}: {node.name}/{g.index}: layout changed while process(es) "
                                   f"{under} ran on it")
                    if key in self._ever_busy and prev[0]:
                        self.repartitioned_after_free += 1
                if pids:
                    self._ever_busy.add(key)
                self._prev[key] = (layout, procs)
        if self.metrics_url and (final or self.checks % self.metrics_every == 0):
            self._check_metrics(state, out, when)

    def _check_metrics(self, state: ClusterState, out: list[str], when: str) -> None:
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=10) as resp:
                text = resp.read().decode()
        except OSError as e:
            out.append(f"{when}: metrics endpoint {self.metrics_url} unreachable: {e}")
            return
        shared: dict[tuple[str, str], float] = {}
        slots: dict[tuple[str, str], list[float]] = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                labels: dict[str, Any] = s.labels
                if s.name == "hami_gpu_shared_count":
                    shared[(labels["node"], labels["device_uuid"])] = s.value
                elif s.name == "hami_node_gpu_mig_instance_info":
                    slots.setdefault((labels["node"], labels["device_uuid"]), []).append(s.value)
        for node in state.nodes:
            for g in node.gpus:
                key = (node.name, g.uuid)
                used = sum(1 for i in g.instances if not i.free) + len(g.shares)
                if shared.get(key, 0.0) != used:
                    out.append(f"{when}: metrics: hami_gpu_shared_count{{node={node.name},GPU {g.index}}} = "
                               f"{shared.get(key)} but the state has {used} unit(s)")
                if node.mode is NodeMode.MIG and g.instances:
                    got = sorted(slots.get(key, []))
                    want = sorted(0.0 if i.free else 1.0 for i in g.instances)
                    if got != want:
                        out.append(f"{when}: metrics: MIG instance series of {node.name}/{g.index} = {got}, "
                                   f"state {want}")


def _instance_of(hw: Any, mig_uuid: str | None) -> tuple[str, str, int] | None:
    """The MIG instance a process runs on (UUID, profile, start); None when it cannot be told."""
    d = hw.instance_by_uuid(mig_uuid) if mig_uuid else None
    return (d.uuid, d.profile, d.start) if d is not None else None
