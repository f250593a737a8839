"""python -m services.data — the Data agent's gRPC service."""

from services.common.artifacts import NatsArtifactStore
from services.common.bus import Bus
from services.common.config import Settings
from services.common.service_main import run_service
from services.data.agent import DataAgent
from services.data.service import DataServicer
from traineragent.v1 import data_pb2, data_pb2_grpc


async def build(bus: Bus, settings: Settings):  # noqa: ANN201
    agent = DataAgent(bus, NatsArtifactStore(bus.js), settings)
    servicer = DataServicer(agent)
    return [lambda server: data_pb2_grpc.add_DataServiceServicer_to_server(servicer, server)], agent.close


if __name__ == "__main__":
    run_service("data", lambda s: s.data_port, [data_pb2.DESCRIPTOR.services_by_name["DataService"].full_name], build)
