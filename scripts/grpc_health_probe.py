"""Container health check: ask a local gRPC server's standard health service whether it is SERVING.

``python scripts/grpc_health_probe.py PORT [--service NAME] [--timeout SECONDS]`` checks
``127.0.0.1:PORT`` (the overall status, service ``""``, unless a name is given) and exits 0 when the
answer is SERVING, 1 otherwise (not serving, unreachable, timed out). docker-compose.yml calls it
from every gRPC service's healthcheck.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(address: str, service: str = "", timeout_s: float = 3.0) -> bool:
    """True when the server at ``address`` reports ``service`` as SERVING within ``timeout_s``."""
    try:
        # A local probe never goes through an HTTP proxy, whatever http_proxy says.
        with grpc.insecure_channel(address, options=[("grpc.enable_http_proxy", 0)]) as channel:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
    except grpc.RpcError as exc:
        print(f"{address}: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return False
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    if response.status != health_pb2.HealthCheckResponse.SERVING:
        print(f"{address}: {status}", file=sys.stderr)
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int, help="the port the service listens on, on 127.0.0.1")
    parser.add_argument("--service", default="", help="the service name to check (default: the whole server)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer")
    args = parser.parse_args(argv)
    return 0 if check(f"127.0.0.1:{args.port}", args.service, args.timeout) else 1


if __name__ == "__main__":
    sys.exit(main())
