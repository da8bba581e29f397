"""A kubelet device manager stand-in over real unix-socket gRPC (the demo's kubelet, and the tests').

It serves ``Registration`` on ``<dir>/kubelet.sock`` and behaves as kubelet does
(``reference/deviceplugin-api.md`` §4-6): inside ``Register`` it checks the version and resource name,
dials the plugin's socket and calls ``GetDevicePluginOptions`` before answering; then it follows
``ListAndWatch`` in the background (each message replaces the device set). ``restart()`` deletes every
socket in the directory and recreates ``kubelet.sock``, as a kubelet restart does. ``admit(n)`` picks
``n`` free healthy devices (asking ``GetPreferredAllocation`` when offered) and calls ``Allocate``.
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


class AllocationFailed(Exception):
    """The plugin refused Allocate (the kubelet fails the pod with UnexpectedAdmissionError)."""


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


class KubeletSim:
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
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="kubelet-sim"))
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

    def __enter__(self) -> KubeletSim:
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
        threading.Thread(target=self._watch, args=(ep,), daemon=True, name=f"kubelet-sim-law-{ep.resource}").start()

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

    def wait_for_devices(self, resource: str = "nvidia.com/gpu", timeout: float = 10.0) -> int:
        if not self.wait_for(lambda: resource in self.endpoints and self.endpoints[resource].updates > 0, timeout):
            raise TimeoutError(f"no {resource} devices advertised in {self.plugin_dir} within {timeout}s")
        return len(self.devices(resource))

    def admit_pod(self, counts: Sequence[int], resource: str = "nvidia.com/gpu") -> tuple[list[Any], list[str]]:
        """Admit a pod: one ``Allocate`` per container, as the device manager does. On a refusal every
        device taken for the pod is released and :class:`AllocationFailed` says why."""
        responses: list[Any] = []
        taken: list[str] = []
        try:
            for n in counts:
                ids, resp = self.admit(n, resource)
                taken.extend(ids)
                responses.append(resp)
        except (grpc.RpcError, LookupError) as e:
            self.release(taken)
            detail = e.details() if isinstance(e, grpc.RpcError) else str(e)  # type: ignore[attr-defined]
            raise AllocationFailed(f"Allocate failed: {detail}") from e
        return responses, taken


class _Registration(api_pb2_grpc.RegistrationServicer):
    def __init__(self, kubelet: KubeletSim) -> None:
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


