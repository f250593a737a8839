"""gRPC channels to the other services, with retries on UNAVAILABLE in the service config."""

from __future__ import annotations

import json

import grpc

from traineragent.v1 import data_pb2_grpc, model_pb2_grpc, server_pb2_grpc, task_pb2_grpc

_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.2s",
                    "maxBackoff": "3s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)

CHANNEL_OPTIONS = [
    ("grpc.service_config", _SERVICE_CONFIG),
    ("grpc.enable_retries", 1),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


def aio_channel(address: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)


class ServiceClients:
    """Stubs for the internal services, created lazily, one channel each."""

    def __init__(self, task: str, data: str, model: str, server: str) -> None:
        self._addresses = {"task": task, "data": data, "model": model, "server": server}
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _channel(self, name: str) -> grpc.aio.Channel:
        if name not in self._channels:
            self._channels[name] = aio_channel(self._addresses[name])
        return self._channels[name]

    @property
    def task(self) -> task_pb2_grpc.TaskServiceStub:
        return task_pb2_grpc.TaskServiceStub(self._channel("task"))

    @property
    def data(self) -> data_pb2_grpc.DataServiceStub:
        return data_pb2_grpc.DataServiceStub(self._channel("data"))

    @property
    def model(self) -> model_pb2_grpc.ModelServiceStub:
        return model_pb2_grpc.ModelServiceStub(self._channel("model"))

    @property
    def server(self) -> server_pb2_grpc.ServerServiceStub:
        return server_pb2_grpc.ServerServiceStub(self._channel("server"))

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
