"""One inference endpoint: a synchronous gRPC server with OIP v2, health and reflection on one port.

A deployment's endpoint runs inside the Server agent's asyncio process; a synchronous server keeps
its own threads, so inference never blocks the agent's event loop (and onnxruntime releases the GIL).
"""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from inference import grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc
from services.common.errors import FailedPrecondition, ResourceExhausted
from services.server.oip import InferenceServicer

INFERENCE_SERVICE = grpc_predict_v2_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def _address(host: str, port: int) -> str:
    """host:port, with an IPv6 literal in brackets."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


class Endpoint:
    """Serves one :class:`InferenceServicer` until :meth:`stop`."""

    def __init__(self, servicer: InferenceServicer, max_workers: int = 4) -> None:
        self.servicer = servicer
        self.max_workers = max_workers
        self.port = 0
        self._server: grpc.Server | None = None
        self._health: health.HealthServicer | None = None

    def start(self, host: str, port: int) -> int:
        """Bind ``host:port`` (0 = any free port), start serving and return the bound port."""
        if self._server is not None:
            raise FailedPrecondition(f"the endpoint is already serving on port {self.port}")
        server = grpc.server(
            ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="oip"),
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                # Without this a second server could bind the same port and steal half the calls.
                ("grpc.so_reuseport", 0),
            ],
        )
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(self.servicer, server)
        health_servicer = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection([INFERENCE_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME],
                                            server)
        address = _address(host, port)
        try:
            bound = server.add_insecure_port(address)
        except RuntimeError as exc:
            bound = 0
            detail = f": {exc}"
        else:
            detail = ""
        if not bound:
            raise ResourceExhausted(f"cannot bind the inference endpoint to {address}{detail}; "
                                    "the port is taken: choose another port or 0 for any free one")
        server.start()
        for service in ("", INFERENCE_SERVICE):
            health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
        self._server, self._health, self.port = server, health_servicer, bound
        return bound

    def stop(self, grace: float | None = 2.0) -> None:
        """Report NOT_SERVING, let in-flight calls finish for ``grace`` seconds, then close."""
        server, self._server = self._server, None
        if server is None:
            return
        if self._health is not None:
            self._health.enter_graceful_shutdown()
        server.stop(grace).wait()

    @property
    def serving(self) -> bool:
        return self._server is not None


def find_free_port(host: str, start: int, attempts: int = 200) -> int:
    """The first port from ``start`` upwards (``attempts`` ports) that ``host`` can bind right now.

    Another process may take it before we bind it; the caller's bind fails clearly if so.
    """
    for port in range(start, min(start + attempts, 65536)):
        if _can_bind(host, port):
            return port
    raise ResourceExhausted(f"no free port on {host} in {start}..{start + attempts - 1}; free one there "
                            "or configure another endpoint port range")


def _can_bind(host: str, port: int) -> bool:
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return False
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # Like the gRPC server: a port in TIME_WAIT is free to bind, a listening one is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError:
            return False
    return True
