"""The Model service's gRPC servicer."""

from __future__ import annotations

import grpc

from services.model.agent import ModelAgent
from traineragent.v1 import model_pb2, model_pb2_grpc


class ModelServicer(model_pb2_grpc.ModelServiceServicer):
    def __init__(self, agent: ModelAgent) -> None:
        self.agent = agent

    async def StartTraining(self, request: model_pb2.StartTrainingRequest,
                            context: grpc.aio.ServicerContext) -> model_pb2.StartTrainingResponse:
        candidates = self.agent.start_training(request)
        return model_pb2.StartTrainingResponse(operation_id=request.operation_id, candidates=candidates)
