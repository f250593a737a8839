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
from services.common.errors import DataError, InvalidArgument, NeedsInput, TrainerAgentError
from services.common.logging import get_logger
from services.common.uploads import load_manifest
from services.data import images, sources, tables
from traineragent.v1 import common_pb2

log = get_logger(__name__)

MAX_WARNING_EVENTS = 5
_IMAGE_TASKS = (common_pb2.TASK_TYPE_IMAGE_CLASSIFICATION,)
_FILE_TASKS = (common_pb2.TASK_TYPE_TEXT_CLASSIFICATION, common_pb2.TASK_TYPE_TABULAR_CLASSIFICATION,
               common_pb2.TASK_TYPE_TABULAR_REGRESSION)


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
                        f"folder {dataset.server_path} is empty: put one sub-folder per class with its images in "
                        f"it, or a data file ({sources.DATA_EXTENSIONS})"
                    )
                return f"folder {path}"
            kind = sources.source_kind(path.name)
            if kind == sources.FILE_KIND:
                sources.check_data_file(path)
                return f"data file {path} ({sources.data_format(path.name)}, {path.stat().st_size} bytes)"
            return f"archive {path}"
        raise InvalidArgument("no dataset given: upload one (upload_id) or name a server_path")

    def start_prepare(self, job_id: str, operation_id: str, dataset: common_pb2.DatasetRef,
                      spec: common_pb2.TaskSpec, request: str = "") -> None:
        """Prepare in the background; ``request`` is the user's text (it may name the label column)."""
        task = asyncio.create_task(self._prepare(job_id, operation_id, dataset, spec, request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _prepare(self, job_id: str, operation_id: str, dataset: common_pb2.DatasetRef,
                       spec: common_pb2.TaskSpec, request: str = "") -> None:
        started = time.monotonic()
        scratch = self.settings.work_dir / "data" / f"{job_id}-{operation_id}"
        await self._event(job_id, operation_id, common_pb2.EVENT_KIND_STAGE_STARTED, "preparing the dataset")
        try:
            if spec.task_type not in (*_IMAGE_TASKS, *_FILE_TASKS, common_pb2.TASK_TYPE_UNSPECIFIED):
                raise DataError("text generation datasets are not supported by this version of the Data agent; "
                                "ask for image, text or table classification, or a table regression")
            root = await self._materialise(dataset, scratch)
            out = scratch / "dataset.parquet"
            if _holds_data_files(root, spec.task_type):
                report = await asyncio.to_thread(tables.prepare_table_files, root, out, spec, request)
            else:
                if spec.task_type in _FILE_TASKS:
                    raise DataError(
                        f"a {_task_words(spec.task_type)} task needs a data file ({sources.DATA_EXTENSIONS}), "
                        "and the dataset holds none: send the table as CSV, TSV, JSONL or Parquet"
                    )
                report = await asyncio.to_thread(images.prepare_image_folder, root, out)
                report.task_type = common_pb2.TASK_TYPE_IMAGE_CLASSIFICATION
            report.dataset_artifact = await self.store.put_file(out)
            report.seconds = round(time.monotonic() - started, 3)
            for warning in list(report.warnings)[:MAX_WARNING_EVENTS]:
                await self._event(job_id, operation_id, common_pb2.EVENT_KIND_WARNING, warning)
            await self._event(job_id, operation_id, common_pb2.EVENT_KIND_STAGE_FINISHED, _summary(report),
                              data_report=report)
            log.info("dataset_prepared", job_id=job_id, examples=report.num_examples, seconds=report.seconds)
        except asyncio.CancelledError:
            raise
        except NeedsInput as exc:
            log.info("dataset_needs_input", job_id=job_id, questions=[q["id"] for q in exc.questions])
            questions = [common_pb2.Question(id=q["id"], text=q["text"], choices=[str(c) for c in q.get("choices", [])])
                         for q in exc.questions]
            await self._event(job_id, operation_id, common_pb2.EVENT_KIND_STAGE_FINISHED, exc.message,
                              questions=questions)
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
        """The local dataset root: a folder extracted from an upload or archive, a one-file folder for an
        uploaded data file, or the server's folder or data file itself."""
        scratch.mkdir(parents=True, exist_ok=True)
        if dataset.WhichOneof("source") == "upload_id":
            manifest = await load_manifest(self.store, dataset.upload_id)
            suffix = "bin" if manifest.kind == sources.FILE_KIND else manifest.kind
            archive = await self.store.get_to_file(manifest.archive_artifact, scratch / f"upload.{suffix}")
            kind = manifest.kind
            if kind == sources.FILE_KIND:
                await asyncio.to_thread(sources.check_data_file, archive, manifest.filename)
                return await asyncio.to_thread(sources.place_data_file, archive, manifest.filename,
                                               scratch / "extracted")
        else:
            path = sources.resolve_server_path(dataset.server_path, self.settings.data_roots)
            if path.is_dir():
                return sources.find_dataset_root(path)
            kind = sources.source_kind(path.name)
            if kind == sources.FILE_KIND:
                sources.check_data_file(path)
                return path
            archive = path
        await asyncio.to_thread(sources.inspect_archive, archive, kind)
        extracted = await asyncio.to_thread(sources.extract_archive, archive, kind, scratch / "extracted")
        return sources.find_dataset_root(extracted)

    async def _event(self, job_id: str, operation_id: str, kind: int, message: str, *,
                     error: str = "", data_report: common_pb2.DataReport | None = None,
                     questions: list[common_pb2.Question] | None = None) -> None:
        event = common_pb2.JobEvent(job_id=job_id, state=common_pb2.JOB_STATE_RUNNING, stage=common_pb2.STAGE_DATA,
                                    kind=kind, message=message, operation_id=operation_id, source="data",
                                    error=error)
        if data_report is not None:
            event.data_report.CopyFrom(data_report)
        if questions:
            event.questions.extend(questions)
        await self.bus.publish_event(event)


def _holds_data_files(root: pathlib.Path, task_type: int) -> bool:
    """True when the root is (or holds) data files for tables.py; False for an image folder.

    A root with both data files and sub-folders follows the task type; with none it is refused,
    since either reading could be the wrong one.
    """
    files = tables.data_files(root)
    if not files:
        return False
    if root.is_file():
        return True
    folders = [entry.name for entry in root.iterdir() if entry.is_dir() and not sources.is_ignored_name(entry.name)]
    if not folders or task_type in _FILE_TASKS:
        return True
    if task_type in _IMAGE_TASKS:
        return False
    raise DataError(
        f"the dataset holds both data files ({', '.join(f.name for f in files[:5])}) and folders "
        f"({', '.join(sorted(folders)[:5])}): send either an image folder (one sub-folder per class) or the "
        "data files alone"
    )


def _task_words(task_type: int) -> str:
    return common_pb2.TaskType.Name(task_type).removeprefix("TASK_TYPE_").lower().replace("_", " ")


def _summary(report: common_pb2.DataReport) -> str:
    sizes = report.split_sizes
    split = f"split {sizes.train}/{sizes.validation}/{sizes.test} (train/validation/test)"
    if report.format == images.FORMAT:
        return f"{report.num_examples} images, {len(report.classes)} classes; {split}"
    task = _task_words(report.task_type)
    if report.task_type == common_pb2.TASK_TYPE_TABULAR_REGRESSION:
        what = f"predicting {report.label_column!r} from {len(report.input_columns)} columns"
    elif report.task_type == common_pb2.TASK_TYPE_TEXT_CLASSIFICATION:
        what = f"text {report.input_columns[0]!r} -> {report.label_column!r}, {len(report.classes)} classes"
    else:
        what = f"predicting {report.label_column!r} ({len(report.classes)} classes) from {len(report.input_columns)} columns"
    return f"{report.num_examples} rows ({report.format}), {task}: {what}; {split}"
