"""The node agent: kubelet device plugin + node registration + layout application, for one node.

Library entry point (the demo runs one per simulated node, in-process)::

    agent = NodeAgent("gpu-a100-0", SimBackend.from_inventory(path, inv, "gpu-a100-0"), store,
                      plugin_dir, mig_parted=["nvidia-mig-parted-sim"], config=AgentConfig(mode=NodeMode.MIG))
    agent.start()   # serves on <plugin_dir>/<socket>, registers with <plugin_dir>/kubelet.sock, publishes
    ...
    agent.stop()

One background thread watches the plugin directory (kubelet restart: ``kubelet.sock`` recreated or
our socket deleted -> fresh server + Register again), re-reads the GPUs every ``refresh_s`` and
publishes ``dynamig.io/node-gpus`` whenever it differs from what the node carries.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import grpc

from models import nodelock
from models.catalog import match_nvml_name, model
from models.codecs import (
    NODE_GPUS,
    PHASE_FAILED,
    PHASE_SUCCESS,
    POD_ALLOC_ERROR,
    POD_ALLOCATED,
    POD_BIND_PHASE,
    NodeRegistration,
    encode_allocated,
    encode_node,
)
from models.config import NodeConfigEntry
from models.errors import DynamigError, NotFound
from models.layouts import Slot
from models.signing import Keyring
from models.store import ClusterStore
from models.templates import DeviceConfig
from models.types import Applier, Gpu, MigInstance, NodeMode

from .adoption import Adoption, adopt, with_adoption
from .allocate import Allocator, ContainerResponse, HamiCoreSettings
from .apply import LayoutApplier, make_relayout
from .backend import GpuBackend, GpuBackendError, GpuInfo, MigOps
from .ledger import LEDGER_FILE, Served, ServedLedger
from .migparted import MigPartedRunner
from .podmatch import AllocationError, PodTarget, find_pod, holdings, is_live, pod_key, pod_uid
from .proto import api_pb2
from .server import KUBELET_SOCKET, PluginAbort, PluginServer, register

log = logging.getLogger("dynamig.deviceplugin")

RESOURCE_NAME = "nvidia.com/gpu"
SOCKET_NAME = "dynamig-nvidia-gpu.sock"
DEFAULT_PLUGIN_DIR = "/var/lib/kubelet/device-plugins"

#: ``(pod object, reason, message)``: tells a pod why it got no device (a Kubernetes Event in a cluster).
EventSink = Callable[[dict[str, Any], str, str], None]
REASON_NOT_PROVEN = "DynamigAllocationNotProven"
REASON_FAILED = "DynamigAllocationFailed"


def log_event(pod: dict[str, Any], reason: str, message: str) -> None:
    log.warning("event for pod %s: %s: %s", pod_key(pod), reason, message)


@dataclass(frozen=True)
class AgentConfig:
    mode: NodeMode = NodeMode.HAMI_CORE
    split: int = 10  # deviceSplitCount: replica IDs per GPU
    memory_scaling: float = 1.0
    core_scaling: float = 1.0
    filter_uuids: tuple[str, ...] = ()
    filter_indexes: tuple[int, ...] = ()
    resource_name: str = RESOURCE_NAME
    socket_name: str = SOCKET_NAME
    hook_path: str = "/usr/local"
    create_host_dirs: bool = True
    migparted_timeout_s: float = 120.0
    migparted_debug: bool = False
    config_dir: str | None = None  # where mig-parted configs are written (default: a private temp dir)
    poll_s: float = 0.5  # plugin-directory watch period
    refresh_s: float = 10.0  # GPU re-read / registration check period
    register_timeout_s: float = 10.0
    grpc_workers: int = 8  # server threads per plugin (one per open ListAndWatch, one per Allocate)
    migparted_assert: bool = True  # run `nvidia-mig-parted assert` after each apply (besides the NVML check)
    device_config: DeviceConfig | None = field(default=None, compare=False)
    #: verifies the extender's signature on every allocation (models.signing); None: unsigned mode
    allocation_keys: Keyring | None = field(default=None, compare=False, repr=False)
    #: the record of served devices (deviceplugin.ledger); default <plugin dir>/dynamig-served.json
    ledger_path: str | None = None
    #: how this node changes MIG layouts (models.relayout): mig-parted (whole GPU, idle) or nvml
    applier: Applier = Applier.MIG_PARTED

    def with_node_config(self, entry: NodeConfigEntry) -> AgentConfig:
        return replace(self, mode=entry.mode, split=entry.split, memory_scaling=entry.memory_scaling,
                       core_scaling=entry.core_scaling, filter_uuids=entry.filter_uuids,
                       filter_indexes=entry.filter_indexes, applier=entry.applier or self.applier)

    @property
    def node_applier(self) -> Applier:
        """The applier the node publishes and uses (hami-core nodes change no layout)."""
        return self.applier if self.mode is NodeMode.MIG else Applier.MIG_PARTED


class NodeAgent:
    def __init__(self, node_name: str, backend: GpuBackend, store: ClusterStore, plugin_dir: str,
                 mig_parted: Sequence[str] = ("nvidia-mig-parted",), config: AgentConfig | None = None,
                 events: EventSink | None = None, runner: MigPartedRunner | None = None) -> None:
        """``runner`` replaces the ``mig_parted`` executable (the demo's in-process simulator)."""
        self.node = node_name
        self.events = events or log_event
        self.backend = backend
        self.store = store
        self.plugin_dir = os.path.abspath(plugin_dir)
        self.config = config or AgentConfig()
        self.socket_path = os.path.join(self.plugin_dir, self.config.socket_name)
        self.kubelet_socket = os.path.join(self.plugin_dir, KUBELET_SOCKET)
        self.ledger = ServedLedger(self.config.ledger_path or os.path.join(self.plugin_dir, LEDGER_FILE))
        self.runner = runner or MigPartedRunner(mig_parted, self.config.migparted_timeout_s,
                                                backend.migparted_env(), self.config.migparted_debug)
        self.applier = LayoutApplier(node_name, backend, self.runner, self.config.config_dir,
                                     self.config.migparted_assert)
        self.relayout = make_relayout(node_name, self.config.node_applier, backend, self.applier)
        self.adoption: Adoption | None = None  # the last restart/refresh adoption (orphans reported)
        self.allocator = Allocator(
            node_name, self.config.mode, backend, store, self.relayout,
            HamiCoreSettings(self.config.hook_path, self.config.create_host_dirs, self.config.memory_scaling),
            self.refresh)
        self._cond = threading.Condition()
        self._devices: tuple[tuple[str, bool], ...] = ()
        self._version = 0
        self._gpus: tuple[GpuInfo, ...] = ()
        self._published: str | None = None
        self._alloc_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._server: PluginServer | None = None
        self._kubelet_key: tuple[int, int, int] | None = None
        self._registered = False
        self._next_register = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.registrations = 0  # successful Register calls (tests, metrics)
        self.allocations = 0
        self.failures = 0
        self.last_error: str | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Read the GPUs, publish the registration, start serving and registering (non-blocking)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self.refresh()
        self._thread = threading.Thread(target=self._loop, name=f"dynamig-agent-{self.node}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._stop_server()
        self._registered = False
        self.applier.close()

    def _stop_server(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stopped.set()
            with self._cond:  # wake ListAndWatch streams so they end before the grace period
                self._cond.notify_all()
            server.stop()

    def __enter__(self) -> NodeAgent:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def registered(self) -> bool:
        return self._registered

    def wait_registered(self, count: int = 1, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.registrations >= count and self._registered:
                return True
            time.sleep(0.02)
        return False

    def _loop(self) -> None:
        next_refresh = time.monotonic() + self.config.refresh_s
        while not self._stop.is_set():
            try:
                self._watch_kubelet()
            except Exception:  # keep watching whatever happens
                log.exception("node %s: kubelet watch failed", self.node)
            if time.monotonic() >= next_refresh:
                next_refresh = time.monotonic() + self.config.refresh_s
                try:
                    self.refresh()
                except Exception:
                    log.exception("node %s: refresh failed", self.node)
            self._stop.wait(self.config.poll_s)

    def _watch_kubelet(self) -> None:
        try:
            st = os.stat(self.kubelet_socket)
        except FileNotFoundError:
            if self._registered:
                log.warning("node %s: kubelet socket %s vanished; waiting for kubelet", self.node, self.kubelet_socket)
            self._registered = False
            return
        key = (st.st_ino, st.st_ctime_ns, st.st_mtime_ns)
        own_missing = not os.path.exists(self.socket_path)
        if self._registered and key == self._kubelet_key and not own_missing:
            return
        if time.monotonic() < self._next_register:
            return
        if self._registered:
            log.info("node %s: kubelet restarted (%s); re-registering", self.node,
                     "our socket was deleted" if own_missing else "kubelet.sock recreated")
        self._registered = False
        self._stop_server()
        server = PluginServer(self.socket_path, self, self.config.grpc_workers)
        server.start()
        self._server = server
        try:
            register(self.kubelet_socket, self.config.socket_name, self.config.resource_name,
                     self.config.register_timeout_s)
        except (grpc.RpcError, grpc.FutureTimeoutError) as e:
            detail = e.details() if isinstance(e, grpc.RpcError) and hasattr(e, "details") else repr(e)
            log.warning("node %s: Register with kubelet failed: %s; retrying", self.node, detail)
            self._next_register = time.monotonic() + 1.0
            return
        self._kubelet_key = key
        self._registered = True
        self.registrations += 1
        log.info("node %s: registered %s with kubelet (%d device(s))", self.node, self.config.resource_name,
                 len(self._devices))

    # ------------------------------------------------------------------ GPUs, devices, registration
    def _visible(self, g: GpuInfo) -> bool:
        return g.uuid not in self.config.filter_uuids and g.index not in self.config.filter_indexes

    def gpus(self) -> tuple[GpuInfo, ...]:
        """The last GPU snapshot (every GPU of the node, filtered ones included)."""
        return self._gpus

    def refresh(self) -> None:
        """Re-read the backend; update the kubelet device list and the node registration if changed."""
        with self._refresh_lock:
            try:
                gpus = self.backend.gpus()
            except GpuBackendError as e:
                log.error("node %s: cannot read GPUs: %s", self.node, e)
                return
            self._gpus = gpus
            reg = self._adopt(self.registration(gpus), gpus)
            # kubelet sees the GPUs the node publishes, with the same health
            devices = tuple((f"{g.uuid}-{i}", g.health) for g in reg.gpus for i in range(self.config.split))
            with self._cond:
                if devices != self._devices:
                    self._devices = devices
                    self._version += 1
                    self._cond.notify_all()
            self._publish(reg)

    def registration(self, gpus: Sequence[GpuInfo] | None = None) -> NodeRegistration:
        """What this node publishes in ``dynamig.io/node-gpus``."""
        out: list[Gpu] = []
        names: list[str] = []
        mode = self.config.mode
        for g in gpus if gpus is not None else self._gpus:
            if not self._visible(g):
                continue
            m = match_nvml_name(g.name)
            if m is None:
                try:
                    m = model(g.name)
                except DynamigError:
                    log.warning("node %s: GPU %d (%s) is not in the catalog; not published", self.node, g.index,
                                g.name)
                    continue
            health = g.health
            if mode is NodeMode.MIG and not g.mig_capable:
                log.warning("node %s: GPU %d (%s) is not MIG-capable; not published on a mig node", self.node,
                            g.index, g.name)
                continue
            if mode is NodeMode.HAMI_CORE and g.mig_enabled:
                health = False  # HAMi-core cannot share a MIG-enabled GPU
            instances = tuple(
                MigInstance(Slot(d.profile, d.start), None, d.uuid) for d in g.instances if m.has_profile(d.profile)
            ) if mode is NodeMode.MIG else ()
            memory = g.memory_mib
            if mode is NodeMode.HAMI_CORE and self.config.memory_scaling != 1:
                memory = int(memory * self.config.memory_scaling)
            out.append(Gpu(g.uuid, g.index, m.name, mode, memory, self.config.split, health, instances))
            names.append(g.name)
        return NodeRegistration(mode, tuple(out), tuple(names), self.config.node_applier)

    def _adopt(self, reg: NodeRegistration, gpus: Sequence[GpuInfo]) -> NodeRegistration:
        """Match the instances NVML reports to the pods' allocations (at start and on each refresh)
        and publish the orphans; nothing is destroyed. Without the pod list the last adoption stays."""
        if self.config.mode is not NodeMode.MIG:
            return reg
        try:
            pods = self.store.list_pods()
        except Exception as e:  # a store outage must not stop the agent
            log.warning("node %s: cannot list pods for adoption: %s", self.node, e)
        else:
            ops = self.backend if isinstance(self.backend, MigOps) else None
            self.adoption = adopt(self.node, gpus, pods, ops)
        return with_adoption(reg, self.adoption) if self.adoption is not None else reg

    def _publish(self, reg: NodeRegistration) -> None:
        raw = encode_node(reg)
        try:
            node = self.store.get_node(self.node)
            current = (node.get("metadata", {}).get("annotations") or {}).get(NODE_GPUS)
            if current != raw:
                self.store.patch_node_annotations(self.node, {NODE_GPUS: raw})
                log.info("node %s: published %s", self.node, NODE_GPUS)
            self._published = raw
        except NotFound:
            log.warning("node %s: node object not found; registration not published yet", self.node)
        except Exception as e:  # a store outage must not stop the agent
            log.warning("node %s: publishing %s failed: %s", self.node, NODE_GPUS, e)

    # ------------------------------------------------------------------ PluginBackend (for the servicer)
    def device_list(self) -> tuple[int, Sequence[tuple[str, bool]]]:
        with self._cond:
            return self._version, self._devices

    def wait_devices(self, version: int, timeout: float) -> int:
        with self._cond:
            server = self._server
            if self._version == version and not self._stop.is_set() and not (server and server.stopped.is_set()):
                self._cond.wait(timeout)
            return self._version

    def preferred(self, available: Sequence[str], must: Sequence[str], size: int) -> list[str]:
        """Must-include first, then replicas of the GPUs the waiting pod was planned on, then spread."""
        chosen = list(dict.fromkeys(must))[:size]
        wanted: list[str] = []
        try:
            pods = self.store.list_pods()
            target = find_pod(self.store, self.node, size, pods, self.config.allocation_keys, self._held(pods))
            wanted = [u.gpu for u in target.units]
        except (AllocationError, DynamigError):
            pass
        except Exception:
            log.debug("preferred allocation: no pod context", exc_info=True)
        pool = [d for d in available if d not in chosen]
        for gpu in wanted:
            if len(chosen) >= size:
                break
            for d in pool:
                if d.startswith(gpu + "-") and d not in chosen:
                    chosen.append(d)
                    break
        for d in sorted(pool):
            if len(chosen) >= size:
                break
            if d not in chosen:
                chosen.append(d)
        return chosen

    def allocate(self, device_ids: Sequence[str]) -> Any:
        known = {d for d, _ in self._devices}
        unknown = [d for d in device_ids if d not in known]
        if unknown:
            raise PluginAbort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown device ID(s) {unknown} on node {self.node}")
        with self._alloc_lock:
            target: PodTarget | None = None
            keys = self.config.allocation_keys
            try:
                pods = self.store.list_pods()
                served = self._held(pods)
                target = find_pod(self.store, self.node, len(device_ids), pods, keys, served)
                resp = self.allocator.serve(target, holdings(pods, self.node, served, keys))
                self._record_success(target, resp)
            except AllocationError as e:
                self._record_failure(e.reason, e.pod or (target.key if target is not None else None))
                for key, why in e.untrusted:
                    self._refuse_unproven(key, why)
                raise PluginAbort(grpc.StatusCode.FAILED_PRECONDITION, e.reason) from e
            except Exception as e:
                log.exception("node %s: Allocate failed", self.node)
                self._record_failure(f"internal error: {e}", target.key if target is not None else None)
                raise PluginAbort(grpc.StatusCode.INTERNAL, f"dynamig device plugin: internal error: {e}") from e
        self.allocations += 1
        return to_proto(resp)

    # ------------------------------------------------------------------ what this plugin served
    def _alive(self, s: Served, by_uid: dict[str, dict[str, Any]]) -> bool:
        """Is the pod that got ``s`` still running? Unknown (store error) counts as yes."""
        pod = by_uid.get(s.uid)
        if pod is None:
            ns, name = s.pod.split("/", 1)
            try:
                pod = self.store.get_pod(ns, name)
            except NotFound:
                return False
            except Exception as e:
                log.warning("node %s: cannot tell whether %s still runs (%s); its devices stay held", self.node,
                            s.pod, e)
                return True
            if pod_uid(pod) != s.uid:
                return False  # recreated under the same name
        return is_live(pod)

    def _held(self, pods: Sequence[dict[str, Any]]) -> tuple[Served, ...]:
        """The served units of pods still alive (the record of finished ones is dropped)."""
        by_uid = {pod_uid(p): p for p in pods if pod_uid(p)}
        return self.ledger.prune(lambda s: self._alive(s, by_uid))

    def _record_success(self, target: PodTarget, resp: ContainerResponse) -> None:
        now = time.time()
        units = {(u.container_index, u.unit): u for u in target.units}
        self.ledger.record(Served(target.uid, target.key, a.container_index, a.unit,
                                  units[(a.container_index, a.unit)].gpu, a.device, now) for a in resp.served)
        done = (*target.allocated, *resp.served)
        patch: dict[str, str | None] = {POD_ALLOCATED: encode_allocated(done), POD_ALLOC_ERROR: None}
        if target.last_container:
            patch[POD_BIND_PHASE] = PHASE_SUCCESS
        self.store.patch_pod_annotations(target.namespace, target.name, patch)
        log.info("node %s: allocated %s container #%d: %s", self.node, target.key, target.container_index,
                 resp.envs.get("NVIDIA_VISIBLE_DEVICES"))
        if target.last_container:
            nodelock.release(self.store, self.node, target.key)

    def _own_pod(self, key: str) -> dict[str, Any] | None:
        """The pod, if it is bound to (or reserved on) this node: the plugin writes no other pod."""
        ns, name = key.split("/", 1)
        try:
            pod = self.store.get_pod(ns, name)
        except Exception as e:
            log.warning("node %s: cannot read pod %s: %s", self.node, key, e)
            return None
        bound = (pod.get("spec") or {}).get("nodeName")
        if bound and bound != self.node:
            log.warning("node %s: pod %s is bound to %s; not touching it", self.node, key, bound)
            return None
        return pod

    def _refuse_unproven(self, key: str, why: str) -> None:
        """A pod bound here claims an allocation it cannot prove: it gets nothing, and is told why."""
        self.failures += 1
        pod = self._own_pod(key)
        if pod is None:
            return
        msg = f"dynamig device plugin on {self.node}: no device for this pod: {why}"
        log.warning("node %s: refusing pod %s: %s", self.node, key, why)
        self.events(pod, REASON_NOT_PROVEN, msg)
        try:
            self.store.patch_pod_annotations(*key.split("/", 1), {POD_BIND_PHASE: PHASE_FAILED, POD_ALLOC_ERROR: msg})
        except Exception as e:
            log.warning("node %s: cannot mark %s failed: %s", self.node, key, e)

    def _record_failure(self, reason: str, pod: str | None) -> None:
        self.failures += 1
        self.last_error = reason
        log.warning("node %s: Allocate refused%s: %s", self.node, f" for {pod}" if pod else "", reason)
        obj = self._own_pod(pod) if pod is not None else None
        if pod is not None and obj is not None:
            self.events(obj, REASON_FAILED, f"dynamig device plugin on {self.node}: {reason}")
            ns, name = pod.split("/", 1)
            try:
                self.store.patch_pod_annotations(ns, name, {POD_BIND_PHASE: PHASE_FAILED, POD_ALLOC_ERROR: reason})
            except Exception as e:
                log.warning("node %s: cannot mark %s failed: %s", self.node, pod, e)
        if pod is not None:
            try:
                nodelock.release(self.store, self.node, pod)
            except Exception as e:
                log.warning("node %s: cannot release the node lock of %s: %s", self.node, pod, e)
        self.refresh()


def to_proto(resp: ContainerResponse) -> Any:
    return api_pb2.ContainerAllocateResponse(
        envs=resp.envs,
        mounts=[api_pb2.Mount(container_path=m.container_path, host_path=m.host_path, read_only=m.read_only)
                for m in resp.mounts],
        annotations=resp.annotations,
    )
