"""Judging a finished job against its targets and constraints (DESIGN.md, "Targets")."""

from __future__ import annotations

from services.common.jsonfmt import enum_to_json
from traineragent.v1 import common_pb2


def _met(measured: float, op: str, value: float) -> bool:
    return measured >= value if op == ">=" else measured <= value


def _note(name: str, measured: float, op: str, value: float) -> str:
    if _met(measured, op, value):
        return ""
    gap = abs(measured - value)
    side = "below" if op == ">=" else "above"
    return f"{name} {measured:.4g} is {gap:.4g} {side} the target {op} {value:g}"


def _result(name: str, op: str, value: float, measured: float | None) -> common_pb2.TargetResult:
    result = common_pb2.TargetResult(metric=name, op=op, value=value)
    if measured is None:
        result.met = False
        result.note = f"{name} could not be measured"
        return result
    result.measured = measured
    result.met = _met(measured, op, value)
    result.note = _note(name, measured, op, value)
    return result


def evaluate_targets(
    spec: common_pb2.TaskSpec,
    model_report: common_pb2.ModelReport,
    deployment: common_pb2.Deployment,
) -> list[common_pb2.TargetResult]:
    """One TargetResult per target (judged on the test split) and per stated constraint."""
    results = []
    for target in spec.targets:
        name = enum_to_json(common_pb2.Metric.DESCRIPTOR, target.metric) or "unknown"
        measured = model_report.test_metrics.get(name)
        results.append(_result(name, target.op or ">=", target.value, measured))
    c = spec.constraints
    if c.HasField("max_latency_ms"):
        p95 = deployment.latency_ms.p95 if deployment.latency_ms.requests else None
        results.append(_result("latency_p95_ms", "<=", c.max_latency_ms, p95))
    if c.HasField("max_model_size_mb"):
        results.append(_result("model_size_mb", "<=", c.max_model_size_mb, model_report.model_size_mb))
    if c.HasField("max_train_minutes"):
        results.append(_result("train_minutes", "<=", c.max_train_minutes, model_report.seconds / 60.0))
    return results


def missed_on_validation(spec: common_pb2.TaskSpec, report: common_pb2.ModelReport) -> list[str]:
    """Quality targets the chosen model misses on the validation split (what iteration decides on).

    The test split is only for judging the final model, so the decision to try again looks at
    validation alone.
    """
    missed = []
    for target in spec.targets:
        name = enum_to_json(common_pb2.Metric.DESCRIPTOR, target.metric) or "unknown"
        measured = report.validation_metrics.get(name)
        if measured is not None and not _met(measured, target.op or ">=", target.value):
            missed.append(f"validation {_note(name, measured, target.op or '>=', target.value)}")
    return missed
