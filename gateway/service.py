"""GatewayService: validates, forwards to the Task and Server services, takes uploads, streams events."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import pathlib
import tarfile
import tempfile
from collections.abc import AsyncIterator

import grpc

from services.common.artifacts import ArtifactStore
from services.common.bus import TERMINAL_STATES, Bus
from services.common.clients import ServiceClients
from services.common.config import Settings
from services.common.errors import FailedPrecondition, InvalidArgument, ResourceExhausted, from_rpc_error
from services.common.jsonfmt import message_to_json
from services.common.logging import get_logger
from services.common.uploads import UploadManifest, store_manifest
from services.data import sources
from traineragent.v1 import (
    common_pb2,
    gateway_pb2,
    gateway_pb2_grpc,
    server_pb2,
    task_pb2,
)

log = get_logger(__name__)

DOWNLOAD_CHUNK = 256 * 1024


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(self, bus: Bus, store: ArtifactStore, clients: ServiceClients, settings: Settings) -> None:
        self.bus = bus
        self.store = store
        self.clients = clients
        self.settings = settings

    def _timeout(self, context: grpc.aio.ServicerContext) -> float:
        """What is left of the caller's deadline, capped by the configured RPC timeout."""
        remaining = context.time_remaining()
        limit = self.settings.rpc_timeout_s
        return max(0.1, min(remaining, limit)) if remaining is not None else limit

    async def _forward(self, call):  # noqa: ANN001, ANN202
        try:
            return await call
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from exc

    # --- jobs ------------------------------------------------------------------------------------

    async def SubmitJob(self, request: gateway_pb2.SubmitJobRequest,
                        context: grpc.aio.ServicerContext) -> gateway_pb2.SubmitJobResponse:
        if not request.request.strip():
            raise InvalidArgument(
                "the request is empty: say what the model should do, e.g. "
                "'Recognise handwritten digits, at least 97% accuracy, under 5 ms per image'"
            )
        if not request.dataset.WhichOneof("source"):
            raise InvalidArgument("no dataset given: upload one with UploadDataset (upload_id) or name a server_path")
        response = await self._forward(self.clients.task.CreateJob(
            task_pb2.CreateJobRequest(request=request.request, dataset=request.dataset, options=request.options),
            timeout=self._timeout(context)))
        return gateway_pb2.SubmitJobResponse(job=response.job)

    async def GetJob(self, request: task_pb2.GetJobRequest, context: grpc.aio.ServicerContext) -> task_pb2.GetJobResponse:
        return await self._forward(self.clients.task.GetJob(request, timeout=self._timeout(context)))

    async def ListJobs(self, request: task_pb2.ListJobsRequest,
                       context: grpc.aio.ServicerContext) -> task_pb2.ListJobsResponse:
        return await self._forward(self.clients.task.ListJobs(request, timeout=self._timeout(context)))

    async def CancelJob(self, request: task_pb2.CancelJobRequest,
                        context: grpc.aio.ServicerContext) -> task_pb2.CancelJobResponse:
        return await self._forward(self.clients.task.CancelJob(request, timeout=self._timeout(context)))

    async def ReplyToJob(self, request: task_pb2.ReplyToJobRequest,
                         context: grpc.aio.ServicerContext) -> task_pb2.ReplyToJobResponse:
        return await self._forward(self.clients.task.ReplyToJob(request, timeout=self._timeout(context)))

    async def PlanTask(self, request: task_pb2.PlanTaskRequest,
                       context: grpc.aio.ServicerContext) -> task_pb2.PlanTaskResponse:
        return await self._forward(self.clients.task.PlanTask(request, timeout=self._timeout(context)))

    async def WatchJob(self, request: gateway_pb2.WatchJobRequest,
                       context: grpc.aio.ServicerContext) -> AsyncIterator[gateway_pb2.WatchJobResponse]:
        await self.bus.get_job(request.job_id)  # NOT_FOUND before streaming anything
        async for event in self.bus.event_history(request.job_id):
            if event.seq >= request.from_seq:
                yield gateway_pb2.WatchJobResponse(event=event)
            if event.kind == common_pb2.EVENT_KIND_STATE_CHANGED and event.state in TERMINAL_STATES:
                return

    # --- deployments ---------------------------------------------------------------------------------

    async def ListDeployments(self, request: server_pb2.ListDeploymentsRequest,
                              context: grpc.aio.ServicerContext) -> server_pb2.ListDeploymentsResponse:
        return await self._forward(self.clients.server.ListDeployments(request, timeout=self._timeout(context)))

    async def DeleteDeployment(self, request: server_pb2.DeleteDeploymentRequest,
                               context: grpc.aio.ServicerContext) -> server_pb2.DeleteDeploymentResponse:
        return await self._forward(self.clients.server.DeleteDeployment(request, timeout=self._timeout(context)))

    # --- data in, models out --------------------------------------------------------------------------

    async def UploadDataset(self, request_iterator: AsyncIterator[gateway_pb2.UploadDatasetRequest],
                            context: grpc.aio.ServicerContext) -> gateway_pb2.UploadDatasetResponse:
        scratch = self.settings.work_dir / "gateway"
        scratch.mkdir(parents=True, exist_ok=True)
        header: gateway_pb2.UploadHeader | None = None
        digest = hashlib.sha256()
        size = 0
        with tempfile.NamedTemporaryFile(dir=scratch, suffix=".upload") as tmp:
            async for message in request_iterator:
                if message.WhichOneof("payload") == "header":
                    if header is not None:
                        raise InvalidArgument("the upload sent two headers; send one header, then the chunks")
                    header = message.header
                    kind = sources.source_kind(header.filename)  # a data file or an archive
                    if header.size_bytes > self.settings.max_upload_bytes:
                        raise ResourceExhausted(_too_big(header.size_bytes, self.settings.max_upload_bytes))
                    continue
                if header is None:
                    raise InvalidArgument("the upload must start with a header (file name, size)")
                size += len(message.chunk)
                if size > self.settings.max_upload_bytes:
                    raise ResourceExhausted(_too_big(size, self.settings.max_upload_bytes))
                digest.update(message.chunk)
                tmp.write(message.chunk)
            if header is None:
                raise InvalidArgument("the upload was empty: send a header, then the file's bytes")
            tmp.flush()
            sha = digest.hexdigest()
            if header.size_bytes and header.size_bytes != size:
                raise InvalidArgument(
                    f"the upload is truncated: the header announced {header.size_bytes} bytes but {size} arrived; "
                    "upload it again"
                )
            if header.sha256 and header.sha256.lower() != sha:
                raise InvalidArgument("the upload's SHA-256 does not match the header's; upload it again")
            path = pathlib.Path(tmp.name)
            if kind == sources.FILE_KIND:  # one CSV/TSV/JSONL/Parquet file, stored as sent
                num_files = await asyncio.to_thread(sources.check_data_file, path, header.filename)
            else:
                num_files = await asyncio.to_thread(sources.inspect_archive, path, kind)
            if num_files == 0:
                raise InvalidArgument(
                    f"the archive {header.filename} holds no files: pack a folder with one sub-folder per class"
                )
            archive_key = await self.store.put_file(path)
        manifest = UploadManifest(archive_artifact=archive_key, filename=header.filename, kind=kind,
                                  size_bytes=size, sha256=sha, num_files=num_files)
        upload_id = await store_manifest(self.store, manifest)
        log.info("upload_stored", upload_id=upload_id, bytes=size, files=num_files)
        return gateway_pb2.UploadDatasetResponse(upload_id=upload_id, size_bytes=size, sha256=sha, num_files=num_files)

    async def DownloadModel(self, request: gateway_pb2.DownloadModelRequest,
                            context: grpc.aio.ServicerContext) -> AsyncIterator[gateway_pb2.DownloadModelResponse]:
        job = (await self._forward(self.clients.task.GetJob(task_pb2.GetJobRequest(job_id=request.job_id),
                                                            timeout=self._timeout(context)))).job
        if not job.model_report.bundle_artifact:
            raise FailedPrecondition(
                f"job {job.job_id} has no trained model yet; wait until it SUCCEEDED (`trainer-agent watch`)"
            )
        scratch = self.settings.work_dir / "gateway"
        scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=scratch) as tmp:
            tar_path = await self.store.get_to_file(job.model_report.bundle_artifact, pathlib.Path(tmp) / "bundle.tar")
            with tarfile.open(tar_path) as tar:
                members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()]
            report = json.dumps(message_to_json(job), indent=2).encode()
            for name, data in [*members, ("report.json", report)]:
                stream = io.BytesIO(data)
                first = True
                while True:
                    chunk = stream.read(DOWNLOAD_CHUNK)
                    if not chunk and not first:
                        break
                    yield gateway_pb2.DownloadModelResponse(file_name=name, chunk=chunk)
                    first = False


def _too_big(size: int, limit: int) -> str:
    return (f"the upload is {size / 1e6:.1f} MB, over the limit of {limit / 1e6:.0f} MB; "
            "name data on the server with --server-path, or raise TRAINERAGENT_MAX_UPLOAD_BYTES")
