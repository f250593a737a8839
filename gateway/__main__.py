"""python -m gateway — TrainerAgent's public gRPC door."""

from gateway.auth import ApiKeyInterceptor
from gateway.service import GatewayServicer
from services.common.artifacts import NatsArtifactStore
from services.common.bus import Bus
from services.common.clients import ServiceClients
from services.common.config import Settings
from services.common.service_main import run_service
from traineragent.v1 import gateway_pb2, gateway_pb2_grpc


async def build(bus: Bus, settings: Settings):  # noqa: ANN201
    clients = ServiceClients(settings.task_addr, settings.data_addr, settings.model_addr, settings.server_addr)
    servicer = GatewayServicer(bus, NatsArtifactStore(bus.js), clients, settings)
    return [lambda server: gateway_pb2_grpc.add_GatewayServiceServicer_to_server(servicer, server)], clients.close


if __name__ == "__main__":
    run_service(
        "gateway",
        lambda s: s.gateway_port,
        [gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name],
        build,
        interceptors=lambda s: [ApiKeyInterceptor(s.api_keys)],
    )
