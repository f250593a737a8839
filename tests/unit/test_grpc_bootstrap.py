"""The shared interceptor on a real grpc.aio server: domain errors become status codes, metrics count them."""

from __future__ import annotations

import grpc
import pytest
from prometheus_client import REGISTRY

from services.common.errors import INTERNAL_MESSAGE, InvalidArgument
from services.common.grpc_server import ErrorMappingInterceptor
from traineragent.v1 import task_pb2, task_pb2_grpc


class _Servicer(task_pb2_grpc.TaskServiceServicer):
    async def GetJob(self, request, context):  # noqa: ANN001, ANN201
        if request.job_id == "bad":
            raise InvalidArgument("job id 'bad' is not valid: use the id SubmitJob returned")
        if request.job_id == "boom":
            raise RuntimeError("secret internals")
        return task_pb2.GetJobResponse()


def _count(code: str) -> float:
    return REGISTRY.get_sample_value("grpc_server_handled_total", {
        "grpc_type": "UNARY", "grpc_service": "traineragent.v1.TaskService", "grpc_method": "GetJob",
        "grpc_code": code}) or 0.0


@pytest.mark.asyncio
async def test_errors_map_to_codes_and_are_counted():
    server = grpc.aio.server(interceptors=[ErrorMappingInterceptor()])
    task_pb2_grpc.add_TaskServiceServicer_to_server(_Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    before = {code: _count(code) for code in ("OK", "INVALID_ARGUMENT", "INTERNAL")}
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = task_pb2_grpc.TaskServiceStub(channel)
            await stub.GetJob(task_pb2.GetJobRequest(job_id="fine"), timeout=5)
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await stub.GetJob(task_pb2.GetJobRequest(job_id="bad"), timeout=5)
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "use the id SubmitJob returned" in bad.value.details()
            with pytest.raises(grpc.aio.AioRpcError) as boom:
                await stub.GetJob(task_pb2.GetJobRequest(job_id="boom"), timeout=5)
            assert boom.value.code() == grpc.StatusCode.INTERNAL
            assert boom.value.details() == INTERNAL_MESSAGE and "secret" not in boom.value.details()
    finally:
        await server.stop(None)
    for code in ("OK", "INVALID_ARGUMENT", "INTERNAL"):
        assert _count(code) == before[code] + 1, code
    assert REGISTRY.get_sample_value("grpc_server_handling_seconds_count", {
        "grpc_type": "UNARY", "grpc_service": "traineragent.v1.TaskService", "grpc_method": "GetJob"}) >= 3
