"""The Data service's gRPC servicer."""

from __future__ import annotations

import grpc

from services.data.agent import DataAgent
from traineragent.v1 import data_pb2, data_pb2_grpc


class DataServicer(data_pb2_grpc.DataServiceServicer):
    def __init__(self, agent: DataAgent) -> None:
        self.agent = agent

    async def CheckDataSource(self, request: data_pb2.CheckDataSourceRequest,
                              context: grpc.aio.ServicerContext) -> data_pb2.CheckDataSourceResponse:
        return data_pb2.CheckDataSourceResponse(description=await self.agent.check_source(request.dataset))

    async def PrepareDataset(self, request: data_pb2.PrepareDatasetRequest,
                             context: grpc.aio.ServicerContext) -> data_pb2.PrepareDatasetResponse:
        self.agent.start_prepare(request.job_id, request.operation_id, request.dataset, request.task_spec,
                                 request=request.request)
        return data_pb2.PrepareDatasetResponse(operation_id=request.operation_id)
