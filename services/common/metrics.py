"""Prometheus metrics with the usual gRPC server names, served when TRAINERAGENT_METRICS_PORT is set."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

STARTED = Counter("grpc_server_started_total", "RPCs started on the server.",
                  ["grpc_type", "grpc_service", "grpc_method"])
HANDLED = Counter("grpc_server_handled_total", "RPCs completed on the server, by status code.",
                  ["grpc_type", "grpc_service", "grpc_method", "grpc_code"])
HANDLING = Histogram("grpc_server_handling_seconds", "Time to handle an RPC, to its status.",
                     ["grpc_type", "grpc_service", "grpc_method"],
                     buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))


def split_method(full_method: str) -> tuple[str, str]:
    """'/traineragent.v1.TaskService/GetJob' -> ('traineragent.v1.TaskService', 'GetJob')."""
    service, _, method = full_method.lstrip("/").partition("/")
    return service, method


def serve_metrics(port: int, host: str) -> None:
    """Expose /metrics on ``host:port`` (a background thread); port 0 leaves metrics off."""
    if port:
        start_http_server(port, addr=host)
