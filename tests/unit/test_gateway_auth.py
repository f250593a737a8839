"""API keys at the gateway: refused without a key, served with one; health stays open for probes."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from gateway.auth import ApiKeyInterceptor
from traineragent.v1 import task_pb2, task_pb2_grpc


class _Servicer(task_pb2_grpc.TaskServiceServicer):
    async def GetJob(self, request, context):  # noqa: ANN001, ANN201
        return task_pb2.GetJobResponse()


@pytest.mark.asyncio
async def test_api_keys():
    server = grpc.aio.server(interceptors=[ApiKeyInterceptor(["s3cret", "other"])])
    task_pb2_grpc.add_TaskServiceServicer_to_server(_Servicer(), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = task_pb2_grpc.TaskServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await stub.GetJob(task_pb2.GetJobRequest(job_id="x"), timeout=5)
            assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "x-api-key" in missing.value.details()
            with pytest.raises(grpc.aio.AioRpcError) as wrong:
                await stub.GetJob(task_pb2.GetJobRequest(job_id="x"), timeout=5, metadata=(("x-api-key", "nope"),))
            assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED
            await stub.GetJob(task_pb2.GetJobRequest(job_id="x"), timeout=5, metadata=(("x-api-key", "s3cret"),))
            await stub.GetJob(task_pb2.GetJobRequest(job_id="x"), timeout=5,
                              metadata=(("authorization", "Bearer other"),))
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await server.stop(None)


@pytest.mark.asyncio
async def test_no_keys_means_open():
    server = grpc.aio.server(interceptors=[ApiKeyInterceptor([])])
    task_pb2_grpc.add_TaskServiceServicer_to_server(_Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await task_pb2_grpc.TaskServiceStub(channel).GetJob(task_pb2.GetJobRequest(job_id="x"), timeout=5)
    finally:
        await server.stop(None)
