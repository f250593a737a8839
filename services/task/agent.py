"""The Task agent: owns job records and their state machine, and drives the other agents.

Each job runs as one asyncio task that walks the stages: review → data → train (+ export) →
deploy. A stage is started with a short RPC to the agent that does it; the result comes back as
that agent's ``stage_finished`` event on the job's NATS subject, matched by operation id. The
record in KV holds everything the job has reached, so after a restart ``resume`` picks up
each unfinished job where it stood.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable

import grpc

from services.common.bus import TERMINAL_STATES, Bus, new_id
from services.common.clients import ServiceClients
from services.common.config import Settings
from services.common.errors import FailedPrecondition, InvalidArgument, TrainerAgentError, from_rpc_error
from services.common.jsonfmt import enum_from_json, enum_to_json
from services.common.logging import get_logger
from services.task import brain
from services.task.targets import evaluate_targets, missed_on_validation
from traineragent.v1 import (
    common_pb2,
    data_pb2,
    model_pb2,
    server_pb2,
)

log = get_logger(__name__)

MAX_REQUEST_CHARS = 10_000
DEPLOYMENT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
SUPPORTED_TASKS = {
    common_pb2.TASK_TYPE_IMAGE_CLASSIFICATION,
    common_pb2.TASK_TYPE_TEXT_CLASSIFICATION,
    common_pb2.TASK_TYPE_TABULAR_CLASSIFICATION,
    common_pb2.TASK_TYPE_TABULAR_REGRESSION,
}
# Answers by question id that settle a field of the TaskSpec (the Data agent asks these).
_COLUMN_ANSWERS = ("label_column", "text_column")
# answers picked from a question's choices: applied as fields (_apply_answers), never read as request text
_CHOICE_ANSWERS = (*_COLUMN_ANSWERS, "task_type")
DATA_TIMEOUT_S = 30 * 60
DEPLOY_TIMEOUT_S = 10 * 60
# Time the Model agent may take beyond the budget (export, stragglers) before the job gives up on it.
TRAIN_GRACE_S = 5 * 60
# A missed target earns another round of search while this share of the budget is left.
MAX_TRAINING_ROUNDS = 2
MIN_REFINE_FRACTION = 0.3

_SHORT_TASK = {
    common_pb2.TASK_TYPE_IMAGE_CLASSIFICATION: "image-clf",
    common_pb2.TASK_TYPE_TEXT_CLASSIFICATION: "text-clf",
    common_pb2.TASK_TYPE_TABULAR_CLASSIFICATION: "table-clf",
    common_pb2.TASK_TYPE_TABULAR_REGRESSION: "table-reg",
    common_pb2.TASK_TYPE_TEXT_GENERATION: "text-gen",
}


class JobEnded(Exception):
    """The job reached a final state elsewhere (cancelled) while a stage was running."""


class StageFailed(Exception):
    """A stage ended with an error the user can act on."""


class TaskAgent:
    def __init__(self, bus: Bus, clients: ServiceClients, settings: Settings) -> None:
        self.bus = bus
        self.clients = clients
        self.settings = settings
        self._running: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[None]] = set()

    # --- calls ---------------------------------------------------------------------------------

    async def plan(self, text: str, brain_name: str = "") -> common_pb2.TaskSpec:
        _check_request_text(text)
        # The LLM brain blocks on HTTP; keep the event loop free for the jobs.
        return await asyncio.to_thread(brain.read_request, text, self.settings, brain_name)

    async def create_job(
        self, request: str, dataset: common_pb2.DatasetRef, options: common_pb2.JobOptions
    ) -> common_pb2.Job:
        _check_request_text(request)
        if not dataset.WhichOneof("source"):
            raise InvalidArgument("no dataset given: upload one (upload_id) or name a server_path")
        if options.deployment_name and not DEPLOYMENT_NAME.match(options.deployment_name):
            raise InvalidArgument(
                f"deployment name {options.deployment_name!r} is not valid: use 1-63 lower-case letters, "
                "digits, '-' or '_', starting with a letter or digit"
            )
        if options.HasField("max_train_minutes") and options.max_train_minutes <= 0:
            raise InvalidArgument("max_train_minutes must be more than 0")
        try:
            await self.clients.data.CheckDataSource(
                data_pb2.CheckDataSourceRequest(dataset=dataset), timeout=self.settings.rpc_timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from exc
        job = common_pb2.Job(
            job_id=new_id(),
            state=common_pb2.JOB_STATE_PENDING,
            request=request,
            dataset=dataset,
            options=options,
        )
        job.created_at.GetCurrentTime()
        job.updated_at.CopyFrom(job.created_at)
        await self.bus.create_job(job)
        await self._event(job.job_id, common_pb2.JOB_STATE_PENDING, kind=common_pb2.EVENT_KIND_STATE_CHANGED,
                          message="job submitted")
        self._spawn(job.job_id)
        return job

    async def get_job(self, job_id: str) -> common_pb2.Job:
        return (await self.bus.get_job(job_id))[0]

    async def list_jobs(self, limit: int) -> list[common_pb2.Job]:
        jobs = await self.bus.list_jobs()
        jobs.sort(key=lambda j: (j.created_at.seconds, j.created_at.nanos), reverse=True)
        return jobs[: limit or 100]

    async def cancel_job(self, job_id: str) -> common_pb2.Job:
        job, _ = await self.bus.get_job(job_id)
        if job.state in TERMINAL_STATES:
            raise FailedPrecondition(
                f"job {job_id} already ended ({enum_to_json(common_pb2.JobState.DESCRIPTOR, job.state)}); "
                "only a pending, running or waiting job can be cancelled"
            )

        def cancel(j: common_pb2.Job) -> bool | None:
            if j.state in TERMINAL_STATES:
                return False
            j.state = common_pb2.JOB_STATE_CANCELLED
            j.stage = common_pb2.STAGE_UNSPECIFIED
            return None

        job = await self.bus.update_job(job_id, cancel)
        await self._event(job_id, job.state, kind=common_pb2.EVENT_KIND_STATE_CHANGED, message="job cancelled")
        task = self._running.pop(job_id, None)
        if task is not None:
            task.cancel()
        return job

    async def reply_to_job(self, job_id: str, answers: dict[str, str]) -> common_pb2.Job:
        job, _ = await self.bus.get_job(job_id)
        if job.state != common_pb2.JOB_STATE_NEEDS_INPUT:
            raise FailedPrecondition(
                f"job {job_id} is {enum_to_json(common_pb2.JobState.DESCRIPTOR, job.state)}, not waiting "
                "for input; only a job in NEEDS_INPUT takes a reply"
            )
        if not any(v.strip() for v in answers.values()):
            raise InvalidArgument(
                "the reply has no answers: send answers by question id, e.g. "
                + ", ".join(f"{q.id}=..." for q in job.questions)
            )

        def apply(j: common_pb2.Job) -> bool | None:
            if j.state != common_pb2.JOB_STATE_NEEDS_INPUT:
                return False
            for key, value in answers.items():
                j.answers[key] = value
            del j.questions[:]
            j.state = common_pb2.JOB_STATE_PENDING
            return None

        job = await self.bus.update_job(job_id, apply)
        await self._event(job_id, job.state, kind=common_pb2.EVENT_KIND_STATE_CHANGED,
                          message="answers received: " + "; ".join(f"{k}={v}" for k, v in answers.items()))
        self._spawn(job_id)
        return job

    # --- lifecycle ---------------------------------------------------------------------------------

    def start_warm_up(self) -> None:
        """Read one harmless request in the background so the first job's review does not wait for the
        rule brain's one-time loads (the semantic review encoder takes a few seconds, the Chinese index
        under one)."""

        def warm() -> None:
            try:
                for text in ("Classify photos of cats and dogs, at least 90% accuracy", "把猫和狗的照片分类，准确率不低于90%"):
                    brain.read_request(text, self.settings, "rules")
            except Exception:  # noqa: BLE001 - warming is best effort; the first job loads it instead
                log.warning("warm_up_failed", exc_info=True)

        task = asyncio.create_task(asyncio.to_thread(warm), name="task-agent-warm-up")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def resume(self) -> None:
        """Pick up every job that was pending or running when the service stopped."""
        for job in await self.bus.list_jobs():
            if job.state in (common_pb2.JOB_STATE_PENDING, common_pb2.JOB_STATE_RUNNING):
                log.info("job_resumed", job_id=job.job_id, stage=job.stage)
                self._spawn(job.job_id)

    async def close(self) -> None:
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.clients.close()

    def _spawn(self, job_id: str) -> None:
        if job_id in self._running and not self._running[job_id].done():
            return
        task = asyncio.create_task(self._run(job_id), name=f"job-{job_id}")
        self._running[job_id] = task
        task.add_done_callback(lambda _: self._running.pop(job_id, None) if self._running.get(job_id) is task else None)

    async def _run(self, job_id: str) -> None:
        try:
            await self._drive(job_id)
        except (JobEnded, asyncio.CancelledError):
            return
        except StageFailed as exc:
            await self._finish(job_id, common_pb2.JOB_STATE_FAILED, str(exc), error=str(exc))
        except TrainerAgentError as exc:
            await self._finish(job_id, common_pb2.JOB_STATE_FAILED, exc.message, error=exc.message)
        except Exception as exc:  # noqa: BLE001 - a job must end, whatever happened
            log.exception("job_crashed", job_id=job_id)
            message = f"internal error in the Task agent ({type(exc).__name__}); the task service log has details"
            await self._finish(job_id, common_pb2.JOB_STATE_FAILED, message, error=message)

    # --- the stages ---------------------------------------------------------------------------------

    async def _drive(self, job_id: str) -> None:
        job, _ = await self.bus.get_job(job_id)
        if job.state == common_pb2.JOB_STATE_PENDING or not job.task_spec.decision:
            job = await self._review(job)
            if job.state != common_pb2.JOB_STATE_RUNNING:
                return
        if not job.data_report.dataset_artifact:
            job = await self._prepare_data(job)
            if job.state != common_pb2.JOB_STATE_RUNNING:
                return
        if not job.model_report.bundle_artifact or job.training_round > job.model_report.rounds:
            job = await self._train(job)
        if not job.deployment.endpoint:
            job = await self._deploy(job)
        results = evaluate_targets(job.task_spec, job.model_report, job.deployment)
        met = all(r.met for r in results)
        missed = [r.note for r in results if not r.met]
        summary = "all targets met" if met else "targets missed: " + "; ".join(missed) + _what_was_tried(job)

        def finish(j: common_pb2.Job) -> None:
            del j.target_results[:]
            j.target_results.extend(results)
            j.targets_met = met
            j.summary = summary

        await self._update(job_id, finish)
        await self._finish(job_id, common_pb2.JOB_STATE_SUCCEEDED, f"job succeeded: {summary}")

    async def _review(self, job: common_pb2.Job) -> common_pb2.Job:
        started = time.monotonic()
        await self._set_stage(job.job_id, common_pb2.STAGE_REVIEW, "reading the request")
        text = job.request
        # Column names answered to the Data agent are not part of the request's meaning.
        free_answers = [v for k, v in job.answers.items() if k not in _CHOICE_ANSWERS]
        if free_answers:
            text += "\n" + "\n".join(free_answers)
        spec = await asyncio.to_thread(brain.read_request, text, self.settings)
        _apply_answers(spec, job.answers)
        if spec.HasField("fallback_reason"):
            await self._event(job.job_id, common_pb2.JOB_STATE_RUNNING, stage=common_pb2.STAGE_REVIEW,
                              kind=common_pb2.EVENT_KIND_WARNING,
                              message=f"the rule brain decided: {spec.fallback_reason}")
        decision = enum_to_json(common_pb2.Decision.DESCRIPTOR, spec.decision)
        await self._event(job.job_id, common_pb2.JOB_STATE_RUNNING, stage=common_pb2.STAGE_REVIEW,
                          kind=common_pb2.EVENT_KIND_DECISION, message=f"{decision}: {spec.explanation}")
        if spec.decision == common_pb2.DECISION_ACCEPT and spec.task_type not in SUPPORTED_TASKS:
            task = enum_to_json(common_pb2.TaskType.DESCRIPTOR, spec.task_type)
            supported = ", ".join(sorted(enum_to_json(common_pb2.TaskType.DESCRIPTOR, t) for t in SUPPORTED_TASKS))
            raise StageFailed(f"{task} is not supported by this version yet (supported: {supported})")

        def record(j: common_pb2.Job) -> None:
            j.task_spec.CopyFrom(spec)
            j.stage_seconds["review"] = round(time.monotonic() - started, 3)

        job = await self._update(job.job_id, record)
        if spec.decision == common_pb2.DECISION_REJECT:
            await self._finish(job.job_id, common_pb2.JOB_STATE_REJECTED, spec.explanation)
        elif spec.decision == common_pb2.DECISION_CLARIFY:
            await self._ask(job.job_id, common_pb2.STAGE_REVIEW, spec.explanation, list(spec.questions))
        else:
            await self._event(job.job_id, common_pb2.JOB_STATE_RUNNING, stage=common_pb2.STAGE_REVIEW,
                              kind=common_pb2.EVENT_KIND_STAGE_FINISHED, message="review finished: request accepted")
        return (await self.bus.get_job(job.job_id))[0]

    async def _prepare_data(self, job: common_pb2.Job) -> common_pb2.Job:
        op = await self._begin_operation(job, common_pb2.STAGE_DATA)
        if op.started:
            await self._call(self.clients.data.PrepareDataset(
                data_pb2.PrepareDatasetRequest(job_id=job.job_id, operation_id=op.id, dataset=job.dataset,
                                               task_spec=job.task_spec, request=job.request),
                timeout=self.settings.rpc_timeout_s))
        event = await self._await_stage(job.job_id, op.id, common_pb2.STAGE_DATA, DATA_TIMEOUT_S)
        if event.questions and not event.data_report.dataset_artifact:
            # The data leaves a choice to the user (which column is the label): wait for the reply.
            return await self._ask(job.job_id, common_pb2.STAGE_DATA, event.message, list(event.questions))

        def record(j: common_pb2.Job) -> None:
            j.data_report.CopyFrom(event.data_report)
            j.stage_seconds["data"] = round(event.data_report.seconds, 3)
            if event.data_report.task_type:  # what the data turned out to hold settles the task
                j.task_spec.task_type = event.data_report.task_type

        return await self._update(job.job_id, record)

    async def _train(self, job: common_pb2.Job) -> common_pb2.Job:
        """Search; when a quality target is missed on validation and budget remains, refine once more."""
        budget = self._budget_seconds(job)
        started = time.monotonic() - job.stage_seconds.get("train", 0.0)
        round_number = max(1, job.training_round)
        while True:
            remaining = budget - (time.monotonic() - started)
            report = await self._training_round(job, round_number, remaining if round_number > 1 else budget)
            elapsed = time.monotonic() - started
            missed = missed_on_validation(job.task_spec, report)
            note = (f"round {round_number}: {report.candidate} reached validation "
                    + ", ".join(f"{k} {v:.4f}" for k, v in sorted(report.validation_metrics.items())))
            retry = (missed and round_number < MAX_TRAINING_ROUNDS
                     and budget - elapsed >= MIN_REFINE_FRACTION * budget)
            if retry:
                note += f"; {'; '.join(missed)}; {budget - elapsed:.0f}s of the budget left, so refining it"
            elif missed:
                note += f"; {'; '.join(missed)}; not enough budget or rounds left to try more"

            def record(j: common_pb2.Job, rnd: int = round_number, rep: common_pb2.ModelReport = report,
                       line: str = note, again: bool = retry) -> None:
                j.model_report.CopyFrom(rep)
                j.stage_seconds["train"] = round(time.monotonic() - started, 3)
                j.history.append(line)
                j.training_round = rnd + 1 if again else rnd

            job = await self._update(job.job_id, record)
            if not retry:
                return job
            await self._event(job.job_id, common_pb2.JOB_STATE_RUNNING, stage=common_pb2.STAGE_TRAIN,
                              kind=common_pb2.EVENT_KIND_DECISION, message=note)
            round_number += 1
            # The model report of this round is kept until the next replaces it; a new operation starts.
            job = await self._update(job.job_id, lambda j: setattr(j, "operation_id", ""))

    async def _training_round(self, job: common_pb2.Job, round_number: int, budget: float) -> common_pb2.ModelReport:
        op = await self._begin_operation(job, common_pb2.STAGE_TRAIN)
        if op.started:
            request = model_pb2.StartTrainingRequest(
                job_id=job.job_id, operation_id=op.id, task_spec=job.task_spec, data_report=job.data_report,
                budget_seconds=budget, round=round_number)
            if round_number > 1:
                request.previous_trials.extend(job.model_report.leaderboard)
            response = await self._call(self.clients.model.StartTraining(request, timeout=self.settings.rpc_timeout_s))
            log.info("training_started", job_id=job.job_id, round=round_number, candidates=list(response.candidates))
        event = await self._await_stage(job.job_id, op.id, common_pb2.STAGE_EXPORT, budget + TRAIN_GRACE_S)
        return event.model_report

    async def _deploy(self, job: common_pb2.Job) -> common_pb2.Job:
        op = await self._begin_operation(job, common_pb2.STAGE_DEPLOY)
        if op.started:
            task_type = job.data_report.task_type or job.task_spec.task_type
            name = job.options.deployment_name or f"{_SHORT_TASK.get(task_type, 'model')}-{job.job_id[:8]}"
            request = server_pb2.DeployRequest(job_id=job.job_id, operation_id=op.id, name=name,
                                               bundle_artifact=job.model_report.bundle_artifact)
            if job.task_spec.constraints.HasField("max_latency_ms"):
                request.max_latency_ms = job.task_spec.constraints.max_latency_ms
            await self._call(self.clients.server.Deploy(request, timeout=self.settings.rpc_timeout_s))
        event = await self._await_stage(job.job_id, op.id, common_pb2.STAGE_DEPLOY, DEPLOY_TIMEOUT_S)

        def record(j: common_pb2.Job) -> None:
            j.deployment.CopyFrom(event.deployment)
            j.stage_seconds["deploy"] = round(event.metrics.get("seconds", 0.0), 3)

        return await self._update(job.job_id, record)

    # --- helpers -------------------------------------------------------------------------------------

    async def _ask(self, job_id: str, stage: int, message: str,
                   questions: list[common_pb2.Question]) -> common_pb2.Job:
        """Wait in NEEDS_INPUT with ``questions``; no stage runs until ReplyToJob (which starts anew)."""

        def ask(j: common_pb2.Job) -> None:
            j.state = common_pb2.JOB_STATE_NEEDS_INPUT
            j.stage = common_pb2.STAGE_UNSPECIFIED
            j.operation_id = ""
            del j.questions[:]
            j.questions.extend(questions)

        job = await self._update(job_id, ask)
        await self._event(job_id, job.state, stage=stage, kind=common_pb2.EVENT_KIND_STATE_CHANGED,
                          message=message, questions=questions)
        return job

    def _budget_seconds(self, job: common_pb2.Job) -> float:
        if job.options.HasField("max_train_minutes"):
            return job.options.max_train_minutes * 60.0
        if job.task_spec.constraints.HasField("max_train_minutes"):
            return job.task_spec.constraints.max_train_minutes * 60.0
        return self.settings.default_train_budget_s

    async def _begin_operation(self, job: common_pb2.Job, stage: int) -> _Operation:
        """A new operation for ``stage``, or the one already recorded (after a restart): no double work."""
        if job.stage == stage and job.operation_id:
            return _Operation(job.operation_id, started=False)
        op_id = new_id()

        def begin(j: common_pb2.Job) -> None:
            j.stage = stage
            j.operation_id = op_id

        await self._update(job.job_id, begin)
        return _Operation(op_id, started=True)

    async def _call(self, call):  # noqa: ANN001, ANN202 - a grpc.aio call object
        try:
            return await call
        except grpc.aio.AioRpcError as exc:
            raise StageFailed(f"{exc.details() or exc.code().name}") from exc

    async def _await_stage(self, job_id: str, op_id: str, final_stage: int, timeout_s: float) -> common_pb2.JobEvent:
        def match(event: common_pb2.JobEvent) -> bool:
            if event.kind == common_pb2.EVENT_KIND_STATE_CHANGED and event.state in TERMINAL_STATES:
                return True
            return (
                event.operation_id == op_id
                and event.kind == common_pb2.EVENT_KIND_STAGE_FINISHED
                and (bool(event.error) or event.stage == final_stage)
            )

        stage_name = enum_to_json(common_pb2.Stage.DESCRIPTOR, final_stage)
        try:
            event = await self.bus.wait_for_event(job_id, match, timeout_s)
        except TimeoutError as exc:
            raise StageFailed(
                f"the {stage_name} stage did not finish within {timeout_s:.0f} s; check that its service and "
                "the training workers are running (`trainer-agent status`), then submit the job again"
            ) from exc
        if event.kind == common_pb2.EVENT_KIND_STATE_CHANGED:
            raise JobEnded()
        if event.error:
            raise StageFailed(event.error)
        return event

    async def _update(self, job_id: str, mutate: Callable[[common_pb2.Job], bool | None]) -> common_pb2.Job:
        """Apply ``mutate`` unless the job already ended (then stop driving it)."""
        ended = False

        def guarded(j: common_pb2.Job) -> bool | None:
            nonlocal ended
            if j.state in TERMINAL_STATES:
                ended = True
                return False
            return mutate(j)

        job = await self.bus.update_job(job_id, guarded)
        if ended:
            raise JobEnded()
        return job

    async def _set_stage(self, job_id: str, stage: int, message: str) -> None:
        def running(j: common_pb2.Job) -> None:
            j.state = common_pb2.JOB_STATE_RUNNING
            j.stage = stage

        await self._update(job_id, running)
        await self._event(job_id, common_pb2.JOB_STATE_RUNNING, kind=common_pb2.EVENT_KIND_STATE_CHANGED,
                          stage=stage, message="job running")
        await self._event(job_id, common_pb2.JOB_STATE_RUNNING, kind=common_pb2.EVENT_KIND_STAGE_STARTED,
                          stage=stage, message=message)

    async def _finish(self, job_id: str, state: int, message: str, error: str | None = None) -> None:
        def end(j: common_pb2.Job) -> bool | None:
            if j.state in TERMINAL_STATES:
                return False
            j.state = state
            j.stage = common_pb2.STAGE_UNSPECIFIED
            j.operation_id = ""
            if error is not None:
                j.error = error
            return None

        job = await self.bus.update_job(job_id, end)
        if job.state == state:
            await self._event(job_id, state, kind=common_pb2.EVENT_KIND_STATE_CHANGED, message=message,
                              error=error or "")
        log.info("job_finished", job_id=job_id, state=enum_to_json(common_pb2.JobState.DESCRIPTOR, state),
                 message=message)

    async def _event(self, job_id: str, state: int, *, kind: int, message: str, stage: int = 0,
                     error: str = "", questions: list[common_pb2.Question] | None = None) -> None:
        event = common_pb2.JobEvent(job_id=job_id, state=state, stage=stage, kind=kind, message=message,
                                    source="task", error=error)
        if questions:
            event.questions.extend(questions)
        await self.bus.publish_event(event)


class _Operation:
    def __init__(self, op_id: str, started: bool) -> None:
        self.id = op_id
        self.started = started


def _check_request_text(text: str) -> None:
    if not text or not text.strip():
        raise InvalidArgument(
            "the request is empty: say what the model should do, e.g. "
            "'Recognise handwritten digits, at least 97% accuracy, under 5 ms per image'"
        )
    if len(text) > MAX_REQUEST_CHARS:
        raise InvalidArgument(f"the request has {len(text)} characters; keep it under {MAX_REQUEST_CHARS}")


def _what_was_tried(job: common_pb2.Job) -> str:
    """For a missed target: the trials the search ran (per round) and the one deployed."""
    report = job.model_report
    metric = report.selection_metric or "accuracy"
    trials = [f"{t.trial_id} {t.candidate} {metric} {t.validation_metrics.get(metric, 0.0):.4f}"
              for t in report.leaderboard if not t.error]
    if not trials:
        return ""
    rounds = max(1, report.rounds)
    return (f". Tried in {rounds} round{'s' if rounds > 1 else ''} (validation): {', '.join(trials)}; "
            f"deployed the best, {report.candidate}")


def _apply_answers(spec: common_pb2.TaskSpec, answers: dict[str, str]) -> None:
    """Explicit answers settle what the text left open: the label and text columns, the task type."""
    if spec.decision != common_pb2.DECISION_REJECT:
        if answers.get("label_column", "").strip():
            spec.label_column = answers["label_column"].strip()
        if answers.get("text_column", "").strip():
            del spec.input_columns[:]
            spec.input_columns.append(answers["text_column"].strip())
    chosen = answers.get("task_type", "").strip()
    if not chosen or spec.decision == common_pb2.DECISION_REJECT:
        return
    try:
        spec.task_type = enum_from_json(common_pb2.TaskType.DESCRIPTOR, chosen)
    except ValueError:
        return
    if spec.decision == common_pb2.DECISION_CLARIFY:
        spec.decision = common_pb2.DECISION_ACCEPT
        del spec.questions[:]
        spec.explanation = f"Accepted as {chosen} from the user's answer."
