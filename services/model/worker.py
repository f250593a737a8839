"""python -m services.model.worker — a training worker: pulls trials from the work queue and runs them.

A worker owns its host's accelerator: CUDA when torch sees a GPU, the CPU otherwise, with the
same code. One trial at a time; while it trains, the worker tells JetStream it is still working
(``in_progress``) so the trial is not handed to another worker, and publishes an event per epoch.
A trial that fails is reported as such and acknowledged (retrying would fail the same way).
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import socket
import tempfile
import time

import nats

from services.common import bundle
from services.common.artifacts import ArtifactStore, NatsArtifactStore
from services.common.bus import TERMINAL_STATES, Bus
from services.common.config import Settings
from services.common.errors import NotFound, TrainerAgentError
from services.common.jsonfmt import enum_to_json
from services.common.logging import configure_logging, get_logger
from services.common.preprocessing import preprocess_images
from services.model import export, training
from traineragent.v1 import common_pb2, model_pb2

log = get_logger(__name__)

HEARTBEAT_S = 10.0
STATE_POLL_S = 3.0
PARITY_IMAGES = 32


class TrainingWorker:
    def __init__(self, bus: Bus, store: ArtifactStore, settings: Settings) -> None:
        self.bus = bus
        self.store = store
        self.settings = settings
        self.name = settings.worker_name or f"{socket.gethostname()}-{os.getpid()}"
        self.device = training.pick_device(settings.device)
        self.cache = settings.work_dir / "worker-cache"

    async def run(self, stop: asyncio.Event) -> None:
        subscription = await self.bus.trial_subscription()
        log.info("worker_ready", worker=self.name, device=self.device)
        while not stop.is_set():
            try:
                messages = await subscription.fetch(1, timeout=2)
            except (nats.errors.TimeoutError, TimeoutError):
                continue
            for message in messages:
                await self._handle(message)

    async def _handle(self, message) -> None:  # noqa: ANN001 - a nats Msg
        spec = model_pb2.TrialSpec.FromString(message.data)
        heartbeat = asyncio.create_task(_heartbeat(message))
        try:
            job, _ = await self.bus.get_job(spec.job_id)
            if job.state in TERMINAL_STATES:
                log.info("trial_skipped", job_id=spec.job_id, trial=spec.trial_id, reason="job ended")
                return
            result = await self.run_trial(spec)
            await self._report(spec, result)
        except NotFound:
            log.warning("trial_for_unknown_job", job_id=spec.job_id)
        except Exception as exc:  # noqa: BLE001 - report every failure to the job
            if isinstance(exc, TrainerAgentError):
                error = exc.message
            else:
                log.exception("trial_crashed", job_id=spec.job_id, trial=spec.trial_id)
                error = f"{type(exc).__name__}: {exc}"
            failed = common_pb2.TrialResult(trial_id=spec.trial_id, candidate=spec.candidate, error=error,
                                            worker=self.name, device=self.device,
                                            hyperparameters_json=spec.hyperparameters_json)
            await self._report(spec, failed)
        finally:
            heartbeat.cancel()
            await message.ack()

    async def run_trial(self, spec: model_pb2.TrialSpec) -> common_pb2.TrialResult:
        loop = asyncio.get_running_loop()
        started_unix = time.time()
        deadline = min(spec.deadline_unix or float("inf"), started_unix + (spec.budget_seconds or float("inf")))
        dataset = await self._dataset(spec.dataset_artifact)
        splits = await asyncio.to_thread(training.load_image_dataset, dataset)
        hp = json.loads(spec.hyperparameters_json or "{}")
        await self._event(spec, common_pb2.EVENT_KIND_DECISION,
                          f"{spec.trial_id}: training {spec.candidate} on {self.device} ({self.name})")

        cancelled = False

        async def watch_job() -> None:
            nonlocal cancelled
            while not cancelled:
                await asyncio.sleep(STATE_POLL_S)
                try:
                    job, _ = await self.bus.get_job(spec.job_id)
                except Exception:  # noqa: BLE001 - keep training if KV is briefly unreachable
                    continue
                cancelled = job.state in TERMINAL_STATES

        def on_epoch(report: training.EpochReport) -> None:
            event = common_pb2.JobEvent(
                job_id=spec.job_id, state=common_pb2.JOB_STATE_RUNNING, stage=common_pb2.STAGE_TRAIN,
                kind=common_pb2.EVENT_KIND_EPOCH, operation_id=spec.operation_id, source="worker",
                trial_id=spec.trial_id, epoch=report.epoch, max_epochs=report.max_epochs,
                message=(f"{spec.trial_id} epoch {report.epoch}/{report.max_epochs}: loss {report.train_loss:.4f}, "
                         f"validation accuracy {report.val_accuracy:.4f}"),
                metrics={"train_loss": report.train_loss, "val_loss": report.val_loss,
                         "val_accuracy": report.val_accuracy, "seconds": report.seconds},
            )
            asyncio.run_coroutine_threadsafe(self.bus.publish_event(event), loop)

        watcher = asyncio.create_task(watch_job())
        try:
            outcome = await asyncio.to_thread(
                training.train_image_classifier, splits, spec.candidate, hp,
                max_epochs=spec.max_epochs or self.settings.max_epochs, deadline_unix=deadline,
                on_epoch=on_epoch, should_stop=lambda: cancelled, device=self.device, seed=int(hp.get("seed", 0)),
            )
        finally:
            watcher.cancel()
        with tempfile.TemporaryDirectory(dir=self._scratch()) as tmp:
            result = await asyncio.to_thread(self._export, spec, splits, outcome, pathlib.Path(tmp))
            tar_path = pathlib.Path(tmp) / "bundle.tar"
            result.onnx_artifact = await self.store.put_file(pathlib.Path(tmp) / "model.onnx")
            result.bundle_artifact = await self.store.put_file(tar_path)
        return result

    def _export(self, spec: model_pb2.TrialSpec, splits: training.ImageSplits, outcome: training.TrainOutcome,
                tmp: pathlib.Path) -> common_pb2.TrialResult:
        onnx_path = tmp / "model.onnx"
        export.export_onnx(outcome.model, splits.spec, onnx_path, len(splits.classes))
        sample = preprocess_images(splits.test_images[:PARITY_IMAGES], splits.spec)
        parity = export.check_parity(outcome.model, onnx_path, sample)
        latency = export.measure_onnx_latency_ms(onnx_path, sample[:1])
        task = enum_to_json(common_pb2.TaskType.DESCRIPTOR, spec.task_type) or "image_classification"
        description = bundle.build_bundle_dict(
            task, splits.classes, splits.spec, spec.candidate, outcome.test_metrics,
            list(splits.test_images[:8]), opset=export.OPSET,
        )
        bundle.write_bundle(tmp / "bundle.tar", onnx_path, description)
        return common_pb2.TrialResult(
            trial_id=spec.trial_id, candidate=spec.candidate, hyperparameters_json=spec.hyperparameters_json,
            validation_metrics=outcome.validation_metrics, test_metrics=outcome.test_metrics,
            epochs=outcome.epochs, best_epoch=outcome.best_epoch, train_seconds=round(outcome.train_seconds, 3),
            device=outcome.device, num_parameters=outcome.num_parameters,
            model_size_mb=round(onnx_path.stat().st_size / 1e6, 4), parity_max_abs_diff=parity,
            worker=self.name, stop_reason=outcome.stop_reason, onnx_latency_ms=round(latency, 4),
        )

    async def _dataset(self, key: str) -> pathlib.Path:
        path = self.cache / f"{key}.parquet"
        if not path.exists():
            await self.store.get_to_file(key, path)
        return path

    def _scratch(self) -> pathlib.Path:
        path = self.settings.work_dir / "worker-scratch"
        path.mkdir(parents=True, exist_ok=True)
        return path

    async def _report(self, spec: model_pb2.TrialSpec, result: common_pb2.TrialResult) -> None:
        metric = spec.selection_metric or "accuracy"
        if result.error:
            message = f"{spec.trial_id} failed: {result.error}"
        else:
            message = (f"{spec.trial_id} finished: validation {metric} "
                       f"{result.validation_metrics.get(metric, 0.0):.4f} after {result.epochs} epochs "
                       f"({result.stop_reason}, {result.train_seconds:.1f}s on {result.device})")
        event = common_pb2.JobEvent(job_id=spec.job_id, state=common_pb2.JOB_STATE_RUNNING,
                                    stage=common_pb2.STAGE_TRAIN, kind=common_pb2.EVENT_KIND_TRIAL_FINISHED,
                                    operation_id=spec.operation_id, source="worker", message=message,
                                    trial_id=spec.trial_id, metrics=dict(result.validation_metrics))
        event.trial.CopyFrom(result)
        await self.bus.publish_event(event, msg_id=f"{spec.job_id}:{spec.operation_id}:{spec.trial_id}:done")

    async def _event(self, spec: model_pb2.TrialSpec, kind: int, message: str) -> None:
        await self.bus.publish_event(common_pb2.JobEvent(
            job_id=spec.job_id, state=common_pb2.JOB_STATE_RUNNING, stage=common_pb2.STAGE_TRAIN, kind=kind,
            operation_id=spec.operation_id, source="worker", message=message, trial_id=spec.trial_id))


async def _heartbeat(message) -> None:  # noqa: ANN001
    while True:
        await asyncio.sleep(HEARTBEAT_S)
        try:
            await message.in_progress()
        except Exception:  # noqa: BLE001 - the next beat may get through
            log.warning("heartbeat_failed")


def main() -> None:
    import signal

    settings = Settings.from_env()
    configure_logging("worker", settings.log_level, settings.log_format)

    async def run() -> None:
        bus = await Bus.connect(settings.nats_url, name="traineragent-worker")
        worker = TrainingWorker(bus, NatsArtifactStore(bus.js), settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        runner = asyncio.create_task(worker.run(stop))
        await stop.wait()
        # A trial in progress is left un-acked: JetStream hands it to another worker.
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await bus.close()
        log.info("worker_stopped", worker=worker.name)

    asyncio.run(run())


if __name__ == "__main__":
    main()
