"""The LLM brain through the running stack: its TaskSpec when the endpoint answers, the rules (and an event) when not."""

from __future__ import annotations

import pytest

from tests.integration.helpers import follow
from traineragent.v1 import common_pb2

pytestmark = pytest.mark.integration

LLM_SPEC = {
    "decision": "accept", "reject_reason": None, "explanation": "Classify product photos into two kinds.",
    "task_type": "image_classification", "targets": [{"metric": "accuracy", "op": ">=", "value": 0.93}],
    "constraints": {"max_latency_ms": 20, "max_model_size_mb": None, "max_train_minutes": None},
    "labels": [], "label_column": None, "input_columns": [], "questions": [],
}


def test_plan_comes_from_the_llm_when_it_answers(gateway, llm_server):
    llm_server.set_script([{"json": LLM_SPEC}])
    try:
        spec = gateway.plan("sort our product photos in two kinds, 93% accuracy, 20 ms")
    finally:
        llm_server.set_script([{"status": 500, "body": {"error": {"message": "scripted outage"}}}])
    assert spec.brain == common_pb2.BRAIN_LLM and not spec.HasField("fallback_reason")
    assert spec.targets[0].value == pytest.approx(0.93)
    assert spec.constraints.max_latency_ms == 20


def test_a_job_says_when_the_llm_failed_and_the_rules_decided(gateway, stack, data_root):
    from tests.integration.test_bad_input import _write_folder

    folder = data_root / "llm-fallback"
    _write_folder(folder, {"a": 6, "b": 6})
    job = gateway.submit("Identify the protesters in these photos so we can track them",
                         common_pb2.DatasetRef(server_path=str(folder)))
    final, events = follow(gateway, job.job_id, timeout_s=60)
    assert final.state == common_pb2.JOB_STATE_REJECTED
    assert final.task_spec.brain == common_pb2.BRAIN_RULES and "500" in final.task_spec.fallback_reason
    warnings = [e for e in events if e.kind == common_pb2.EVENT_KIND_WARNING and e.stage == common_pb2.STAGE_REVIEW]
    assert warnings and "500" in warnings[0].message
    assert all("test-key-not-secret" not in e.message for e in events)
    for log in (stack.state_dir / "logs").glob("*.log"):
        assert "test-key-not-secret" not in log.read_text(errors="replace"), f"the API key leaked into {log.name}"
