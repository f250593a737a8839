"""The Server service's gRPC servicer."""

from __future__ import annotations

import grpc

from services.server.agent import ServerAgent
from traineragent.v1 import server_pb2, server_pb2_grpc


class ServerServicer(server_pb2_grpc.ServerServiceServicer):
    def __init__(self, agent: ServerAgent) -> None:
        self.agent = agent

    async def Deploy(self, request: server_pb2.DeployRequest, context: grpc.aio.ServicerContext) -> server_pb2.DeployResponse:
        self.agent.start_deploy(request)
        return server_pb2.DeployResponse(operation_id=request.operation_id)

    async def ListDeployments(self, request: server_pb2.ListDeploymentsRequest,
                              context: grpc.aio.ServicerContext) -> server_pb2.ListDeploymentsResponse:
        return server_pb2.ListDeploymentsResponse(deployments=await self.agent.list_deployments())

    async def DeleteDeployment(self, request: server_pb2.DeleteDeploymentRequest,
                               context: grpc.aio.ServicerContext) -> server_pb2.DeleteDeploymentResponse:
        return server_pb2.DeleteDeploymentResponse(deployment=await self.agent.delete_deployment(request.name))
