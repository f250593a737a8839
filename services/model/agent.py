"""The Model agent: plans the search, runs it on the training workers, chooses and reports.

Trials go on the JetStream work queue; whichever workers are up take them (one trial at a time
each), and report ``trial_finished`` events on the job's subject. The agent waits for every trial
of its operation (or the budget), chooses on the validation split, and reports the choice with
the test metrics of the chosen model only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import time

from services.common.artifacts import ArtifactStore
from services.common.bus import TERMINAL_STATES, Bus
from services.common.config import Settings
from services.common.errors import InvalidArgument, TrainingError
from services.common.jsonfmt import enum_from_json, enum_to_json
from services.common.logging import get_logger
from services.model import zoo
from traineragent.v1 import common_pb2, model_pb2

log = get_logger(__name__)

# Seconds past the budget the agent waits for trials to report (export and upload take time).
REPORT_GRACE_S = 120.0
CLASSIFICATION_METRICS = ("accuracy", "f1", "precision", "recall")
REGRESSION_METRICS = ("mae", "rmse", "r2")
LOWER_IS_BETTER = frozenset({"mae", "rmse"})
# A plan counts on a candidate's typical endpoint p95 being at most this share of the latency limit:
# p95 moves with the host's load, and a plan that needs every spare microsecond fails in production.
LATENCY_HEADROOM = 0.8


class ModelAgent:
    def __init__(self, bus: Bus, store: ArtifactStore, settings: Settings) -> None:
        self.bus = bus
        self.store = store
        self.settings = settings
        self._tasks: set[asyncio.Task[None]] = set()

    def plan(self, spec: common_pb2.TaskSpec, data: common_pb2.DataReport, budget_s: float,
             round_number: int = 1, previous: list[common_pb2.TrialResult] | None = None) -> Plan:
        """Round 1: the candidates that suit the task, data size and limits, the budget shared by cost.

        A later round refines: the best earlier candidate again with settings that trade more
        training for a better fit, twice (see :func:`refinements`).
        """
        task = task_of(spec, data)
        if not data.dataset_artifact:
            raise InvalidArgument("the data report names no dataset artifact; prepare the data first")
        metric, higher = selection_metric(spec, task)
        ok = [t for t in previous or [] if not t.error]
        notes: list[str] = []
        rejected: list[str] = []
        if round_number > 1 and ok:
            best = max(ok, key=lambda t: _score(t, metric, higher))
            plans = [(best.candidate, v, 0.5) for v in refinements(best, task)]
            max_epochs = self.settings.max_epochs * 2
            notes.append(f"round {round_number}: refining {best.candidate}, the best so far on validation {metric}")
        else:
            chosen, rejected, notes = select_candidates(task, spec, data, budget_s)
            total_cost = sum(c.relative_cost for c in chosen)
            plans = [(c.name, c.default_hyperparameters, c.relative_cost / total_cost) for c in chosen]
            max_epochs = self.settings.max_epochs
        deadline = time.time() + budget_s
        prefix = f"r{round_number}-" if round_number > 1 else ""
        trials = [
            model_pb2.TrialSpec(
                trial_id=f"{prefix}t{index + 1}-{name}",
                candidate=name,
                hyperparameters_json=json.dumps(hp, sort_keys=True),
                dataset_artifact=data.dataset_artifact,
                classes=list(data.classes),
                preprocessing_json=data.preprocessing_json,
                deadline_unix=deadline,
                max_epochs=max_epochs,
                task_type=enum_from_json(common_pb2.TaskType.DESCRIPTOR, task),
                selection_metric=metric,
                budget_seconds=budget_s * share,
            )
            for index, (name, hp, share) in enumerate(plans)
        ]
        return Plan(trials=trials, rejected=rejected, notes=notes)

    def start_training(self, request: model_pb2.StartTrainingRequest) -> list[str]:
        budget = request.budget_seconds or self.settings.default_train_budget_s
        plan = self.plan(request.task_spec, request.data_report, budget, max(1, request.round),
                         list(request.previous_trials))
        for trial in plan.trials:
            trial.job_id = request.job_id
            trial.operation_id = request.operation_id
        task = asyncio.create_task(self._search(request, plan, budget))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return [t.candidate for t in plan.trials]

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _search(self, request: model_pb2.StartTrainingRequest, plan: Plan, budget_s: float) -> None:
        job_id, op = request.job_id, request.operation_id
        trials = plan.trials
        started = time.monotonic()
        try:
            for line in [*plan.notes, *(f"not training {r}" for r in plan.rejected)]:
                await self._event(job_id, op, common_pb2.STAGE_TRAIN, common_pb2.EVENT_KIND_DECISION, line)
            names = ", ".join(f"{t.trial_id} (~{t.budget_seconds:.0f}s)" for t in trials)
            what = "searching" if request.round <= 1 else f"round {request.round}: refining with"
            await self._event(job_id, op, common_pb2.STAGE_TRAIN, common_pb2.EVENT_KIND_STAGE_STARTED,
                              f"{what} {len(trials)} trials within {budget_s:.0f}s: {names}")
            for trial in trials:
                await self.bus.enqueue_trial(trial, f"{job_id}:{op}:{trial.trial_id}")
            results = await self._collect(job_id, op, [t.trial_id for t in trials], budget_s + REPORT_GRACE_S)
            if results is None:
                return  # the job ended (cancelled)
            if not results:
                raise TrainingError(
                    f"no training worker reported a trial within {budget_s + REPORT_GRACE_S:.0f}s; check that a "
                    "worker runs (`trainer-agent status`, or start `python -m services.model.worker`) and submit again"
                )
            report = choose(request.task_spec, [*request.previous_trials, *results],
                            task=task_of(request.task_spec, request.data_report), planned=plan)
            report.seconds = round(time.monotonic() - started, 3)
            report.rounds = max(1, request.round)
            await self._event(job_id, op, common_pb2.STAGE_TRAIN, common_pb2.EVENT_KIND_DECISION, report.reasoning)
            await self._event(job_id, op, common_pb2.STAGE_TRAIN, common_pb2.EVENT_KIND_STAGE_FINISHED,
                              f"search finished in {report.seconds:.1f}s; chose {report.candidate}")
            await self._event(job_id, op, common_pb2.STAGE_EXPORT, common_pb2.EVENT_KIND_STAGE_STARTED,
                              "checking the exported ONNX model")
            if not await self.store.exists(report.bundle_artifact):
                raise TrainingError(f"the chosen model's bundle {report.bundle_artifact} is missing from the store")
            await self._event(
                job_id, op, common_pb2.STAGE_EXPORT, common_pb2.EVENT_KIND_STAGE_FINISHED,
                f"ONNX model {report.model_size_mb:.2f} MB; parity with the trained model: max |diff| "
                f"{report.parity_max_abs_diff:.2e}",
                model_report=report,
            )
        except asyncio.CancelledError:
            raise
        except (TrainingError, InvalidArgument) as exc:
            await self._event(job_id, op, common_pb2.STAGE_TRAIN, common_pb2.EVENT_KIND_STAGE_FINISHED,
                              f"training failed: {exc.message}", error=exc.message)
        except Exception as exc:  # noqa: BLE001 - the job must hear about it
            log.exception("search_crashed", job_id=job_id)
            message = f"internal error in the Model agent ({type(exc).__name__}); the model service log has details"
            await self._event(job_id, op, common_pb2.STAGE_TRAIN, common_pb2.EVENT_KIND_STAGE_FINISHED, message,
                              error=message)

    async def _collect(self, job_id: str, op: str, trial_ids: list[str],
                       timeout_s: float) -> list[common_pb2.TrialResult] | None:
        """Every trial's result, or those in by the timeout; None when the job ended meanwhile."""
        wanted = set(trial_ids)
        results: dict[str, common_pb2.TrialResult] = {}

        async def gather() -> bool:
            async for event in self.bus.event_history(job_id):
                if event.kind == common_pb2.EVENT_KIND_STATE_CHANGED and event.state in TERMINAL_STATES:
                    return False
                if (event.kind == common_pb2.EVENT_KIND_TRIAL_FINISHED and event.operation_id == op
                        and event.trial.trial_id in wanted):
                    results[event.trial.trial_id] = event.trial
                    if len(results) == len(wanted):
                        return True
            return True  # pragma: no cover - the history never ends by itself

        try:
            if not await asyncio.wait_for(gather(), timeout_s):
                return None
        except TimeoutError:
            missing = sorted(wanted - set(results))
            log.warning("trials_missing", job_id=job_id, missing=missing)
            await self._event(job_id, op, common_pb2.STAGE_TRAIN, common_pb2.EVENT_KIND_WARNING,
                              f"no result from {', '.join(missing)} within the budget; choosing among the rest")
        return [results[t] for t in trial_ids if t in results]

    async def _event(self, job_id: str, op: str, stage: int, kind: int, message: str, *, error: str = "",
                     model_report: common_pb2.ModelReport | None = None) -> None:
        event = common_pb2.JobEvent(job_id=job_id, state=common_pb2.JOB_STATE_RUNNING, stage=stage, kind=kind,
                                    message=message, operation_id=op, source="model", error=error)
        if model_report is not None:
            event.model_report.CopyFrom(model_report)
        await self.bus.publish_event(event)


@dataclasses.dataclass
class Plan:
    """A round's trials, the candidates left out before training (with why) and the reasoning."""

    trials: list[model_pb2.TrialSpec]
    rejected: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)


def task_of(spec: common_pb2.TaskSpec, data: common_pb2.DataReport) -> str:
    """The task being learnt: what the Data agent found in the data, else the request's, else images."""
    for task_type in (data.task_type, spec.task_type):
        if task_type:
            return enum_to_json(common_pb2.TaskType.DESCRIPTOR, task_type)
    return "image_classification"


def selection_metric(spec: common_pb2.TaskSpec, task: str = "image_classification") -> tuple[str, bool]:
    """What validation chooses by, and whether higher is better: the first target's metric that fits the
    task, else accuracy (classification) or MAE (regression)."""
    allowed = REGRESSION_METRICS if task == "tabular_regression" else CLASSIFICATION_METRICS
    for target in spec.targets:
        name = enum_to_json(common_pb2.Metric.DESCRIPTOR, target.metric)
        if name in allowed:
            return name, name not in LOWER_IS_BETTER
    default = "mae" if task == "tabular_regression" else "accuracy"
    return default, default not in LOWER_IS_BETTER


def _score(trial: common_pb2.TrialResult, metric: str, higher: bool) -> float:
    """A trial's validation score as 'higher is better' (a missing metric ranks last)."""
    value = trial.validation_metrics.get(metric)
    if value is None:
        return -math.inf
    return value if higher else -value


def refinements(best: common_pb2.TrialResult, task: str) -> list[dict]:
    """Two settings for another round of the best candidate: more patience and a gentler step, and a new seed."""
    hp = json.loads(best.hyperparameters_json or "{}")
    if task.startswith("tabular_"):
        if best.candidate == "gbdt":
            rate = float(hp.get("learning_rate", 0.05))
            rounds = int(hp.get("max_iter", 400))
            return [{**hp, "learning_rate": rate / 2, "max_iter": rounds * 2, "seed": 1},
                    {**hp, "learning_rate": rate / 4, "max_iter": rounds * 4, "seed": 2}]
        return [{**hp, "seed": 1}, {**hp, "seed": 2, "alpha": float(hp.get("alpha", 1e-4)) * 10}]
    base_lr = float(hp.get("lr", 0.003))
    patience = int(hp.get("patience", 6)) * 2
    return [{**hp, "lr": base_lr * 0.5, "patience": patience, "seed": 1}, {**hp, "patience": patience, "seed": 2}]


def select_candidates(task: str, spec: common_pb2.TaskSpec, data: common_pb2.DataReport,
                      budget_s: float) -> tuple[list[zoo.Candidate], list[str], list[str]]:
    """The zoo candidates worth training for this task, data and set of limits.

    A candidate is left out when its endpoint latency (zoo.yaml's measured p95) is above
    ``LATENCY_HEADROOM`` of the latency limit, its exported size is above the size limit, the train split is smaller than the family
    learns well from, or one epoch on this many examples would not fit its share of the budget (CPU
    figures, so on a GPU worker this is cautious). At least one candidate always remains: the
    cheapest that meets the hard limits, else the fastest. Returns (chosen, rejected with why, notes).
    """
    candidates = sorted(zoo.candidates_for(task), key=lambda c: c.relative_cost)
    if not candidates:
        raise InvalidArgument(f"the model zoo has no candidate for {task}")
    c = spec.constraints
    n_train = data.split_sizes.train or data.num_examples
    total_cost = sum(x.relative_cost for x in candidates)
    chosen: list[zoo.Candidate] = []
    rejected: list[str] = []
    hard_misses: dict[str, list[str]] = {}
    for cand in candidates:
        why, hard = [], []
        if c.HasField("max_latency_ms") and cand.endpoint_p95_ms > LATENCY_HEADROOM * c.max_latency_ms:
            hard.append(f"its endpoint p95 is about {cand.endpoint_p95_ms:g} ms, too close to or above the "
                        f"{c.max_latency_ms:g} ms limit (plans keep {1 - LATENCY_HEADROOM:.0%} headroom)")
        if c.HasField("max_model_size_mb") and cand.size_mb > c.max_model_size_mb:
            hard.append(f"it exports at about {cand.size_mb:g} MB, above the {c.max_model_size_mb:g} MB limit")
        if cand.min_train_examples and n_train and n_train < cand.min_train_examples:
            why.append(f"{n_train} training examples are fewer than the {cand.min_train_examples} it needs to learn "
                       "from scratch")
        share = budget_s * cand.relative_cost / total_cost
        epoch_s = cand.train_ms_per_example * n_train / 1000.0
        if epoch_s and epoch_s > share:
            why.append(f"one epoch on {n_train} examples takes about {epoch_s:.0f} s on a CPU, more than its "
                       f"{share:.0f} s share of the budget")
        hard_misses[cand.name] = hard
        if why or hard:
            rejected.append(f"{cand.name}: {'; '.join(hard + why)}")
        else:
            chosen.append(cand)
    notes = []
    if not chosen:
        within = [x for x in candidates if not hard_misses[x.name]]
        keep = within[0] if within else min(candidates, key=lambda x: (x.endpoint_p95_ms, x.relative_cost))
        chosen = [keep]
        rejected = [r for r in rejected if not r.startswith(f"{keep.name}:")]
        notes.append(f"no candidate suits every limit, so {keep.name} is trained "
                     f"({'the cheapest within the hard limits' if within else 'the fastest there is'})")
    limits = []
    if c.HasField("max_latency_ms"):
        limits.append(f"latency ≤ {c.max_latency_ms:g} ms")
    if c.HasField("max_model_size_mb"):
        limits.append(f"size ≤ {c.max_model_size_mb:g} MB")
    notes.insert(0, f"{task}, {n_train} training examples, budget {budget_s:.0f} s"
                    + (f", limits {', '.join(limits)}" if limits else "")
                    + f": training {', '.join(x.name for x in chosen)}")
    return chosen, rejected, notes


def choose(spec: common_pb2.TaskSpec, results: list[common_pb2.TrialResult], *, task: str = "image_classification",
           planned: Plan | None = None) -> common_pb2.ModelReport:
    """The best trial on validation among those that meet the latency and size limits (when any do)."""
    metric, higher = selection_metric(spec, task)
    ok = [r for r in results if not r.error and r.bundle_artifact]
    failed = [r for r in results if r.error or not r.bundle_artifact]
    if not ok:
        reasons = "; ".join(f"{r.candidate}: {r.error or 'no model'}" for r in failed) or "no trial reported"
        raise TrainingError(f"every trial failed ({reasons})")
    c = spec.constraints
    rejected: list[str] = [*(planned.rejected if planned else []), *(f"{r.candidate}: failed ({r.error})" for r in failed)]

    def fits(r: common_pb2.TrialResult) -> list[str]:
        why = []
        if c.HasField("max_latency_ms") and r.onnx_latency_ms > c.max_latency_ms:
            why.append(f"bare model latency {r.onnx_latency_ms:.2f} ms > {c.max_latency_ms:g} ms")
        if c.HasField("max_model_size_mb") and r.model_size_mb > c.max_model_size_mb:
            why.append(f"size {r.model_size_mb:.2f} MB > {c.max_model_size_mb:g} MB")
        return why

    fitting = [r for r in ok if not fits(r)]
    pool = fitting or ok
    # Best validation score first; among equals the smaller (faster) model.
    ranked = sorted(pool, key=lambda r: (-_score(r, metric, higher), r.num_parameters))
    best = ranked[0]
    for r in ok:
        if r is best:
            continue
        why = fits(r)
        if why:
            rejected.append(f"{r.trial_id} ({r.candidate}): {'; '.join(why)}")
        elif _score(r, metric, higher) == _score(best, metric, higher):
            rejected.append(f"{r.trial_id} ({r.candidate}): tied at validation {metric} "
                            f"{r.validation_metrics.get(metric, 0.0):.4f}; the smaller model was kept")
        else:
            rejected.append(
                f"{r.trial_id} ({r.candidate}): validation {metric} {r.validation_metrics.get(metric, 0.0):.4f} "
                f"vs {best.validation_metrics.get(metric, 0.0):.4f}"
            )
    reasoning = (
        f"chose {best.candidate} ({best.trial_id}): validation {metric} {best.validation_metrics.get(metric, 0.0):.4f}"
        f" ({'higher' if higher else 'lower'} is better), {best.num_parameters:,} parameters, "
        f"bare ONNX latency {best.onnx_latency_ms:.3f} ms, {best.model_size_mb:.2f} MB"
    )
    if not fitting:
        reasoning += "; no candidate met the latency/size limits, so the best on validation was kept"
    if planned and planned.notes:
        reasoning = "; ".join(planned.notes) + ". " + reasoning
    leaderboard = sorted(results, key=lambda r: (bool(r.error), -_score(r, metric, higher)))
    return common_pb2.ModelReport(
        best_trial_id=best.trial_id,
        candidate=best.candidate,
        validation_metrics=dict(best.validation_metrics),
        test_metrics=dict(best.test_metrics),
        leaderboard=leaderboard,
        bundle_artifact=best.bundle_artifact,
        onnx_artifact=best.onnx_artifact,
        model_size_mb=best.model_size_mb,
        parity_max_abs_diff=best.parity_max_abs_diff,
        reasoning=reasoning,
        rejected=rejected,
        selection_metric=metric,
    )
