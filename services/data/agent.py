"""The Data agent: turns a job's dataset source into a validated, split, content-hashed artifact.

Preparing runs in the background; the result (a DataReport, or an error naming the problem) is the
data stage's ``stage_finished`` event. Work happens in this service's own scratch folder, which is
removed afterwards; what other services need travels as an artifact.
"""

from __future__ import annotations

import asyncio
import pathlib
import shutil
import time

from services.common.artifacts import ArtifactStore
from services.common.bus import Bus
from services.common.config import Settings
from services.common.errors import DataError, InvalidArgument, TrainerAgentError
from services.common.logging import get_logger
from services.common.uploads import load_manifest
from services.data import images, sources
from traineragent.v1 import common_pb2

log = get_logger(__name__)

MAX_WARNING_EVENTS = 5


class DataAgent:
    def __init__(self, bus: Bus, store: ArtifactStore, settings: Settings) -> None:
        self.bus = bus
        self.store = store
        self.settings = settings
        self._tasks: set[asyncio.Task[None]] = set()

    async def check_source(self, dataset: common_pb2.DatasetRef) -> str:
        """A short description of a readable source; raises with what to change otherwise."""
        which = dataset.WhichOneof("source")
        if which == "upload_id":
            manifest = await load_manifest(self.store, dataset.upload_id)
            if not await self.store.exists(manifest.archive_artifact):
                raise InvalidArgument(f"the archive of upload {dataset.upload_id} is gone: upload it again")
            return f"upload {manifest.filename} ({manifest.size_bytes} bytes, {manifest.num_files} files)"
        if which == "server_path":
            path = sources.resolve_server_path(dataset.server_path, self.settings.data_roots)
            if path.is_dir():
                if not any(path.iterdir()):
                    raise InvalidArgument(
                        f"folder {dataset.server_path} is empty: put one sub-folder per class with its images in it"
                    )
                return f"folder {path}"
            sources.archive_kind(path.name)
            return f"archive {path}"
        raise InvalidArgument("no dataset given: upload one (upload_id) or name a server_path")

    def start_prepare(self, job_id: str, operation_id: str, dataset: common_pb2.DatasetRef,
                      spec: common_pb2.TaskSpec) -> None:
        task = asyncio.create_task(self._prepare(job_id, operation_id, dataset, spec))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _prepare(self, job_id: str, operation_id: str, dataset: common_pb2.DatasetRef,
                       spec: common_pb2.TaskSpec) -> None:
        started = time.monotonic()
        scratch = self.settings.work_dir / "data" / f"{job_id}-{operation_id}"
        await self._event(job_id, operation_id, common_pb2.EVENT_KIND_STAGE_STARTED, "preparing the dataset")
        try:
            if spec.task_type not in (common_pb2.TASK_TYPE_IMAGE_CLASSIFICATION, common_pb2.TASK_TYPE_UNSPECIFIED):
                raise DataError("only image-folder datasets are supported by this version of the Data agent")
            root = await self._materialise(dataset, scratch)
            out = scratch / "dataset.parquet"
            report = await asyncio.to_thread(images.prepare_image_folder, root, out)
            report.dataset_artifact = await self.store.put_file(out)
            report.seconds = round(time.monotonic() - started, 3)
            for warning in list(report.warnings)[:MAX_WARNING_EVENTS]:
                await self._event(job_id, operation_id, common_pb2.EVENT_KIND_WARNING, warning)
            sizes = report.split_sizes
            message = (
                f"{report.num_examples} images, {len(report.classes)} classes; "
                f"split {sizes.train}/{sizes.validation}/{sizes.test} (train/validation/test)"
            )
            await self._event(job_id, operation_id, common_pb2.EVENT_KIND_STAGE_FINISHED, message,
                              data_report=report)
            log.info("dataset_prepared", job_id=job_id, examples=report.num_examples, seconds=report.seconds)
        except asyncio.CancelledError:
            raise
        except TrainerAgentError as exc:
            log.info("dataset_refused", job_id=job_id, error=exc.message)
            await self._event(job_id, operation_id, common_pb2.EVENT_KIND_STAGE_FINISHED,
                              f"data preparation failed: {exc.message}", error=exc.message)
        except Exception as exc:  # noqa: BLE001 - the job must hear about it
            log.exception("dataset_crashed", job_id=job_id)
            message = f"internal error in the Data agent ({type(exc).__name__}); the data service log has details"
            await self._event(job_id, operation_id, common_pb2.EVENT_KIND_STAGE_FINISHED, message, error=message)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    async def _materialise(self, dataset: common_pb2.DatasetRef, scratch: pathlib.Path) -> pathlib.Path:
        """A local folder holding the dataset: extracted from an upload or archive, or the server folder itself."""
        scratch.mkdir(parents=True, exist_ok=True)
        if dataset.WhichOneof("source") == "upload_id":
            manifest = await load_manifest(self.store, dataset.upload_id)
            archive = await self.store.get_to_file(manifest.archive_artifact, scratch / f"upload.{manifest.kind}")
            kind = manifest.kind
        else:
            path = sources.resolve_server_path(dataset.server_path, self.settings.data_roots)
            if path.is_dir():
                return sources.find_dataset_root(path)
            archive, kind = path, sources.archive_kind(path.name)
        await asyncio.to_thread(sources.inspect_archive, archive, kind)
        extracted = await asyncio.to_thread(sources.extract_archive, archive, kind, scratch / "extracted")
        return sources.find_dataset_root(extracted)

    async def _event(self, job_id: str, operation_id: str, kind: int, message: str, *,
                     error: str = "", data_report: common_pb2.DataReport | None = None) -> None:
        event = common_pb2.JobEvent(job_id=job_id, state=common_pb2.JOB_STATE_RUNNING, stage=common_pb2.STAGE_DATA,
                                    kind=kind, message=message, operation_id=operation_id, source="data",
                                    error=error)
        if data_report is not None:
            event.data_report.CopyFrom(data_report)
        await self.bus.publish_event(event)
