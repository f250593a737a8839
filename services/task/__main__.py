"""python -m services.task — the Task agent's gRPC service."""

from services.common.bus import Bus
from services.common.clients import ServiceClients
from services.common.config import Settings
from services.common.service_main import run_service
from services.task.agent import TaskAgent
from services.task.service import TaskServicer
from traineragent.v1 import task_pb2, task_pb2_grpc


async def build(bus: Bus, settings: Settings):  # noqa: ANN201
    clients = ServiceClients(settings.task_addr, settings.data_addr, settings.model_addr, settings.server_addr)
    agent = TaskAgent(bus, clients, settings)
    agent.start_warm_up()
    await agent.resume()
    servicer = TaskServicer(agent)
    return [lambda server: task_pb2_grpc.add_TaskServiceServicer_to_server(servicer, server)], agent.close


if __name__ == "__main__":
    run_service("task", lambda s: s.task_port, [task_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name], build)
