"""The grpc.aio server bootstrap every service uses.

Health (grpc.health.v1) and reflection are registered for every service; domain errors become
status codes in one interceptor; SIGTERM/SIGINT stop the server gracefully (in-flight calls get
``shutdown_grace_s``), then the service's own cleanup runs.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common import metrics
from services.common.errors import INTERNAL_MESSAGE, TrainerAgentError
from services.common.logging import get_logger
from services.common.metrics import split_method

log = get_logger(__name__)

Registrar = Callable[[grpc.aio.Server], None]


async def _abort_for(exc: BaseException, context: grpc.aio.ServicerContext, method: str) -> None:
    if isinstance(exc, TrainerAgentError):
        log.info("rpc_error", method=method, code=exc.code.name, error=exc.message)
        await context.abort(exc.code, exc.message)
    log.exception("rpc_internal_error", method=method)
    await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """Binds a request id to the log context and maps exceptions to status codes, for every RPC kind."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        service_name, method_name = split_method(method)
        rpc_type = _rpc_type(handler)

        def bind() -> float:
            structlog.contextvars.bind_contextvars(request_id=uuid.uuid4().hex[:12], method=method)
            metrics.STARTED.labels(rpc_type, service_name, method_name).inc()
            return time.perf_counter()

        def done(started: float, context: grpc.aio.ServicerContext) -> None:
            code = context.code() or grpc.StatusCode.OK
            name = code.name if isinstance(code, grpc.StatusCode) else str(code)
            metrics.HANDLED.labels(rpc_type, service_name, method_name, name).inc()
            metrics.HANDLING.labels(rpc_type, service_name, method_name).observe(time.perf_counter() - started)

        if handler.unary_unary or handler.stream_unary:
            inner = handler.unary_unary or handler.stream_unary

            async def unary_response(request: Any, context: grpc.aio.ServicerContext) -> Any:
                started = bind()
                try:
                    return await inner(request, context)
                except (asyncio.CancelledError, grpc.aio.AbortError):
                    raise
                except Exception as exc:  # noqa: BLE001 - the one place exceptions become statuses
                    await _abort_for(exc, context, method)
                finally:
                    done(started, context)

            factory = (
                grpc.unary_unary_rpc_method_handler
                if handler.unary_unary
                else grpc.stream_unary_rpc_method_handler
            )
        else:
            inner_stream = handler.unary_stream or handler.stream_stream

            async def unary_response(request: Any, context: grpc.aio.ServicerContext) -> Any:  # type: ignore[misc]
                started = bind()
                try:
                    async for item in inner_stream(request, context):
                        yield item
                except (asyncio.CancelledError, grpc.aio.AbortError):
                    raise
                except Exception as exc:  # noqa: BLE001
                    await _abort_for(exc, context, method)
                finally:
                    done(started, context)

            factory = (
                grpc.unary_stream_rpc_method_handler
                if handler.unary_stream
                else grpc.stream_stream_rpc_method_handler
            )
        return factory(
            unary_response,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _rpc_type(handler: grpc.RpcMethodHandler) -> str:
    if handler.unary_unary:
        return "UNARY"
    if handler.unary_stream:
        return "SERVER_STREAM"
    if handler.stream_unary:
        return "CLIENT_STREAM"
    return "BIDI_STREAM"


async def serve(
    *,
    name: str,
    port: int,
    bind_host: str,
    registrars: Sequence[Registrar],
    service_names: Sequence[str],
    grace_s: float = 5.0,
    on_stop: Callable[[], Awaitable[None]] | None = None,
    ready: asyncio.Event | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
) -> None:
    """Run a grpc.aio server until SIGTERM/SIGINT; then stop gracefully and call ``on_stop``."""
    server = grpc.aio.server(
        interceptors=[*interceptors, ErrorMappingInterceptor()],
        options=[
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ],
    )
    for register in registrars:
        register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    all_names = [*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME]
    reflection.enable_server_reflection(all_names, server)
    bound = server.add_insecure_port(f"{bind_host}:{port}")
    if bound == 0:
        raise RuntimeError(f"{name}: cannot listen on {bind_host}:{port} (port in use?)")
    await server.start()
    for service_name in ("", *service_names):
        await health_servicer.set(service_name, health_pb2.HealthCheckResponse.SERVING)
    log.info("service_started", service=name, address=f"{bind_host}:{bound}")
    if ready is not None:
        ready.set()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("service_stopping", service=name, grace_s=grace_s)
    for service_name in ("", *service_names):
        await health_servicer.set(service_name, health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.stop(grace_s)
    if on_stop is not None:
        await on_stop()
    log.info("service_stopped", service=name)
