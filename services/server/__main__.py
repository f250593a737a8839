"""python -m services.server — the Server agent's gRPC service (and the endpoints it runs)."""

from services.common.artifacts import NatsArtifactStore
from services.common.bus import Bus
from services.common.config import Settings
from services.common.service_main import run_service
from services.server.agent import ServerAgent
from services.server.service import ServerServicer
from traineragent.v1 import server_pb2, server_pb2_grpc


async def build(bus: Bus, settings: Settings):  # noqa: ANN201
    agent = ServerAgent(bus, NatsArtifactStore(bus.js), settings)
    await agent.restore()
    servicer = ServerServicer(agent)
    return [lambda server: server_pb2_grpc.add_ServerServiceServicer_to_server(servicer, server)], agent.close


if __name__ == "__main__":
    run_service("server", lambda s: s.server_port, [server_pb2.DESCRIPTOR.services_by_name["ServerService"].full_name], build)
