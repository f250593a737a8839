"""python -m services.model.worker — a training worker: pulls trials from the work queue and runs them.

A worker owns its host's accelerator: CUDA when torch sees a GPU, the CPU otherwise, with the
same code. One trial at a time; while it trains, the worker tells JetStream it is still working
(``in_progress``) so the trial is not handed to another worker, and publishes an event per epoch.
A trial that fails is reported as such and acknowledged (retrying would fail the same way).
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import socket
import tempfile
import time

import nats

from services.common.artifacts import ArtifactStore, NatsArtifactStore
from services.common.bus import TERMINAL_STATES, Bus
from services.common.config import Settings
from services.common.errors import NotFound, TrainerAgentError
from services.common.logging import configure_logging, get_logger
from services.model import training, trials
from traineragent.v1 import common_pb2, model_pb2

log = get_logger(__name__)

HEARTBEAT_S = 10.0
TABLE_TASKS = (common_pb2.TASK_TYPE_TABULAR_CLASSIFICATION, common_pb2.TASK_TYPE_TABULAR_REGRESSION)
STATE_POLL_S = 3.0


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

        def publish(event: common_pb2.JobEvent) -> None:
            asyncio.run_coroutine_threadsafe(self.bus.publish_event(event), loop)

        def on_epoch(report: training.EpochReport) -> None:
            publish(self._progress_event(
                spec, report.epoch, report.max_epochs,
                f"{spec.trial_id} epoch {report.epoch}/{report.max_epochs}: loss {report.train_loss:.4f}, "
                f"validation accuracy {report.val_accuracy:.4f}",
                {"train_loss": report.train_loss, "val_loss": report.val_loss,
                 "val_accuracy": report.val_accuracy, "seconds": report.seconds}))

        settings_done = 0

        def on_setting(setting) -> None:  # noqa: ANN001 - a tabular.TableTrial
            nonlocal settings_done
            settings_done += 1
            shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted(setting.validation_metrics.items()))
            publish(self._progress_event(
                spec, settings_done, 0, f"{spec.trial_id} setting {settings_done}: validation {shown}",
                {**{f"val_{k}": float(v) for k, v in setting.validation_metrics.items()},
                 "seconds": setting.seconds}))

        hooks = trials.TrialHooks(on_epoch=on_epoch, on_setting=on_setting, should_stop=lambda: cancelled)
        watcher = asyncio.create_task(watch_job())
        try:
            with tempfile.TemporaryDirectory(dir=self._scratch()) as tmp:
                out = pathlib.Path(tmp)
                result = await asyncio.to_thread(
                    trials.run_trial, spec, dataset, out, device=self.device, worker=self.name,
                    default_max_epochs=self.settings.max_epochs, deadline_unix=deadline, hooks=hooks)
                result.onnx_artifact = await self.store.put_file(out / "model.onnx")
                result.bundle_artifact = await self.store.put_file(out / "bundle.tar")
        finally:
            watcher.cancel()
        return result

    def _progress_event(self, spec: model_pb2.TrialSpec, epoch: int, max_epochs: int, message: str,
                        metrics: dict[str, float]) -> common_pb2.JobEvent:
        return common_pb2.JobEvent(
            job_id=spec.job_id, state=common_pb2.JOB_STATE_RUNNING, stage=common_pb2.STAGE_TRAIN,
            kind=common_pb2.EVENT_KIND_EPOCH, operation_id=spec.operation_id, source="worker",
            trial_id=spec.trial_id, epoch=epoch, max_epochs=max_epochs, message=message, metrics=metrics)

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
                       f"{result.validation_metrics.get(metric, 0.0):.4f} after {result.epochs} "
                       f"{'settings' if spec.task_type in TABLE_TASKS else 'epochs'} "
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
