"""The kubelet device plugin gRPC service (v1beta1) and the registration client.

The servicer is a thin adapter: the :class:`~deviceplugin.agent.NodeAgent` owns the device list and
the allocation logic. One server per socket generation; a kubelet restart gets a fresh server.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent import futures
from typing import Any, Protocol

import grpc

from .proto import api_pb2, api_pb2_grpc

log = logging.getLogger("dynamig.deviceplugin")

API_VERSION = "v1beta1"
HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"
KUBELET_SOCKET = "kubelet.sock"
MAX_UNIX_PATH = 107


class PluginAbort(Exception):
    """Raised by the agent's handlers to answer kubelet with a gRPC error."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(message)


class PluginBackend(Protocol):
    """What the servicer needs from the agent."""

    def device_list(self) -> tuple[int, Sequence[tuple[str, bool]]]:
        """(version, [(device id, healthy)])."""
        ...

    def wait_devices(self, version: int, timeout: float) -> int:
        """Block until the device list version differs from ``version`` (or timeout); the current version."""
        ...

    def allocate(self, device_ids: Sequence[str]) -> api_pb2.ContainerAllocateResponse: ...

    def preferred(self, available: Sequence[str], must: Sequence[str], size: int) -> list[str]: ...


class DevicePluginServicer(api_pb2_grpc.DevicePluginServicer):
    def __init__(self, backend: PluginBackend, stopped: threading.Event) -> None:
        self.backend = backend
        self.stopped = stopped

    def GetDevicePluginOptions(self, request: api_pb2.Empty, context: grpc.ServicerContext) -> Any:
        return api_pb2.DevicePluginOptions(pre_start_required=False, get_preferred_allocation_available=True)

    def ListAndWatch(self, request: api_pb2.Empty, context: grpc.ServicerContext) -> Iterator[Any]:
        sent = -1
        while not self.stopped.is_set() and context.is_active():
            version, devices = self.backend.device_list()
            if version != sent:
                sent = version
                yield api_pb2.ListAndWatchResponse(
                    devices=[api_pb2.Device(ID=d, health=HEALTHY if ok else UNHEALTHY) for d, ok in devices])
                continue
            self.backend.wait_devices(version, 0.5)

    def GetPreferredAllocation(self, request: Any, context: grpc.ServicerContext) -> Any:
        out = []
        for req in request.container_requests:
            ids = self.backend.preferred(list(req.available_deviceIDs), list(req.must_include_deviceIDs),
                                         int(req.allocation_size))
            out.append(api_pb2.ContainerPreferredAllocationResponse(deviceIDs=ids))
        return api_pb2.PreferredAllocationResponse(container_responses=out)

    def Allocate(self, request: Any, context: grpc.ServicerContext) -> Any:
        responses = []
        for req in request.container_requests:
            try:
                responses.append(self.backend.allocate(list(req.devices_ids)))
            except PluginAbort as e:
                context.abort(e.code, e.message)
            except Exception as e:  # never let an allocation bug take the plugin down
                log.exception("Allocate failed")
                context.abort(grpc.StatusCode.INTERNAL, f"dynamig device plugin: {e}")
        return api_pb2.AllocateResponse(container_responses=responses)

    def PreStartContainer(self, request: Any, context: grpc.ServicerContext) -> Any:
        return api_pb2.PreStartContainerResponse()


class PluginServer:
    """One gRPC server on one unix socket (a fresh one per kubelet generation)."""

    def __init__(self, socket_path: str, backend: PluginBackend, workers: int = 16) -> None:
        if len(socket_path) > MAX_UNIX_PATH:
            raise ValueError(f"unix socket path too long ({len(socket_path)} > {MAX_UNIX_PATH}): {socket_path}")
        self.socket_path = socket_path
        self.stopped = threading.Event()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dp-grpc"))
        api_pb2_grpc.add_DevicePluginServicer_to_server(DevicePluginServicer(backend, self.stopped), self.server)

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        port = self.server.add_insecure_port(f"unix://{self.socket_path}")
        if port == 0:
            raise OSError(f"cannot listen on unix socket {self.socket_path}")
        self.server.start()

    def stop(self, grace: float = 0.2) -> None:
        self.stopped.set()
        self.server.stop(grace).wait(grace + 2)


def register(kubelet_socket: str, endpoint: str, resource_name: str, timeout_s: float = 10.0) -> None:
    """Call kubelet's ``Registration.Register`` (kubelet dials back and asks for our options while
    this call is in flight, so our server must already be serving). Raises ``grpc.RpcError``."""
    with grpc.insecure_channel(f"unix://{kubelet_socket}") as ch:
        grpc.channel_ready_future(ch).result(timeout=timeout_s)
        api_pb2_grpc.RegistrationStub(ch).Register(
            api_pb2.RegisterRequest(
                version=API_VERSION, endpoint=endpoint, resource_name=resource_name,
                options=api_pb2.DevicePluginOptions(pre_start_required=False,
                                                    get_preferred_allocation_available=True),
            ),
            timeout=timeout_s,
        )
