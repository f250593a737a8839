"""python -m services.model — the Model agent's gRPC service (training runs on services.model.worker)."""

from services.common.artifacts import NatsArtifactStore
from services.common.bus import Bus
from services.common.config import Settings
from services.common.service_main import run_service
from services.model.agent import ModelAgent
from services.model.service import ModelServicer
from traineragent.v1 import model_pb2, model_pb2_grpc


async def build(bus: Bus, settings: Settings):  # noqa: ANN201
    agent = ModelAgent(bus, NatsArtifactStore(bus.js), settings)
    servicer = ModelServicer(agent)
    return [lambda server: model_pb2_grpc.add_ModelServiceServicer_to_server(servicer, server)], agent.close


if __name__ == "__main__":
    run_service("model", lambda s: s.model_port, [model_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name], build)
