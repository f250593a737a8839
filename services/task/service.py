"""The Task service's gRPC servicer: messages in, agent calls, messages out."""

from __future__ import annotations

import grpc

from services.task.agent import TaskAgent
from traineragent.v1 import task_pb2, task_pb2_grpc


class TaskServicer(task_pb2_grpc.TaskServiceServicer):
    def __init__(self, agent: TaskAgent) -> None:
        self.agent = agent

    async def CreateJob(self, request: task_pb2.CreateJobRequest, context: grpc.aio.ServicerContext) -> task_pb2.CreateJobResponse:
        job = await self.agent.create_job(request.request, request.dataset, request.options)
        return task_pb2.CreateJobResponse(job=job)

    async def GetJob(self, request: task_pb2.GetJobRequest, context: grpc.aio.ServicerContext) -> task_pb2.GetJobResponse:
        return task_pb2.GetJobResponse(job=await self.agent.get_job(request.job_id))

    async def ListJobs(self, request: task_pb2.ListJobsRequest, context: grpc.aio.ServicerContext) -> task_pb2.ListJobsResponse:
        return task_pb2.ListJobsResponse(jobs=await self.agent.list_jobs(request.limit))

    async def CancelJob(self, request: task_pb2.CancelJobRequest, context: grpc.aio.ServicerContext) -> task_pb2.CancelJobResponse:
        return task_pb2.CancelJobResponse(job=await self.agent.cancel_job(request.job_id))

    async def ReplyToJob(self, request: task_pb2.ReplyToJobRequest, context: grpc.aio.ServicerContext) -> task_pb2.ReplyToJobResponse:
        return task_pb2.ReplyToJobResponse(job=await self.agent.reply_to_job(request.job_id, dict(request.answers)))

    async def PlanTask(self, request: task_pb2.PlanTaskRequest, context: grpc.aio.ServicerContext) -> task_pb2.PlanTaskResponse:
        return task_pb2.PlanTaskResponse(task_spec=await self.agent.plan(request.request, request.brain))
