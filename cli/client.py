"""A small synchronous client of the gateway: upload, submit, watch, and the rest."""

from __future__ import annotations

import hashlib
import io
import os
import pathlib
import tarfile
import tempfile
from collections.abc import Iterator

import grpc

from services.common.clients import CHANNEL_OPTIONS
from traineragent.v1 import (
    common_pb2,
    gateway_pb2,
    gateway_pb2_grpc,
    server_pb2,
    task_pb2,
)

CHUNK = 1024 * 1024
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
DATA_FILE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")


class GatewayClient:
    def __init__(self, address: str, api_key: str | None = None, timeout_s: float = 60.0) -> None:
        self.address = address
        self.channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
        self.stub = gateway_pb2_grpc.GatewayServiceStub(self.channel)
        self.metadata = (("x-api-key", api_key),) if api_key else ()
        self.timeout_s = timeout_s

    def close(self) -> None:
        self.channel.close()

    def _call(self, method, request):  # noqa: ANN001, ANN202
        return method(request, timeout=self.timeout_s, metadata=self.metadata)

    def upload(self, path: pathlib.Path) -> gateway_pb2.UploadDatasetResponse:
        """Upload a local folder (packed as tar.gz on the fly), an archive, or one data file as it is.

        A data file (CSV, TSV, JSONL/JSON, Parquet) goes as-is: the Data agent reads it as a text or
        table dataset. The gateway checks the size and the SHA-256 either way.
        """
        if path.is_dir():
            with tempfile.TemporaryDirectory() as tmp:
                archive = pathlib.Path(tmp) / f"{path.name or 'dataset'}.tar.gz"
                pack_folder(path, archive)
                return self._upload_file(archive)
        return self._upload_file(path)

    def _upload_file(self, path: pathlib.Path) -> gateway_pb2.UploadDatasetResponse:
        size = path.stat().st_size
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)

        def requests() -> Iterator[gateway_pb2.UploadDatasetRequest]:
            yield gateway_pb2.UploadDatasetRequest(
                header=gateway_pb2.UploadHeader(filename=path.name, size_bytes=size, sha256=digest.hexdigest())
            )
            with path.open("rb") as f:
                while chunk := f.read(CHUNK):
                    yield gateway_pb2.UploadDatasetRequest(chunk=chunk)

        return self.stub.UploadDataset(requests(), timeout=max(self.timeout_s, 600), metadata=self.metadata)

    def submit(self, request: str, dataset: common_pb2.DatasetRef,
               options: common_pb2.JobOptions | None = None) -> common_pb2.Job:
        return self._call(self.stub.SubmitJob, gateway_pb2.SubmitJobRequest(
            request=request, dataset=dataset, options=options or common_pb2.JobOptions())).job

    def get_job(self, job_id: str) -> common_pb2.Job:
        return self._call(self.stub.GetJob, task_pb2.GetJobRequest(job_id=job_id)).job

    def list_jobs(self, limit: int = 100) -> list[common_pb2.Job]:
        return list(self._call(self.stub.ListJobs, task_pb2.ListJobsRequest(limit=limit)).jobs)

    def cancel(self, job_id: str) -> common_pb2.Job:
        return self._call(self.stub.CancelJob, task_pb2.CancelJobRequest(job_id=job_id)).job

    def reply(self, job_id: str, answers: dict[str, str]) -> common_pb2.Job:
        return self._call(self.stub.ReplyToJob, task_pb2.ReplyToJobRequest(job_id=job_id, answers=answers)).job

    def plan(self, text: str, brain: str = "") -> common_pb2.TaskSpec:
        return self._call(self.stub.PlanTask, task_pb2.PlanTaskRequest(request=text, brain=brain)).task_spec

    def watch(self, job_id: str, from_seq: int = 0) -> Iterator[common_pb2.JobEvent]:
        """The job's events from ``from_seq`` until it ends (no deadline: jobs take minutes)."""
        for response in self.stub.WatchJob(gateway_pb2.WatchJobRequest(job_id=job_id, from_seq=from_seq),
                                           metadata=self.metadata):
            yield response.event

    def deployments(self) -> list[common_pb2.Deployment]:
        return list(self._call(self.stub.ListDeployments, server_pb2.ListDeploymentsRequest()).deployments)

    def undeploy(self, name: str) -> common_pb2.Deployment:
        return self._call(self.stub.DeleteDeployment, server_pb2.DeleteDeploymentRequest(name=name)).deployment

    def download_model(self, job_id: str, out_dir: pathlib.Path) -> list[pathlib.Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        files: dict[str, io.BytesIO] = {}
        for piece in self.stub.DownloadModel(gateway_pb2.DownloadModelRequest(job_id=job_id),
                                             timeout=max(self.timeout_s, 300), metadata=self.metadata):
            files.setdefault(piece.file_name, io.BytesIO()).write(piece.chunk)
        written = []
        for name, data in files.items():
            target = out_dir / pathlib.PurePosixPath(name).name
            target.write_bytes(data.getvalue())
            written.append(target)
        return written


def pack_folder(folder: pathlib.Path, archive: pathlib.Path) -> None:
    """tar.gz a folder with its own name as the top entry, skipping hidden files."""
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if any(part.startswith(".") for part in relative.parts) or not path.is_file():
                continue
            tar.add(path, arcname=str(pathlib.PurePosixPath(folder.name or "dataset", *relative.parts)),
                    recursive=False)


def is_archive(path: pathlib.Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def is_data_file(path: pathlib.Path) -> bool:
    """A CSV, TSV, JSONL/JSON or Parquet file, uploaded as it is."""
    return path.is_file() and path.name.lower().endswith(DATA_FILE_SUFFIXES)


def is_uploadable(path: pathlib.Path) -> bool:
    """What ``upload`` takes: a folder, an archive or a data file."""
    return path.is_dir() or is_archive(path) or is_data_file(path)


def default_gateway() -> str:
    return os.environ.get("TRAINERAGENT_GATEWAY", "")
