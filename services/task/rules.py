"""The rule brain: reads a request into a TaskSpec offline and deterministically.

Knowledge (review patterns, task-type cues) lives in ``knowledge/rules.yaml``; this module holds
the extraction of targets and constraints, which is grammar rather than knowledge.
"""

from __future__ import annotations

import functools
import pathlib
import re
from dataclasses import dataclass

import yaml

from traineragent.v1 import common_pb2

KNOWLEDGE = pathlib.Path(__file__).with_name("knowledge") / "rules.yaml"

_METRICS: list[tuple[str, int]] = [
    (r"\bf1(?:[- ]?(?:score|macro))?\b|\bf-score\b|\bf1值", common_pb2.METRIC_F1),
    (r"\bprecision\b|精确率|查准率", common_pb2.METRIC_PRECISION),
    (r"\brecall\b|召回率|查全率", common_pb2.METRIC_RECALL),
    (r"\bmae\b|mean absolute error|平均绝对误差", common_pb2.METRIC_MAE),
    (r"\brmse\b|root mean squared? error|均方根误差", common_pb2.METRIC_RMSE),
    (r"\br\^?2\b|\br²|r-squared|\br squared\b|决定系数", common_pb2.METRIC_R2),
    (r"\bperplexity\b|困惑度", common_pb2.METRIC_PERPLEXITY),
    (r"\baccuracy\b|\baccurate\b|\bacc\b|准确率|正确率|准确度|精度", common_pb2.METRIC_ACCURACY),
]
_LOWER_IS_BETTER = {common_pb2.METRIC_MAE, common_pb2.METRIC_RMSE, common_pb2.METRIC_PERPLEXITY}

_NUMBER = r"(?<![A-Za-z\d.²])(\d+(?:[.,]\d+)?)\s*(%|percent|％)?"
_GE_WORDS = (
    r"at least|no (?:less|lower|worse) than|not (?:less|lower|below) than|not below|minimum(?: of)?|min\.?"
    r"|above|over|more than|greater than|higher than|exceeding|>=|≥|=>|>|不低于|不少于|至少|大于等于|大于|高于|超过"
)
_LE_WORDS = (
    r"at most|no (?:more|higher|greater|worse) than|not (?:more|higher|above) than|not above|maximum(?: of)?"
    r"|max\.?|under|below|less than|lower than|within|<=|≤|=<|<|不超过|不高于|至多|小于等于|小于|低于|以内|以下"
)
_GE_SUFFIX = r"or (?:better|more|higher|above)|and above|or greater|以上|及以上|或更高"
_LE_SUFFIX = r"or (?:less|lower|below|fewer)|and below|以下|以内|或更低"


@dataclass(frozen=True)
class _Unit:
    pattern: str
    kind: str  # latency | size | train
    factor: float  # to ms, MB or minutes


_UNITS = [
    _Unit(r"ms|msec|millisecond(?:s)?|毫秒", "latency", 1.0),
    _Unit(r"µs|us|microsecond(?:s)?|微秒", "latency", 0.001),
    _Unit(r"kb|kilobyte(?:s)?", "size", 1 / 1024),
    _Unit(r"mb|mib|megabyte(?:s)?|兆", "size", 1.0),
    _Unit(r"gb|gib|gigabyte(?:s)?", "size", 1024.0),
    _Unit(r"min(?:ute)?s?|分钟", "train", 1.0),
    _Unit(r"h(?:ou)?rs?|hours?|小时", "train", 60.0),
    _Unit(r"s|sec(?:ond)?s?|秒", "seconds", 1.0),
]


@functools.cache
def knowledge() -> dict:
    return yaml.safe_load(KNOWLEDGE.read_text(encoding="utf-8"))


def _search(patterns: list[str], text: str) -> re.Match[str] | None:
    for pattern in patterns:
        match = re.search(pattern, text, re.IGNORECASE)
        if match:
            return match
    return None


def _direction(before: str, after: str, default: str) -> str:
    """The comparison stated around a number: words just before it, or a suffix just after."""
    before = before[-28:]
    if re.search(rf"({_GE_WORDS})\s*(?:of\s*|to\s*|=\s*|:\s*|为\s*)?$", before, re.IGNORECASE):
        return ">="
    if re.search(rf"({_LE_WORDS})\s*(?:of\s*|to\s*|=\s*|:\s*|为\s*)?$", before, re.IGNORECASE):
        return "<="
    if re.match(rf"\s*(?:{_GE_SUFFIX})", after, re.IGNORECASE):
        return ">="
    if re.match(rf"\s*(?:{_LE_SUFFIX})", after, re.IGNORECASE):
        return "<="
    return default


def extract_targets(text: str) -> list[common_pb2.Target]:
    """Metric targets: the number nearest each metric word, within its clause."""
    targets: list[common_pb2.Target] = []
    taken: list[tuple[int, int]] = []
    for pattern, metric in _METRICS:
        for match in re.finditer(pattern, text, re.IGNORECASE):
            if any(a <= match.start() < b for a, b in taken):
                continue
            found = _number_near(text, match, metric)
            if found is None:
                continue
            value, op, span = found
            if any(t.metric == metric for t in targets):
                continue
            targets.append(common_pb2.Target(metric=metric, op=op, value=value))
            taken.append((min(span[0], match.start()), max(span[1], match.end())))
    return targets


def _number_near(text: str, match: re.Match[str], metric: int) -> tuple[float, str, tuple[int, int]] | None:
    default = "<=" if metric in _LOWER_IS_BETTER else ">="
    clause_end = _clause_end(text, match.end())
    clause_start = _clause_start(text, match.start())
    candidates: list[tuple[int, re.Match[str]]] = []
    for number in re.finditer(_NUMBER, text[clause_start:clause_end], re.IGNORECASE):
        start = clause_start + number.start()
        end = clause_start + number.end()
        following = text[end : end + 14].lower()
        if re.match(r"\s*(?:" + "|".join(u.pattern for u in _UNITS) + r")\b", following, re.IGNORECASE):
            continue  # a latency, size or time, not this metric's value
        if re.match(r"\s*(?:classes|queues|categories|labels|类)", following):
            continue
        distance = start - match.end() if start >= match.end() else match.start() - end
        candidates.append((abs(distance), number))
    if not candidates:
        return None
    _, number = min(candidates, key=lambda c: c[0])
    start = clause_start + number.start()
    end = clause_start + number.end()
    value = float(number.group(1).replace(",", "."))
    if number.group(2) or (metric not in _LOWER_IS_BETTER and metric != common_pb2.METRIC_R2 and value > 1):
        value = value / 100.0
    before = text[max(0, min(start, match.start()) - 30) : start]
    op = _direction(before, text[end:], default)
    return round(value, 6), op, (start, end)


def _clause_end(text: str, index: int) -> int:
    found = re.search(r"[,;，；。\n]|\band\b|\bwith\b|\bunder\b \d+\s*ms", text[index:])
    return index + found.start() if found else len(text)


def _clause_start(text: str, index: int) -> int:
    head = text[:index]
    cut = max(head.rfind(c) for c in ",;，；。\n")
    return cut + 1 if cut >= 0 else 0


def extract_constraints(text: str) -> common_pb2.Constraints:
    """Latency, size and training-time limits: a number with a unit, read with its context."""
    constraints = common_pb2.Constraints()
    unit_alternatives = "|".join(f"(?P<u{i}>{u.pattern})" for i, u in enumerate(_UNITS))
    pattern = rf"(\d+(?:[.,]\d+)?)\s*(?:{unit_alternatives})(?![a-z])"
    for match in re.finditer(pattern, text, re.IGNORECASE):
        unit_index = next(i for i in range(len(_UNITS)) if match.group(f"u{i}"))
        unit = _UNITS[unit_index]
        value = float(match.group(1).replace(",", ".")) * unit.factor
        context = text[max(0, match.start() - 40) : match.end() + 30].lower()
        kind = unit.kind
        if kind == "seconds":
            training = re.search(r"train|训练|fit|budget", context)
            kind, value = ("train", value / 60.0) if training else ("latency", value * 1000.0)
        if kind == "train" and not re.search(r"train|训练|fit|budget|learn|build|finish|ready", context):
            continue
        if kind == "latency":
            if not constraints.HasField("max_latency_ms"):
                constraints.max_latency_ms = round(value, 6)
        elif kind == "size":
            if not constraints.HasField("max_model_size_mb"):
                constraints.max_model_size_mb = round(value, 6)
        elif kind == "train" and not constraints.HasField("max_train_minutes"):
            constraints.max_train_minutes = round(value, 6)
    return constraints


def detect_task_type(text: str) -> int:
    for entry in knowledge()["task_types"]:
        if _search(entry["patterns"], text):
            return common_pb2.TaskType.Value("TASK_TYPE_" + entry["type"].upper())
    return common_pb2.TASK_TYPE_UNSPECIFIED


def review(text: str) -> tuple[int, str] | None:
    """(reject_reason, explanation) when the request must be refused, else None."""
    rules = knowledge()
    harmless = _search(rules["harmless_lookalikes"], text) is not None
    for entry in rules["unethical"]:
        if harmless and entry["category"] in ("fraud", "harassment"):
            continue
        if _search(entry["patterns"], text):
            return common_pb2.REJECT_REASON_UNETHICAL, f"Refused: {entry['explanation']}."
    for entry in rules["infeasible"]:
        if _search(entry["patterns"], text):
            return common_pb2.REJECT_REASON_INFEASIBLE, f"Not possible: {entry['explanation']}."
    return None


def extract_labels(text: str) -> list[str]:
    """Class names listed in the request: "into billing, outage, account or other"."""
    match = re.search(
        r"\b(?:into|as|between|among)\s+(?:(?:the\s+)?(?:\w+\s+)?(?:classes|queues|categories|groups|labels)\s*[:(]?\s*)?"
        r"((?:[\w-]+\s*,\s*)+[\w-]+\s*,?\s*(?:and|or)\s+[\w-]+)",
        text,
        re.IGNORECASE,
    )
    if not match:
        return []
    parts = re.split(r"\s*,\s*|\s+(?:and|or)\s+", match.group(1))
    return [p.strip() for p in parts if p.strip()]


def read_request(text: str) -> common_pb2.TaskSpec:
    """The rule brain's TaskSpec for a request."""
    spec = common_pb2.TaskSpec(brain=common_pb2.BRAIN_RULES)
    refusal = review(text)
    if refusal:
        spec.decision = common_pb2.DECISION_REJECT
        spec.reject_reason, spec.explanation = refusal
        return spec
    spec.task_type = detect_task_type(text)
    spec.targets.extend(extract_targets(text))
    spec.constraints.CopyFrom(extract_constraints(text))
    spec.labels.extend(extract_labels(text))
    vague = _search(knowledge()["vague"], text) is not None
    if vague or spec.task_type == common_pb2.TASK_TYPE_UNSPECIFIED:
        spec.decision = common_pb2.DECISION_CLARIFY
        spec.explanation = "The request does not say what the model should learn; please answer the questions."
        spec.questions.extend(
            [
                common_pb2.Question(
                    id="task",
                    text="What should the model predict, from what input? "
                    "(e.g. 'classify product photos into 5 defect types')",
                ),
                common_pb2.Question(
                    id="task_type",
                    text="Which kind of task is it?",
                    choices=[
                        "image_classification",
                        "text_classification",
                        "tabular_classification",
                        "tabular_regression",
                    ],
                ),
                common_pb2.Question(
                    id="targets",
                    text="What quality does it need (e.g. 'accuracy at least 90%') and how fast must it answer?",
                ),
            ]
        )
        return spec
    spec.decision = common_pb2.DECISION_ACCEPT
    spec.explanation = _accept_explanation(spec)
    return spec


def _accept_explanation(spec: common_pb2.TaskSpec) -> str:
    from services.common.jsonfmt import enum_to_json

    task = enum_to_json(common_pb2.TaskType.DESCRIPTOR, spec.task_type)
    parts = [
        f"{enum_to_json(common_pb2.Metric.DESCRIPTOR, t.metric)} {t.op} {t.value:g}" for t in spec.targets
    ]
    c = spec.constraints
    if c.HasField("max_latency_ms"):
        parts.append(f"p95 latency <= {c.max_latency_ms:g} ms")
    if c.HasField("max_model_size_mb"):
        parts.append(f"model size <= {c.max_model_size_mb:g} MB")
    if c.HasField("max_train_minutes"):
        parts.append(f"training <= {c.max_train_minutes:g} min")
    goals = "; ".join(parts) if parts else "no explicit targets (best effort)"
    return f"Accepted as {task}: {goals}."
