"""JSON as the contracts promise: snake_case keys, every key present, null when unset, enum spellings."""

from __future__ import annotations

from services.common.jsonfmt import enum_from_json, enum_to_json, message_to_json
from traineragent.v1 import common_pb2


def test_job_json_has_every_key_with_nulls_and_enum_spellings():
    job = common_pb2.Job(job_id="abc", state=common_pb2.JOB_STATE_SUCCEEDED)
    job.task_spec.decision = common_pb2.DECISION_ACCEPT
    job.task_spec.task_type = common_pb2.TASK_TYPE_IMAGE_CLASSIFICATION
    out = message_to_json(job)
    assert out["state"] == "SUCCEEDED"
    assert out["targets_met"] is None and out["error"] is None
    assert out["task_spec"]["decision"] == "accept"
    assert out["task_spec"]["task_type"] == "image_classification"
    assert out["task_spec"]["reject_reason"] is None
    assert out["deployment"] is None and out["model_report"] is None
    assert out["created_at"] is None
    assert out["dataset"] is None
    job.dataset.server_path = "/data"
    assert message_to_json(job)["dataset"] == {"upload_id": None, "server_path": "/data"}
    job.targets_met = False
    assert message_to_json(job)["targets_met"] is False


def test_enum_round_trip():
    assert enum_to_json(common_pb2.JobState.DESCRIPTOR, common_pb2.JOB_STATE_NEEDS_INPUT) == "NEEDS_INPUT"
    assert enum_from_json(common_pb2.TaskType.DESCRIPTOR, "text_classification") == 2
    try:
        enum_from_json(common_pb2.TaskType.DESCRIPTOR, "poetry")
    except ValueError as exc:
        assert "image_classification" in str(exc)
    else:
        raise AssertionError("an unknown value must be refused")
