"""What `trainer-agent run` and `watch` show: a live bar per stage and per trial, then the report."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from services.common.jsonfmt import enum_to_json
from traineragent.v1 import common_pb2

STAGES = [common_pb2.STAGE_REVIEW, common_pb2.STAGE_DATA, common_pb2.STAGE_TRAIN, common_pb2.STAGE_EXPORT,
          common_pb2.STAGE_DEPLOY]


def stage_name(stage: int) -> str:
    return enum_to_json(common_pb2.Stage.DESCRIPTOR, stage) or "job"


def state_name(state: int) -> str:
    return enum_to_json(common_pb2.JobState.DESCRIPTOR, state) or "UNKNOWN"


def event_line(event: common_pb2.JobEvent, started: float) -> str:
    kind = enum_to_json(common_pb2.EventKind.DESCRIPTOR, event.kind) or ""
    prefix = f"[{time.monotonic() - started:6.1f}s] {stage_name(event.stage):<7}"
    if event.kind == common_pb2.EVENT_KIND_STATE_CHANGED:
        return f"{prefix} {state_name(event.state)}: {event.message}"
    if event.error:
        return f"{prefix} {kind}: {event.message}"
    return f"{prefix} {event.message}"


class ProgressView:
    """Renders a job's events: live bars on a terminal, one line per event otherwise."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = console.is_terminal
        self.started = time.monotonic()
        self.progress = Progress(
            SpinnerColumn(), TextColumn("{task.description:<34}"), BarColumn(bar_width=28), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console, transient=False,
        )
        self.stage_tasks: dict[int, int] = {}
        self.trial_tasks: dict[str, int] = {}

    def __enter__(self) -> ProgressView:
        if self.live:
            self.progress.start()
            for stage in STAGES:
                self.stage_tasks[stage] = self.progress.add_task(stage_name(stage), total=1, info="waiting",
                                                                 start=False)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.progress.stop()

    def handle(self, event: common_pb2.JobEvent) -> None:
        if not self.live:
            if event.kind != common_pb2.EVENT_KIND_EPOCH or event.epoch in (1, event.max_epochs) or event.epoch % 5 == 0:
                self.console.print(event_line(event, self.started), highlight=False, markup=False)
            return
        if event.kind == common_pb2.EVENT_KIND_EPOCH:
            task = self.trial_tasks.get(event.trial_id)
            if task is None:
                task = self.progress.add_task(f"  {event.trial_id}", total=event.max_epochs or None, info="")
                self.trial_tasks[event.trial_id] = task
            self.progress.update(task, completed=event.epoch, total=event.max_epochs or None,
                                 info=f"val acc {event.metrics.get('val_accuracy', 0):.4f}")
            return
        if event.kind == common_pb2.EVENT_KIND_TRIAL_FINISHED and event.trial_id in self.trial_tasks:
            task = self.trial_tasks[event.trial_id]
            total = self.progress.tasks[task].total or 1
            self.progress.update(task, completed=total, total=total,
                                 info="failed" if event.trial.error else
                                 f"val acc {event.trial.validation_metrics.get('accuracy', 0):.4f} (done)")
        stage_task = self.stage_tasks.get(event.stage)
        if stage_task is not None:
            if event.kind == common_pb2.EVENT_KIND_STAGE_STARTED:
                self.progress.start_task(stage_task)
                self.progress.update(stage_task, info="running")
            elif event.kind == common_pb2.EVENT_KIND_STAGE_FINISHED:
                self.progress.update(stage_task, completed=1, info="failed" if event.error else "done")
        if event.kind != common_pb2.EVENT_KIND_EPOCH:
            self.progress.console.print(event_line(event, self.started), highlight=False, markup=False)


def render_job(job: common_pb2.Job, console: Console) -> None:
    """The final report of a job, for people."""
    state = state_name(job.state)
    colour = {"SUCCEEDED": "green", "FAILED": "red", "REJECTED": "yellow", "CANCELLED": "yellow"}.get(state, "cyan")
    console.print(f"\n[bold]Job {job.job_id}[/bold]  [{colour}]{state}[/{colour}]")
    console.print(f"Request: {job.request}", markup=False, highlight=False)
    spec = job.task_spec
    if spec.decision:
        console.print(f"Task: {enum_to_json(common_pb2.TaskType.DESCRIPTOR, spec.task_type) or 'not decided yet'} "
                      f"({spec.brain and enum_to_json(common_pb2.Brain.DESCRIPTOR, spec.brain)} brain) — "
                      f"{spec.explanation}", markup=False, highlight=False)
    if job.HasField("error"):
        console.print(f"[red]Error:[/red] {job.error}", highlight=False)
    if job.questions:
        console.print("Questions (answer with `trainer-agent reply JOB id=answer ...`):")
        for q in job.questions:
            choices = f" [{' | '.join(q.choices)}]" if q.choices else ""
            console.print(f"  {q.id}: {q.text}{choices}", markup=False, highlight=False)
    if job.data_report.num_examples:
        d = job.data_report
        what = f"{len(d.classes)} classes" if d.classes else "a number to predict"
        if d.label_column:
            what += f" in {d.label_column!r}"
        if d.input_columns:
            shown = ", ".join(d.input_columns[:8]) + (", ..." if len(d.input_columns) > 8 else "")
            what += f", from {shown}"
        console.print(f"Data: {d.num_examples} examples, {what}; split "
                      f"{d.split_sizes.train}/{d.split_sizes.validation}/{d.split_sizes.test}"
                      + (f", {d.num_dropped} dropped" if d.num_dropped else "")
                      + (f", {d.num_duplicates} duplicates removed" if d.num_duplicates else ""),
                      markup=False, highlight=False)
        for warning in list(d.warnings)[:5]:
            console.print(f"  note: {warning}", markup=False, highlight=False)
    if job.model_report.candidate:
        m = job.model_report
        table = Table(title="Candidates (best first)", show_lines=False)
        metric = m.selection_metric or "accuracy"
        for column in ("", "candidate", f"val {metric}", "epochs", "params", "ONNX ms", "device"):
            table.add_column(column, no_wrap=True)
        for t in m.leaderboard:
            mark = "*" if t.trial_id == m.best_trial_id else ""
            if t.error:
                table.add_row(mark, t.candidate, "failed", "", "", "", t.error[:40])
                continue
            table.add_row(mark, t.candidate, f"{t.validation_metrics.get(metric, 0):.4f}",
                          str(t.epochs), f"{t.num_parameters:,}", f"{t.onnx_latency_ms:.3f}", t.device)
        console.print(table)
        console.print(f"Chosen: {m.reasoning}", markup=False, highlight=False)
        if m.rejected:
            console.print("Not chosen:")
            for line in list(m.rejected)[:8]:
                console.print(f"  - {line}", markup=False, highlight=False)
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in sorted(m.test_metrics.items()))
        console.print(f"Test metrics: {metrics}")
    if len(job.history) > 1:
        console.print("What the agents tried:")
        for line in job.history:
            console.print(f"  - {line}", markup=False, highlight=False)
    if job.target_results:
        table = Table(title="Targets")
        for column in ("target", "measured", "met"):
            table.add_column(column)
        for r in job.target_results:
            measured = f"{r.measured:.4g}" if r.HasField("measured") else "n/a"
            table.add_row(f"{r.metric} {r.op} {r.value:g}", measured, "[green]yes[/green]" if r.met else "[red]no[/red]")
        console.print(table)
    if job.deployment.endpoint:
        dep = job.deployment
        console.print(f"Endpoint: {dep.endpoint}  model {dep.model_name}  (Open Inference Protocol v2, gRPC)")
        console.print(f"Latency through the endpoint: p50 {dep.latency_ms.p50:.2f} ms, p95 {dep.latency_ms.p95:.2f} ms, "
                      f"p99 {dep.latency_ms.p99:.2f} ms; bare ONNX p50 {dep.raw_onnx_latency_ms.p50:.3f} ms")
        console.print(f"Try it: trainer-agent predict {dep.model_name} {_predict_hint(dep)}   |   "
                      f"export: trainer-agent export {job.job_id} --out DIR", markup=False, highlight=False)
    if job.stage_seconds:
        ordered = [stage_name(s) for s in STAGES if stage_name(s) in job.stage_seconds]
        console.print("Stage seconds: " + ", ".join(f"{k} {job.stage_seconds[k]:.1f}" for k in ordered))
    if job.HasField("targets_met"):
        console.print("[green]All targets met.[/green]" if job.targets_met else f"[yellow]{job.summary}[/yellow]")


def _predict_hint(deployment: common_pb2.Deployment) -> str:
    """What to send this endpoint from the shell, by its task."""
    if deployment.task_type == common_pb2.TASK_TYPE_TEXT_CLASSIFICATION:
        return '--text "a message to classify"'
    if deployment.task_type in (common_pb2.TASK_TYPE_TABULAR_CLASSIFICATION, common_pb2.TASK_TYPE_TABULAR_REGRESSION):
        columns = list(deployment.inputs)[:3]
        return "--row '{" + ", ".join(f'"{c}": ...' for c in columns) + (", ..." if len(deployment.inputs) > 3 else "") + "}'"
    return "IMAGE.png"
