"""The demo: real extender (HTTP), real device plugins (gRPC), simulated GPUs and mig-parted, and
stand-ins for kube-scheduler and the kubelet, replaying a seeded workload in simulated time.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import secrets
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from deviceplugin.agent import AgentConfig, NodeAgent
from deviceplugin.migparted_sim import InProcessMigParted
from deviceplugin.sim import SimBackend
from extender.app import create_app
from extender.config import ExtenderConfig
from extender.server import ServerHandle, serve_in_thread
from models.codecs import POD_ALLOC_ERROR, POD_ALLOCATION, POD_BIND_PHASE, decode_allocation
from models.config import Inventory
from models.signing import Keyring
from models.store import InMemoryStore
from models.types import NodeMode

from .backoff import Backoff
from .extender_client import ExtenderClient, ExtenderError
from .invariants import InvariantChecker
from .kubelet import AllocationFailed, KubeletSim
from .workload import PodSpec, generate

log = logging.getLogger(__name__)
RESOURCE = "nvidia.com/gpu"


@dataclass
class DemoResult:
    pods: int = 0
    placed: int = 0
    pending: dict[str, str] = field(default_factory=dict)  # pod -> reason
    reconfigurations: int = 0
    partial_relayouts: int = 0  # of which partial changes of a busy GPU (applier nvml)
    repartitioned_after_free: int = 0
    allocation_failures: int = 0
    retried: int = 0
    violations: list[str] = field(default_factory=list)
    filter_ms: list[float] = field(default_factory=list)
    instances_by_profile: dict[str, int] = field(default_factory=dict)
    held_by_profile: dict[str, int] = field(default_factory=dict)
    shares: int = 0
    peak_mig_held: int = 0
    peak_shares: int = 0
    wall_s: float = 0.0
    urls: dict[str, str] = field(default_factory=dict)
    lookahead: int = 0  # pending pods the extender plans together (0: off)
    batch_solves: int = 0  # lookahead CP-SAT batch plans solved
    placed_from_batch: int = 0  # filters answered from the queue's batch plan

    def percentile(self, q: float) -> float:
        if not self.filter_ms:
            return 0.0
        xs = sorted(self.filter_ms)
        k = min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))
        return xs[k]

    def to_json(self) -> dict[str, Any]:
        return {
            "pods": self.pods,
            "placed": self.placed,
            "pending": len(self.pending),
            "pending_reasons": self.pending,
            "reconfigurations": self.reconfigurations,
            "partial_relayouts": self.partial_relayouts,
            "repartitioned_after_free": self.repartitioned_after_free,
            "allocation_failures": self.allocation_failures,
            "retried": self.retried,
            "violations": self.violations,
            "filter_p50_ms": round(self.percentile(50), 3),
            "filter_p99_ms": round(self.percentile(99), 3),
            "filter_calls": len(self.filter_ms),
            "mig_instances_by_profile": self.instances_by_profile,
            "mig_instances_held_by_profile": self.held_by_profile,
            "hami_core_shares": self.shares,
            "peak_mig_instances_held": self.peak_mig_held,
            "peak_hami_core_shares": self.peak_shares,
            "wall_s": round(self.wall_s, 2),
            "lookahead": self.lookahead,
            "batch_solves": self.batch_solves,
            "placed_from_batch_plan": self.placed_from_batch,
            **({"urls": self.urls} if self.urls else {}),
        }


@dataclass
class _Running:
    pod: dict[str, Any]
    node: str
    device_ids: list[str]
    pids: list[tuple[str, int, int]]  # (node, gpu index, pid)


class Demo:
    """Build the embedded cluster; :meth:`run` replays the workload; :meth:`close` tears it down."""

    def __init__(self, inventory: Inventory, workdir: str | None = None, fail_migparted: dict[str, int] | None = None,
                 extender_port: int = 0, metrics_port: int = 0, lookahead: int = 16) -> None:
        self.inventory = inventory
        self.lookahead = lookahead
        self.own_workdir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="dynamig-demo-")
        self.store = InMemoryStore()
        self.backends: dict[str, SimBackend] = {}
        self.kubelets: dict[str, KubeletSim] = {}
        self.agents: dict[str, NodeAgent] = {}
        self.server: ServerHandle | None = None
        self.client: ExtenderClient | None = None
        self._pid = itertools.count(1000)
        try:
            self._start(fail_migparted or {}, extender_port, metrics_port)
        except BaseException:  # a failed or interrupted start leaves no process or folder behind
            self.close()
            raise

    # ------------------------------------------------------------------ cluster
    def _start(self, faults: dict[str, int], extender_port: int, metrics_port: int) -> None:
        keys = Keyring((secrets.token_hex(32).encode(),))  # signed allocations end to end, as in a cluster
        hook = os.path.join(self.workdir, "hami-hook")
        for n in self.inventory.nodes:
            self.store.add_node({"metadata": {"name": n.name, "labels": {"gpu": "on", **dict(n.labels)}},
                                 "status": {"allocatable": {"cpu": f"{n.cpu_milli or 96000}m"}}})
            base = os.path.join(self.workdir, n.name)
            backend = SimBackend.from_inventory(os.path.join(base, "gpus.json"), self.inventory, n.name, reset=True)
            if faults.get(n.name):
                backend.inject_migparted_failure(faults[n.name])
            kubelet = KubeletSim(os.path.join(base, "device-plugins"))
            kubelet.start()
            # The simulated mig-parted runs in-process (same argv, output and exit codes as its
            # executable, which tests/test_migparted.py runs): an apply then costs no interpreter start.
            config = AgentConfig(mode=n.mode, split=n.split, hook_path=hook, applier=n.applier,
                                 config_dir=os.path.join(base, "mig-parted"),
                                 device_config=self.inventory.templates, allocation_keys=keys)
            runner = InProcessMigParted(config.migparted_timeout_s, backend.migparted_env(), config.migparted_debug)
            agent = NodeAgent(n.name, backend, self.store, kubelet.plugin_dir,
                              config=config, runner=runner)
            agent.start()
            self.backends[n.name], self.kubelets[n.name], self.agents[n.name] = backend, kubelet, agent
        for name, kubelet in self.kubelets.items():
            kubelet.wait_for_devices(RESOURCE, timeout=30)
            log.info("node %s registered", name)
        app = create_app(self.store, ExtenderConfig(templates=self.inventory.templates,
                                                    layouts_any=self.inventory.layouts_any,
                                                    identity="dynamig-demo-extender", allocation_keys=keys,
                                                    lookahead=self.lookahead, lookahead_budget_ms=500))
        self.extender = app.state.extender
        self.server = serve_in_thread(app, "127.0.0.1", extender_port, metrics_port=metrics_port)
        self.client = ExtenderClient(self.server.url)

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
        for agent in self.agents.values():
            agent.stop()
        for kubelet in self.kubelets.values():
            kubelet.stop()
        if self.own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Demo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the scheduling cycle
    def schedule(self, pod: dict[str, Any]) -> tuple[str | None, str]:
        """kube-scheduler's cycle with an extender: filter -> prioritize -> bind. Returns (node, reason)."""
        assert self.client is not None
        nodes = sorted(self.agents)
        try:
            res = self.client.filter(pod, nodes)
        except ExtenderError as e:
            return None, f"filter error: {e}"
        if res.get("Error"):
            return None, str(res["Error"])
        feasible = res.get("NodeNames") or []
        if not feasible:
            failed = res.get("FailedNodes") or {}
            return None, _summarise(failed)
        best = feasible[0]
        if len(feasible) > 1:
            scores = {h["Host"]: h["Score"] for h in self.client.prioritize(pod, feasible)}
            best = max(feasible, key=lambda n: scores.get(n, 0))
        fresh = self.store.get_pod(pod["metadata"]["namespace"], pod["metadata"]["name"])
        out = self.client.bind(fresh, best)
        if out.get("Error"):
            return None, f"bind failed: {out['Error']}"
        return best, ""

    def start_containers(self, ns: str, name: str, node: str) -> _Running:
        """The kubelet: Allocate per container, then run the pod (a process on each GPU it got)."""
        pod = self.store.get_pod(ns, name)
        counts = [int((c.get("resources", {}).get("limits") or {}).get(RESOURCE, "1"))
                  for c in pod["spec"]["containers"]]
        responses, ids = self.kubelets[node].admit_pod(counts, RESOURCE)
        pids: list[tuple[str, int, int]] = []
        backend = self.backends[node]
        gpus = {g.uuid: g for g in backend.gpus()}
        by_mig = {d.uuid: g for g in gpus.values() for d in g.instances}
        for r in responses:
            for dev in filter(None, r.envs.get("NVIDIA_VISIBLE_DEVICES", "").split(",")):
                g = by_mig.get(dev) or gpus.get(dev)
                if g is None:
                    raise AllocationFailed(f"device {dev} from Allocate does not exist on {node}")
                pid = next(self._pid)
                backend.add_process(g.index, pid, dev if dev.startswith("MIG-") else None, 1)
                pids.append((node, g.index, pid))
        self.store.set_pod_phase(ns, name, "Running")
        return _Running(self.store.get_pod(ns, name), node, ids, pids)

    def finish(self, run: _Running) -> None:
        meta = run.pod["metadata"]
        for node, _, pid in run.pids:
            self.backends[node].remove_process(pid)
        self.kubelets[run.node].release(run.device_ids)
        self.store.set_pod_phase(meta["namespace"], meta["name"], "Succeeded")

    # ------------------------------------------------------------------ the workload
    def run(self, specs: list[PodSpec], progress: Callable[[int], None] | None = None,
            pace: float | None = None) -> DemoResult:
        """Replay ``specs`` in simulated time (as fast as it goes), or with ``pace`` simulated seconds
        per real second (the live workload of ``demo --serve``). ``progress`` gets the number of
        events done (arrivals and departures: at most twice the pods)."""
        t0 = time.perf_counter()
        sim0 = specs[0].arrival if specs else 0.0
        result = DemoResult(pods=len(specs))
        checker = InvariantChecker(self.store, self.backends, self.server.metrics_url if self.server else None)
        la = self.extender.lookahead
        if la is not None and not pace:
            # Replaying simulated time as fast as it goes, the demo re-solves itself (resolve below,
            # every min_interval_s of simulated time); the extender's real-time background loop would
            # only solve the same queue again, competing for the CPU. --serve's live rounds keep it.
            la.stop()
        try:
            return self._replay(specs, result, checker, t0, sim0, progress, pace)
        finally:
            if la is not None and not pace and self.server is not None:
                la.start()

    def _replay(self, specs: list[PodSpec], result: DemoResult, checker: InvariantChecker, t0: float,
                sim0: float, progress: Callable[[int], None] | None, pace: float | None) -> DemoResult:
        events: list[tuple[float, int, str, Any]] = []
        seq = itertools.count()
        for s in specs:
            heapq.heappush(events, (s.arrival, next(seq), "arrive", s))
        pending: dict[str, PodSpec] = {}  # oldest first
        backoff = Backoff()
        in_backoff: set[str] = set()  # pending pods with a "retry" event queued at their backoff's end
        retries: Counter[str] = Counter()
        running: dict[str, _Running] = {}
        durations = {s.name: s.duration for s in specs}

        def attempt(spec: PodSpec, now: float) -> bool:
            meta = spec.manifest["metadata"]
            ns, name = meta["namespace"], meta["name"]
            pod = self.store.get_pod(ns, name)
            node, reason = self.schedule(pod)
            if node is None:
                result.pending[name] = reason
                return False
            result.pending.pop(name, None)
            alloc = decode_allocation(self.store.get_pod(ns, name)["metadata"]["annotations"][POD_ALLOCATION])
            try:
                run = self.start_containers(ns, name, node)
            except AllocationFailed as e:
                result.allocation_failures += 1
                error = self.store.get_pod(ns, name)["metadata"].get("annotations", {}).get(POD_ALLOC_ERROR, str(e))
                log.info("pod %s failed admission on %s: %s", name, node, error)
                # The kubelet fails the pod (UnexpectedAdmissionError); its controller creates a new one.
                self.store.set_pod_phase(ns, name, "Failed")
                retries[spec.name] += 1
                result.retried += 1
                new = _recreate(spec, retries[spec.name])
                durations[new.name] = spec.duration
                self.store.create_pod(new.manifest)
                checker.check(result.violations, now)
                return attempt(new, now) if retries[spec.name] <= 3 else False
            result.reconfigurations += len(alloc.layouts)
            result.partial_relayouts += sum(c.incremental for c in alloc.layouts)
            running[name] = run
            result.placed += 1
            heapq.heappush(events, (now + durations[name], next(seq), "depart", name))
            return True  # checked before the next departure (see InvariantChecker)

        def retry(spec: PodSpec, now: float) -> None:
            if attempt(spec, now):
                pending.pop(spec.name, None)
                backoff.forget(spec.name)
            else:
                pending[spec.name] = spec
                backoff.failed(spec.name, now)

        last_solve = -float("inf")

        def resolve(now: float) -> None:
            nonlocal last_solve
            la = self.extender.lookahead
            if pending and la is not None and now - last_solve >= la.settings.min_interval_s:
                # In a cluster the lookahead loop re-solves in the background, at most every
                # min_interval_s, while pods wait out their backoff; the demo replays time as fast as
                # it can, so it runs that re-solve here (at most every min_interval_s of simulated
                # time), before the retries.
                la.run_once()
                last_solve = now

        done = 0
        while events:
            now, _, kind, item = heapq.heappop(events)
            if pace:
                delay = (now - sim0) / pace - (time.perf_counter() - t0)
                if delay > 0:
                    time.sleep(delay)
            if kind == "arrive":
                self.store.create_pod(item.manifest)
                retry(item, now)
            elif kind == "retry":  # a pending pod's backoff ended after an event moved it
                in_backoff.discard(item)
                if item in pending:
                    resolve(now)
                    retry(pending[item], now)
                continue  # not an arrival or a departure: no progress
            else:
                checker.check(result.violations, now)  # everything since the last departure
                self.finish(running.pop(item))
                # A pod finished: kube-scheduler moves the unschedulable pods back, oldest first; one
                # still in backoff is retried when its backoff ends.
                ready = [p for name, p in pending.items() if backoff.ready(name, now)]
                for name in pending:
                    if not backoff.ready(name, now) and name not in in_backoff:
                        in_backoff.add(name)
                        heapq.heappush(events, (backoff.until(name), next(seq), "retry", name))
                if ready:
                    resolve(now)
                for p in ready:
                    retry(p, now)
            done += 1
            if progress:
                progress(done)
        checker.check(result.violations, float("inf"), final=True)
        result.repartitioned_after_free = checker.repartitioned_after_free
        result.peak_mig_held, result.peak_shares = checker.peak_mig_held, checker.peak_shares
        for b in self.backends.values():
            for g in b.gpus():
                for d in g.instances:
                    result.instances_by_profile[d.profile] = result.instances_by_profile.get(d.profile, 0) + 1
        state_held = checker.last_state
        if state_held is not None:
            for n in state_held.nodes:
                for g in n.gpus:
                    for i in g.instances:
                        if not i.free:
                            p = i.slot.profile
                            result.held_by_profile[p] = result.held_by_profile.get(p, 0) + 1
                    if n.mode is NodeMode.HAMI_CORE:
                        result.shares += len(g.shares)
        result.filter_ms = list(self.client.filter_ms) if self.client else []
        la = self.extender.lookahead
        result.lookahead = self.lookahead
        if la is not None:
            result.batch_solves = sum(la.solved.values())
            result.placed_from_batch = la.answered["batch"]
        result.wall_s = time.perf_counter() - t0
        if self.server is not None:
            result.urls = {"extender": self.server.url,
                           "metrics": self.server.metrics_url or "",
                           "monitor": f"{self.server.url}/monitor"}
        return result


    def live(self, pods: int, seed: int, pace: float = 1.0, rounds: int | None = None,
             on_round: Callable[[int, DemoResult], None] | None = None) -> None:
        """Keep a workload running in real time (``pace`` simulated seconds per second): round after
        round of ``pods`` pods (seeds ``seed+1``, ``seed+2``…). Each round first deletes the pods of
        earlier rounds that no longer run, so the store (and the monitor's pod table) stays bounded."""
        k = 0
        while rounds is None or k < rounds:
            for p in self.store.list_pods():
                if (p.get("status") or {}).get("phase") != "Running":
                    self.store.delete_pod(p["metadata"]["namespace"], p["metadata"]["name"])
            result = self.run(generate(pods, seed + 1 + k, prefix=f"live{k}"), pace=pace)
            for v in result.violations:
                log.warning("live round %d: %s", k, v)
            if on_round is not None:
                on_round(k, result)
            k += 1


def _recreate(spec: PodSpec, attempt: int) -> PodSpec:
    import copy

    m = copy.deepcopy(spec.manifest)
    base = spec.name.split("-r")[0] if "-r" in spec.name else spec.name
    m["metadata"]["name"] = f"{base}-r{attempt}"
    m["metadata"].pop("uid", None)
    m["metadata"]["annotations"] = {k: v for k, v in m["metadata"].get("annotations", {}).items()
                                    if not k.startswith("dynamig.io/")}
    m.pop("status", None)
    return PodSpec(m["metadata"]["name"], spec.arrival, spec.duration, m)


def _summarise(failed: dict[str, str]) -> str:
    if not failed:
        return "no node passed the filter"
    reasons = Counter(failed.values())
    top, n = reasons.most_common(1)[0]
    return f"{top}" + (f" (and {len(failed) - n} other node(s) with other reasons)" if len(failed) > n else "")


def run_demo(pods: int, seed: int, inventory: Inventory, progress: Callable[[int], None] | None = None,
             fail_migparted: dict[str, int] | None = None) -> DemoResult:
    with Demo(inventory, fail_migparted=fail_migparted) as demo:
        return demo.run(generate(pods, seed), progress)


__all__ = ["POD_BIND_PHASE", "Demo", "DemoResult", "run_demo"]
