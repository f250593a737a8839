"""The start-up every service shares: settings, logging, NATS, then the gRPC server until SIGTERM."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import grpc

from services.common.bus import Bus
from services.common.config import Settings
from services.common.grpc_server import Registrar, serve
from services.common.logging import configure_logging, get_logger
from services.common.metrics import serve_metrics

log = get_logger(__name__)

# Builds the service from the connected bus: returns the registrars and the cleanup to run on stop.
Builder = Callable[[Bus, Settings], Awaitable[tuple[Sequence[Registrar], Callable[[], Awaitable[None]]]]]


def run_service(
    name: str,
    port_of: Callable[[Settings], int],
    service_names: Sequence[str],
    build: Builder,
    interceptors: Callable[[Settings], Sequence[grpc.aio.ServerInterceptor]] = lambda s: (),
) -> None:
    """Run one service process until SIGTERM/SIGINT."""
    settings = Settings.from_env()
    configure_logging(name, settings.log_level, settings.log_format)

    serve_metrics(settings.metrics_port, settings.bind_host)

    async def main() -> None:
        bus = await Bus.connect(settings.nats_url, name=f"traineragent-{name}")
        registrars, cleanup = await build(bus, settings)

        async def on_stop() -> None:
            await cleanup()
            await bus.close()

        await serve(
            name=name,
            port=port_of(settings),
            bind_host=settings.bind_host,
            registrars=registrars,
            service_names=service_names,
            grace_s=settings.shutdown_grace_s,
            on_stop=on_stop,
            interceptors=interceptors(settings),
        )

    asyncio.run(main())
