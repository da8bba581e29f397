"""A fake kubelet device manager over real unix-socket gRPC, and a one-node test harness.

It serves ``Registration`` on ``<dir>/kubelet.sock`` and behaves as kubelet does
(``reference/deviceplugin-api.md`` §4-6): inside ``Register`` it checks the version and resource name,
dials the plugin's socket and calls ``GetDevicePluginOptions`` before answering; then it follows
``ListAndWatch`` in the background (each message replaces the device set). ``restart()`` deletes every
socket in the directory and recreates ``kubelet.sock``, as a kubelet restart does. ``admit(n)`` picks
``n`` free healthy devices (asking ``GetPreferredAllocation`` when offered) and calls ``Allocate``.
:class:`NodeHarness` wires a store, simulated GPUs, this kubelet and a ``NodeAgent`` together.
"""

from __future__ import annotations

import glob
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc

from deviceplugin.proto import api_pb2, api_pb2_grpc

_RESOURCE_RE = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)/[A-Za-z0-9]"
                          r"([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


@dataclass
class PluginEndpoint:
    resource: str
    endpoint: str  # socket file name inside the plugin directory
    options: Any
    channel: grpc.Channel
    stub: api_pb2_grpc.DevicePluginStub
    devices: dict[str, str] = field(default_factory=dict)  # ID -> health
    updates: int = 0
    stream_open: bool = False


class FakeKubelet:
    def __init__(self, plugin_dir: str) -> None:
        self.plugin_dir = os.path.abspath(plugin_dir)
        self.socket = os.path.join(self.plugin_dir, "kubelet.sock")
        self.endpoints: dict[str, PluginEndpoint] = {}
        self.registrations: list[tuple[str, str]] = []  # (resource, endpoint) per successful Register
        self.in_use: set[str] = set()
        self._cond = threading.Condition()
        self._server: grpc.Server | None = None

    # ---- lifecycle
    def start(self) -> None:
        os.makedirs(self.plugin_dir, exist_ok=True)
        if os.path.exists(self.socket):
            os.unlink(self.socket)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="fake-kubelet"))
        api_pb2_grpc.add_RegistrationServicer_to_server(_Registration(self), server)
        server.add_insecure_port(f"unix://{self.socket}")
        server.start()
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(0).wait(2)
            self._server = None
        with self._cond:
            endpoints = list(self.endpoints.values())
            self.endpoints.clear()
            self._cond.notify_all()
        for ep in endpoints:
            ep.channel.close()

    def restart(self) -> None:
        """What a kubelet restart does to the plugin directory: every socket goes, kubelet.sock comes back."""
        self.stop()
        for path in glob.glob(os.path.join(self.plugin_dir, "*")):
            if _is_socket(path):
                os.unlink(path)
        self.start()

    def __enter__(self) -> FakeKubelet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- Register (called from the gRPC handler)
    def _register(self, req: Any) -> None:
        if req.version != "v1beta1":
            raise ValueError(f"requested device plugin API version {req.version!r} is not supported by kubelet "
                             "(supported: [v1beta1])")
        if not _RESOURCE_RE.match(req.resource_name):
            raise ValueError(f"invalid name of device plugin socket: {req.resource_name!r}")
        path = os.path.join(self.plugin_dir, req.endpoint)
        channel = grpc.insecure_channel(f"unix://{path}")
        grpc.channel_ready_future(channel).result(timeout=10)
        stub = api_pb2_grpc.DevicePluginStub(channel)
        options = stub.GetDevicePluginOptions(api_pb2.Empty(), timeout=10)
        ep = PluginEndpoint(req.resource_name, req.endpoint, options, channel, stub)
        with self._cond:
            old = self.endpoints.get(req.resource_name)
            self.endpoints[req.resource_name] = ep
            self.registrations.append((req.resource_name, req.endpoint))
            self._cond.notify_all()
        if old is not None:
            old.channel.close()
        threading.Thread(target=self._watch, args=(ep,), daemon=True, name=f"fake-kubelet-law-{ep.resource}").start()

    def _watch(self, ep: PluginEndpoint) -> None:
        try:
            ep.stream_open = True
            for resp in ep.stub.ListAndWatch(api_pb2.Empty()):
                with self._cond:
                    ep.devices = {d.ID: d.health for d in resp.devices}
                    ep.updates += 1
                    self._cond.notify_all()
        except grpc.RpcError:
            pass
        finally:
            with self._cond:
                ep.stream_open = False
                self._cond.notify_all()

    # ---- observing
    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
            return True

    def wait_registered(self, count: int = 1, timeout: float = 10.0) -> bool:
        return self.wait_for(lambda: len(self.registrations) >= count, timeout)

    def devices(self, resource: str = "nvidia.com/gpu") -> dict[str, str]:
        with self._cond:
            ep = self.endpoints.get(resource)
            return dict(ep.devices) if ep else {}

    def endpoint(self, resource: str = "nvidia.com/gpu") -> PluginEndpoint:
        with self._cond:
            ep = self.endpoints.get(resource)
        if ep is None:
            raise LookupError(f"no device plugin registered for {resource}")
        return ep

    # ---- device manager calls
    def allocate(self, device_ids: Sequence[str], resource: str = "nvidia.com/gpu", timeout: float = 300) -> Any:
        """One container's ``Allocate``; the ContainerAllocateResponse. Raises ``grpc.RpcError``."""
        ep = self.endpoint(resource)
        resp = ep.stub.Allocate(
            api_pb2.AllocateRequest(container_requests=[api_pb2.ContainerAllocateRequest(devices_ids=list(device_ids))]),
            timeout=timeout)
        return resp.container_responses[0]

    def preferred(self, available: Sequence[str], must: Sequence[str], size: int,
                  resource: str = "nvidia.com/gpu") -> list[str]:
        ep = self.endpoint(resource)
        resp = ep.stub.GetPreferredAllocation(api_pb2.PreferredAllocationRequest(container_requests=[
            api_pb2.ContainerPreferredAllocationRequest(available_deviceIDs=list(available),
                                                        must_include_deviceIDs=list(must), allocation_size=size)]),
            timeout=10)
        return list(resp.container_responses[0].deviceIDs)

    def admit(self, count: int, resource: str = "nvidia.com/gpu", timeout: float = 300) -> tuple[list[str], Any]:
        """Admit one container asking ``count`` devices: pick free healthy IDs, then ``Allocate``.
        Returns (device IDs, response); the IDs stay in use until :meth:`release`."""
        ep = self.endpoint(resource)
        with self._cond:
            free = sorted(d for d, h in ep.devices.items() if h == "Healthy" and d not in self.in_use)
        if len(free) < count:
            raise LookupError(f"{resource}: {count} device(s) requested, {len(free)} free")
        ids = free[:count]
        if ep.options.get_preferred_allocation_available:
            pref = self.preferred(free, [], count, resource)
            if len(pref) == count and set(pref) <= set(free):
                ids = pref
        resp = self.allocate(ids, resource, timeout)
        with self._cond:
            self.in_use.update(ids)
        return ids, resp

    def release(self, device_ids: Sequence[str]) -> None:
        with self._cond:
            self.in_use.difference_update(device_ids)


class _Registration(api_pb2_grpc.RegistrationServicer):
    def __init__(self, kubelet: FakeKubelet) -> None:
        self.kubelet = kubelet

    def Register(self, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            self.kubelet._register(request)
        except (ValueError, grpc.RpcError, grpc.FutureTimeoutError) as e:
            context.abort(grpc.StatusCode.UNKNOWN, f"failed to register device plugin: {e}")
        return api_pb2.Empty()


def _is_socket(path: str) -> bool:
    import stat

    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except OSError:
        return False


# ----------------------------------------------------------------------------- a node under test


class NodeHarness:
    """One simulated node: a store holding the node, simulated GPUs, a fake kubelet and a NodeAgent,
    all in a short temporary directory (unix socket paths are limited to 107 bytes)."""

    def __init__(self, gpus: Sequence[tuple[str, int]], mode: str = "mig", node: str = "node-a",
                 split: int = 4, migparted_timeout_s: float = 30.0, start: bool = True, **config: Any) -> None:
        import shutil
        import sys
        import tempfile

        from deviceplugin.agent import AgentConfig, NodeAgent
        from deviceplugin.sim import SimBackend
        from models.store import InMemoryStore
        from models.types import NodeMode

        self._rmtree = shutil.rmtree
        self.dir = tempfile.mkdtemp(prefix="dp-", dir="/tmp")
        self.node = node
        self.store = InMemoryStore()
        self.store.add_node({"metadata": {"name": node, "labels": {}, "annotations": {}}})
        self.backend = SimBackend.create(os.path.join(self.dir, "gpus.json"), node, gpus, NodeMode(mode))
        self.mig_parted = os.path.join(os.path.dirname(sys.executable), "nvidia-mig-parted-sim")
        self.kubelet = FakeKubelet(os.path.join(self.dir, "plugins"))
        cfg = AgentConfig(mode=NodeMode(mode), split=split, poll_s=0.05, refresh_s=0.2,
                          migparted_timeout_s=migparted_timeout_s, config_dir=os.path.join(self.dir, "cfg"),
                          hook_path=os.path.join(self.dir, "hook"), **config)
        self.agent = NodeAgent(node, self.backend, self.store, self.kubelet.plugin_dir, [self.mig_parted], cfg)
        if start:
            self.start()

    def start(self) -> None:
        self.kubelet.start()
        self.agent.start()
        assert self.kubelet.wait_registered(1, 10), "plugin did not register"
        n = len(self.backend.gpus()) * self.agent.config.split
        assert self.kubelet.wait_for(lambda: len(self.kubelet.devices()) == n, 10), "no ListAndWatch devices"

    def close(self) -> None:
        self.agent.stop()
        self.kubelet.stop()
        self._rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> NodeHarness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def gpu(self, index: int) -> Any:
        return self.backend.gpus()[index]

    def pod(self, name: str, units: Sequence[dict[str, Any]], layouts: Sequence[dict[str, Any]] = (),
            lock: bool = True, namespace: str = "default", alloc_pod: str | None = None,
            containers: Sequence[dict[str, Any]] | None = None, phase: str = "allocating") -> dict[str, Any]:
        """Create a pod as the extender leaves it after bind. ``units``: dicts with ``gpu`` (index),
        ``kind`` (mig|share), ``profile``/``start`` or ``memory``/``cores``, optional ``c`` and ``u``;
        ``layouts``: dicts with ``gpu`` (index) and ``slots`` [(profile, start)]."""
        import time as _time

        from models import nodelock
        from models.codecs import (
            POD_ALLOCATION,
            POD_BIND_PHASE,
            POD_BIND_TIME,
            POD_NODE,
            PodAllocation,
            encode_allocation,
        )
        from models.layouts import Slot, make_layout
        from models.plan import LayoutChange, UnitAssignment
        from models.types import UnitKind

        key = f"{namespace}/{name}"
        gpus = self.backend.gpus()
        out_units = []
        for i, u in enumerate(units):
            g = gpus[u["gpu"]]
            kind = UnitKind(u.get("kind", "mig"))
            slot = Slot(u["profile"], u["start"]) if kind is UnitKind.MIG else None
            out_units.append(UnitAssignment(key, u.get("container", "main"), u.get("c", 0), u.get("u", i), self.node,
                                            g.uuid, g.index, kind, u.get("memory", 1024), u.get("cores", 0), slot,
                                            bool(layouts)))
        out_layouts = tuple(LayoutChange(self.node, gpus[c["gpu"]].uuid, make_layout(Slot(p, s) for p, s in c["slots"]))
                            for c in layouts)
        alloc = PodAllocation(alloc_pod or key, self.node, tuple(out_units), out_layouts)
        spec_containers = list(containers or [{"name": "main"}])
        obj = self.store.create_pod({
            "metadata": {"name": name, "namespace": namespace, "annotations": {
                POD_ALLOCATION: encode_allocation(alloc), POD_NODE: self.node, POD_BIND_PHASE: phase,
                POD_BIND_TIME: str(int(_time.time()))}},
            "spec": {"containers": spec_containers, "nodeName": self.node},
        })
        if lock:
            nodelock.acquire(self.store, self.node, key, "test-extender", _time.time())
        return obj

    def annotations(self, name: str, namespace: str = "default") -> dict[str, str]:
        return dict(self.store.get_pod(namespace, name)["metadata"].get("annotations") or {})

    def registration(self) -> Any:
        from models.codecs import NODE_GPUS, decode_node

        raw = self.store.get_node(self.node)["metadata"]["annotations"][NODE_GPUS]
        return decode_node(raw)

    def lock_holder(self) -> str | None:
        from models import nodelock

        lock, _ = nodelock.read_lock(self.store, self.node)
        return lock.pod if lock else None
