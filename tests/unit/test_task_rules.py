"""The rule brain on the requests this issue names, and the target judgement."""

from __future__ import annotations

import pytest

from services.common.jsonfmt import message_to_json
from services.task.rules import read_request
from services.task.targets import evaluate_targets
from traineragent.v1 import common_pb2


def spec_json(text: str) -> dict:
    return message_to_json(read_request(text))


def test_the_demo_request():
    spec = spec_json("Recognise handwritten digits, at least 97% accuracy, under 5 ms per image")
    assert spec["decision"] == "accept" and spec["brain"] == "rules"
    assert spec["task_type"] == "image_classification"
    assert spec["targets"] == [{"metric": "accuracy", "op": ">=", "value": 0.97}]
    assert spec["constraints"] == {"max_latency_ms": 5.0, "max_model_size_mb": None, "max_train_minutes": None}


@pytest.mark.parametrize(
    ("text", "metric", "op", "value"),
    [
        ("Classify product photos, 0.9 or better accuracy", "accuracy", ">=", 0.9),
        ("Sort x-ray images, accuracy no lower than 88%", "accuracy", ">=", 0.88),
        ("识别手写数字图片，准确率不低于98%", "accuracy", ">=", 0.98),
        ("classify pictures of cats, 95%以上准确率", "accuracy", ">=", 0.95),
        ("tickets into four queues, F1 ≥ 0.85, under 15 ms", "f1", ">=", 0.85),
        ("predict house prices, MAE under 1500", "mae", "<=", 1500.0),
        ("predict sales with an R2 of at least 0.8", "r2", ">=", 0.8),
    ],
)
def test_targets(text, metric, op, value):
    targets = spec_json(text)["targets"]
    assert {"metric": metric, "op": op, "value": value} in targets


@pytest.mark.parametrize(
    ("text", "field", "value"),
    [
        ("classify photos, under 5 ms", "max_latency_ms", 5.0),
        ("classify photos with p95 latency 2ms", "max_latency_ms", 2.0),
        ("classify photos within 200 milliseconds", "max_latency_ms", 200.0),
        ("识别图片，延迟小于10毫秒", "max_latency_ms", 10.0),
        ("classify photos, model below 30MB", "max_model_size_mb", 30.0),
        ("classify photos, at most 50 megabytes", "max_model_size_mb", 50.0),
        ("classify photos and train in under 10 minutes", "max_train_minutes", 10.0),
    ],
)
def test_constraints(text, field, value):
    assert spec_json(text)["constraints"][field] == value


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Identify the protesters in these photos so we can track them", "unethical"),
        ("generate phishing emails that look like our bank", "unethical"),
        ("predict the lottery numbers for next week", "infeasible"),
        ("classify images with 100% accuracy on any photo from the internet", "infeasible"),
    ],
)
def test_refusals(text, reason):
    spec = spec_json(text)
    assert spec["decision"] == "reject" and spec["reject_reason"] == reason and spec["explanation"]


@pytest.mark.parametrize(
    "text",
    ["detect phishing emails, accuracy at least 90%", "classify photos of shooting stars, at least 90% accuracy"],
)
def test_harmless_lookalikes_are_accepted(text):
    assert spec_json(text)["decision"] == "accept"


def test_vague_request_asks():
    spec = spec_json("make me a model")
    assert spec["decision"] == "clarify"
    assert {q["id"] for q in spec["questions"]} >= {"task", "task_type"}


def test_target_results_say_how_far_off():
    spec = read_request("Recognise handwritten digits, at least 97% accuracy, under 5 ms per image")
    report = common_pb2.ModelReport(test_metrics={"accuracy": 0.96}, model_size_mb=0.1, seconds=30)
    deployment = common_pb2.Deployment(latency_ms=common_pb2.LatencyStats(p50=1.0, p95=2.0, requests=10))
    results = {r.metric: r for r in evaluate_targets(spec, report, deployment)}
    assert not results["accuracy"].met and "0.01 below" in results["accuracy"].note
    assert results["latency_p95_ms"].met and results["latency_p95_ms"].measured == 2.0


def test_iteration_looks_at_validation_only():
    from services.task.targets import missed_on_validation

    spec = read_request("Recognise handwritten digits, at least 99% accuracy")
    report = common_pb2.ModelReport(validation_metrics={"accuracy": 0.97}, test_metrics={"accuracy": 0.995})
    missed = missed_on_validation(spec, report)
    assert missed and "0.02 below" in missed[0]
    report.validation_metrics["accuracy"] = 0.995
    assert missed_on_validation(spec, report) == []
