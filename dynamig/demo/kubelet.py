"""A kubelet stand-in for one node: the real device-plugin protocol over a unix socket.

It serves ``v1beta1.Registration`` on ``<dir>/kubelet.sock``; when a plugin registers it dials the
plugin's socket, reads its options, follows ``ListAndWatch`` in a thread, and later calls
``Allocate`` once per container with device IDs it picks from the advertised healthy list, as the
kubelet's device manager does.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent import futures
from dataclasses import dataclass, field

import grpc

from deviceplugin.proto import api_pb2, api_pb2_grpc

log = logging.getLogger(__name__)


class AllocationFailed(Exception):
    """The plugin answered Allocate with an error (the kubelet fails the pod: UnexpectedAdmissionError)."""


@dataclass
class PluginEndpoint:
    resource: str
    endpoint: str
    channel: grpc.Channel
    stub: api_pb2_grpc.DevicePluginStub
    devices: dict[str, str] = field(default_factory=dict)  # ID -> health
    updates: int = 0


class _Registration(api_pb2_grpc.RegistrationServicer):
    def __init__(self, kubelet: KubeletSim) -> None:
        self.kubelet = kubelet

    def Register(self, request: api_pb2.RegisterRequest, context: grpc.ServicerContext) -> api_pb2.Empty:
        if request.version != "v1beta1":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unsupported version {request.version}")
        self.kubelet._connect(request.resource_name, request.endpoint)
        return api_pb2.Empty()


class KubeletSim:
    def __init__(self, plugin_dir: str) -> None:
        self.plugin_dir = plugin_dir
        self.socket = os.path.join(plugin_dir, "kubelet.sock")
        self.plugins: dict[str, PluginEndpoint] = {}
        self.in_use: set[str] = set()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._server: grpc.Server | None = None

    def start(self) -> None:
        os.makedirs(self.plugin_dir, exist_ok=True)
        if os.path.exists(self.socket):
            os.unlink(self.socket)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        api_pb2_grpc.add_RegistrationServicer_to_server(_Registration(self), self._server)
        self._server.add_insecure_port(f"unix://{self.socket}")
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None)
        for p in self.plugins.values():
            p.channel.close()

    def _connect(self, resource: str, endpoint: str) -> None:
        path = os.path.join(self.plugin_dir, endpoint)
        channel = grpc.insecure_channel(f"unix://{path}")
        stub = api_pb2_grpc.DevicePluginStub(channel)
        stub.GetDevicePluginOptions(api_pb2.Empty(), timeout=10)  # as kubelet does inside Register
        ep = PluginEndpoint(resource, endpoint, channel, stub)
        with self._lock:
            old = self.plugins.get(resource)
            self.plugins[resource] = ep
        if old is not None:
            old.channel.close()
        threading.Thread(target=self._watch, args=(ep,), daemon=True, name=f"lw-{endpoint}").start()

    def _watch(self, ep: PluginEndpoint) -> None:
        try:
            for resp in ep.stub.ListAndWatch(api_pb2.Empty()):
                with self._changed:
                    ep.devices = {d.ID: d.health for d in resp.devices}
                    ep.updates += 1
                    self._changed.notify_all()
        except grpc.RpcError as e:
            log.debug("ListAndWatch of %s ended: %s", ep.endpoint, e.code())

    def wait_for_devices(self, resource: str, timeout: float = 10.0) -> int:
        with self._changed:
            ok = self._changed.wait_for(
                lambda: resource in self.plugins and self.plugins[resource].updates > 0, timeout
            )
            if not ok:
                raise TimeoutError(f"no devices of {resource} advertised on {self.plugin_dir} within {timeout}s")
            return len(self.plugins[resource].devices)

    def allocate(self, resource: str, counts: list[int]) -> tuple[list[api_pb2.ContainerAllocateResponse], list[str]]:
        """One Allocate call per container (as kubelet does); returns responses and the device IDs used."""
        with self._lock:
            ep = self.plugins.get(resource)
            if ep is None:
                raise AllocationFailed(f"no device plugin registered for {resource}")
            free = sorted(i for i, h in ep.devices.items() if h == "Healthy" and i not in self.in_use)
            need = sum(counts)
            if need > len(free):
                raise AllocationFailed(f"{need} {resource} requested, {len(free)} allocatable")
            picked = free[:need]
            self.in_use.update(picked)
        responses = []
        offset = 0
        try:
            for n in counts:
                ids = picked[offset:offset + n]
                offset += n
                req = api_pb2.AllocateRequest(container_requests=[api_pb2.ContainerAllocateRequest(devices_ids=ids)])
                resp = ep.stub.Allocate(req, timeout=60)
                responses.append(resp.container_responses[0])
        except grpc.RpcError as e:
            self.release(picked)
            raise AllocationFailed(f"Allocate failed: {e.details()}") from e  # type: ignore[attr-defined]
        return responses, picked

    def release(self, ids: list[str]) -> None:
        with self._lock:
            self.in_use.difference_update(ids)
