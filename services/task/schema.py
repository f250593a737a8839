"""The TaskSpec as JSON: the schema the LLM answers against, its validation, and the message it becomes.

The schema is DESIGN.md's canonical TaskSpec without ``brain`` and ``fallback_reason`` (the Task agent
sets those, not the model). It is written for strict structured outputs: every property required,
unset values as ``null``, no extra properties. Enum values come from the protobuf enums, so the schema
cannot drift from the contract.

:func:`validate_spec` checks what a schema cannot say (a reject has a reason, a clarify has questions,
fractions are at most 1, limits are positive) and names the field and the allowed values in every
message, because those messages go back to the model as the correction it needs.
"""

from __future__ import annotations

import math
from typing import Any

from services.common.jsonfmt import enum_from_json, enum_to_json
from traineragent.v1 import common_pb2

SCHEMA_NAME = "task_spec"


def _values(enum: Any) -> list[str]:
    return [v for v in (enum_to_json(enum, x.number) for x in enum.values) if v]


DECISIONS = _values(common_pb2.Decision.DESCRIPTOR)
REJECT_REASONS = _values(common_pb2.RejectReason.DESCRIPTOR)
TASK_TYPES = _values(common_pb2.TaskType.DESCRIPTOR)
METRICS = _values(common_pb2.Metric.DESCRIPTOR)
OPS = [">=", "<="]
FRACTION_METRICS = {"accuracy", "f1", "precision", "recall"}
ERROR_METRICS = {"mae", "rmse"}
CONSTRAINT_FIELDS = ["max_latency_ms", "max_model_size_mb", "max_train_minutes"]

# What each field means, for the schema's descriptions and the system prompt's field list.
FIELD_DOCS: dict[str, str] = {
    "decision": "accept, reject or clarify (review order: unethical, then infeasible, then clarify, then accept)",
    "reject_reason": "unethical or infeasible when decision is reject; null otherwise",
    "explanation": "one or two sentences the user can act on",
    "task_type": "the kind of model; null only when the decision is reject or clarify and it is unknown",
    "targets": "quality targets the request states: metric, op (>= or <=), value (percentages as fractions)",
    "constraints": "max_latency_ms (milliseconds), max_model_size_mb (megabytes), max_train_minutes "
    "(minutes); null when the request does not state it",
    "labels": "class names, only when the request names them",
    "label_column": "the column to predict, only when the request names it; else null",
    "input_columns": "the columns to learn from, only when the request names them",
    "questions": "what to ask the user: [{id, text, choices}]; non-empty exactly when decision is clarify",
}
FIELDS = list(FIELD_DOCS)


def _nullable_enum(values: list[str], description: str) -> dict[str, Any]:
    return {"type": ["string", "null"], "enum": [*values, None], "description": description}


def _string_list(description: str) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "string"}, "description": description}


TASK_SPEC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": FIELDS,
    "properties": {
        "decision": {"type": "string", "enum": DECISIONS, "description": FIELD_DOCS["decision"]},
        "reject_reason": _nullable_enum(REJECT_REASONS, FIELD_DOCS["reject_reason"]),
        "explanation": {"type": "string", "description": FIELD_DOCS["explanation"]},
        "task_type": _nullable_enum(TASK_TYPES, FIELD_DOCS["task_type"]),
        "targets": {
            "type": "array",
            "description": FIELD_DOCS["targets"],
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["metric", "op", "value"],
                "properties": {
                    "metric": {"type": "string", "enum": METRICS},
                    "op": {"type": "string", "enum": OPS},
                    "value": {"type": "number"},
                },
            },
        },
        "constraints": {
            "type": "object",
            "description": FIELD_DOCS["constraints"],
            "additionalProperties": False,
            "required": CONSTRAINT_FIELDS,
            "properties": {name: {"type": ["number", "null"]} for name in CONSTRAINT_FIELDS},
        },
        "labels": _string_list(FIELD_DOCS["labels"]),
        "label_column": {"type": ["string", "null"], "description": FIELD_DOCS["label_column"]},
        "input_columns": _string_list(FIELD_DOCS["input_columns"]),
        "questions": {
            "type": "array",
            "description": FIELD_DOCS["questions"],
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["id", "text", "choices"],
                "properties": {
                    "id": {"type": "string"},
                    "text": {"type": "string"},
                    "choices": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}


def field_list() -> str:
    """The fields as lines for a prompt: name, allowed values, meaning."""
    allowed = {
        "decision": " | ".join(DECISIONS),
        "reject_reason": " | ".join(REJECT_REASONS) + " | null",
        "task_type": " | ".join(TASK_TYPES) + " | null",
    }
    lines = []
    for name, doc in FIELD_DOCS.items():
        values = f" ({allowed[name]})" if name in allowed else ""
        lines.append(f"- {name}{values}: {doc}")
    lines.append(f"- target metrics: {' | '.join(METRICS)}; ops: {' | '.join(OPS)}")
    return "\n".join(lines)


class SpecInvalid(ValueError):
    """A candidate TaskSpec breaks the schema or is inconsistent; the message lists every problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _enum(value: Any, allowed: list[str], field: str, problems: list[str], nullable: bool) -> str | None:
    if value is None:
        if not nullable:
            problems.append(f"{field} is missing or null; allowed values: {', '.join(allowed)}")
        return None
    if not isinstance(value, str) or value.strip().lower() not in allowed:
        extra = " or null" if nullable else ""
        problems.append(f"{field} is {value!r}; allowed values: {', '.join(allowed)}{extra}")
        return None
    return value.strip().lower()


def _strings(value: Any, field: str, problems: list[str]) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append(f"{field} must be a list of strings, got {value!r}")
        return []
    return [v.strip() for v in value if v.strip()]


def validate_spec(obj: Any) -> dict[str, Any]:
    """The candidate normalised (enums lower case, empty lists for absent lists), or SpecInvalid.

    Absent optional keys are read as null or empty (JSON mode on small models drops them); unknown keys,
    wrong types, values outside the enums and inconsistent combinations are errors.
    """
    if not isinstance(obj, dict):
        raise SpecInvalid([f"the answer must be a JSON object with the fields {', '.join(FIELDS)}"])
    problems: list[str] = []
    unknown = sorted(set(obj) - set(FIELDS))
    if unknown:
        problems.append(f"unknown field(s) {', '.join(unknown)}; the allowed fields are {', '.join(FIELDS)}")
    for required in ("decision", "explanation"):
        if required not in obj:
            problems.append(f"{required} is missing")

    decision = _enum(obj.get("decision"), DECISIONS, "decision", problems, nullable=False) if "decision" in obj else None
    reject_reason = _enum(obj.get("reject_reason"), REJECT_REASONS, "reject_reason", problems, nullable=True)
    task_type = _enum(obj.get("task_type"), TASK_TYPES, "task_type", problems, nullable=True)

    explanation = obj.get("explanation")
    if "explanation" in obj and (not isinstance(explanation, str) or not explanation.strip()):
        problems.append("explanation must be a non-empty string (one or two sentences the user can act on)")
        explanation = None

    targets = _targets(obj.get("targets"), problems)
    constraints = _constraints(obj.get("constraints"), problems)
    labels = _strings(obj.get("labels"), "labels", problems)
    input_columns = _strings(obj.get("input_columns"), "input_columns", problems)
    label_column = obj.get("label_column")
    if label_column is not None and not isinstance(label_column, str):
        problems.append(f"label_column must be a string or null, got {label_column!r}")
        label_column = None
    if isinstance(label_column, str):
        label_column = label_column.strip() or None
    questions = _questions(obj.get("questions"), problems)

    if decision == "reject" and reject_reason is None and obj.get("reject_reason") is None:
        problems.append("reject_reason must be unethical or infeasible when decision is reject")
    if decision in ("accept", "clarify") and reject_reason is not None:
        problems.append(f"reject_reason must be null when decision is {decision} (it is {reject_reason!r})")
    if decision == "clarify" and not questions and not _has_question_problem(problems):
        problems.append("questions must be non-empty when decision is clarify: [{id, text, choices}]")
    if decision in ("accept", "reject") and questions:
        problems.append(f"questions must be empty when decision is {decision} (ask only when decision is clarify)")
    if decision == "accept" and task_type is None and obj.get("task_type") is None:
        problems.append(f"task_type must be set when decision is accept; allowed values: {', '.join(TASK_TYPES)}")

    if problems:
        raise SpecInvalid(problems)
    return {
        "decision": decision,
        "reject_reason": reject_reason,
        "explanation": explanation.strip(),
        "task_type": task_type,
        "targets": targets,
        "constraints": constraints,
        "labels": labels,
        "label_column": label_column,
        "input_columns": input_columns,
        "questions": questions,
    }


def _has_question_problem(problems: list[str]) -> bool:
    return any(p.startswith("questions") for p in problems)


def _targets(value: Any, problems: list[str]) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        problems.append("targets must be a list of {metric, op, value}")
        return []
    out = []
    for i, target in enumerate(value):
        where = f"targets[{i}]"
        if not isinstance(target, dict):
            problems.append(f"{where} must be an object {{metric, op, value}}")
            continue
        extra = sorted(set(target) - {"metric", "op", "value"})
        if extra:
            problems.append(f"{where} has unknown field(s) {', '.join(extra)}; allowed: metric, op, value")
        metric = _enum(target.get("metric"), METRICS, f"{where}.metric", problems, nullable=False)
        op = target.get("op")
        if op not in OPS:
            problems.append(f"{where}.op is {op!r}; allowed values: >=, <=")
        number = target.get("value")
        if not _is_number(number):
            problems.append(f"{where}.value must be a number, got {number!r}")
            continue
        if metric in FRACTION_METRICS and not 0 <= number <= 1:
            problems.append(
                f"{where}.value {number:g} is outside [0, 1] for {metric}; percentages are fractions (95% is 0.95)"
            )
        elif metric == "r2" and number > 1:
            problems.append(f"{where}.value {number:g} is above 1 for r2; r2 is at most 1")
        elif metric in ERROR_METRICS and number < 0:
            problems.append(f"{where}.value {number:g} is negative for {metric}; an error is at least 0")
        elif metric == "perplexity" and number < 1:
            problems.append(f"{where}.value {number:g} is below 1 for perplexity; perplexity is at least 1")
        elif metric and op in OPS:
            out.append({"metric": metric, "op": op, "value": float(number)})
    return out


def _constraints(value: Any, problems: list[str]) -> dict[str, float | None]:
    out: dict[str, float | None] = dict.fromkeys(CONSTRAINT_FIELDS)
    if value is None:
        return out
    if not isinstance(value, dict):
        problems.append(f"constraints must be an object with {', '.join(CONSTRAINT_FIELDS)} (each a number or null)")
        return out
    extra = sorted(set(value) - set(CONSTRAINT_FIELDS))
    if extra:
        problems.append(
            f"constraints has unknown field(s) {', '.join(extra)}; allowed: {', '.join(CONSTRAINT_FIELDS)} "
            "(convert to milliseconds, megabytes and minutes)"
        )
    for name in CONSTRAINT_FIELDS:
        number = value.get(name)
        if number is None:
            continue
        if not _is_number(number) or number <= 0:
            problems.append(f"constraints.{name} must be a positive number or null, got {number!r}")
            continue
        out[name] = float(number)
    return out


def _questions(value: Any, problems: list[str]) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        problems.append("questions must be a list of {id, text, choices}")
        return []
    out = []
    for i, question in enumerate(value):
        where = f"questions[{i}]"
        if not isinstance(question, dict):
            problems.append(f"{where} must be an object {{id, text, choices}}")
            continue
        qid, text = question.get("id"), question.get("text")
        if not isinstance(qid, str) or not qid.strip():
            problems.append(f"{where}.id must be a non-empty string")
            continue
        if not isinstance(text, str) or not text.strip():
            problems.append(f"{where}.text must be a non-empty string")
            continue
        choices = _strings(question.get("choices"), f"{where}.choices", problems)
        out.append({"id": qid.strip(), "text": text.strip(), "choices": choices})
    return out


def spec_from_json(obj: Any) -> common_pb2.TaskSpec:
    """A validated candidate as a TaskSpec (``brain`` and ``fallback_reason`` left for the caller)."""
    valid = validate_spec(obj)
    spec = common_pb2.TaskSpec(
        decision=enum_from_json(common_pb2.Decision.DESCRIPTOR, valid["decision"]),
        explanation=valid["explanation"],
    )
    if valid["reject_reason"]:
        spec.reject_reason = enum_from_json(common_pb2.RejectReason.DESCRIPTOR, valid["reject_reason"])
    if valid["task_type"]:
        spec.task_type = enum_from_json(common_pb2.TaskType.DESCRIPTOR, valid["task_type"])
    for target in valid["targets"]:
        spec.targets.add(
            metric=enum_from_json(common_pb2.Metric.DESCRIPTOR, target["metric"]),
            op=target["op"],
            value=target["value"],
        )
    if spec.decision != common_pb2.DECISION_REJECT:
        # The rule brain leaves constraints unset on a reject; an empty message elsewhere, as it does.
        spec.constraints.SetInParent()
    for name, number in valid["constraints"].items():
        if number is not None:
            setattr(spec.constraints, name, number)
    spec.labels.extend(valid["labels"])
    if valid["label_column"]:
        spec.label_column = valid["label_column"]
    spec.input_columns.extend(valid["input_columns"])
    for question in valid["questions"]:
        spec.questions.add(id=question["id"], text=question["text"], choices=question["choices"])
    return spec
