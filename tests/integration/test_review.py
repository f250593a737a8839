"""The review through the running stack: refusals end REJECTED, unclear requests wait in NEEDS_INPUT."""

from __future__ import annotations

import grpc
import pytest

from tests.integration.helpers import follow
from traineragent.v1 import common_pb2

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def folder(data_root):
    from tests.integration.test_bad_input import _write_folder

    path = data_root / "review-data"
    _write_folder(path, {"a": 12, "b": 12})
    return path


def test_unethical_request_is_rejected_with_its_explanation(gateway, folder):
    job = gateway.submit("Identify the protesters in these photos so we can track them",
                         common_pb2.DatasetRef(server_path=str(folder)))
    final, events = follow(gateway, job.job_id, timeout_s=60)
    assert final.state == common_pb2.JOB_STATE_REJECTED
    assert final.task_spec.reject_reason == common_pb2.REJECT_REASON_UNETHICAL
    assert events[-1].state == common_pb2.JOB_STATE_REJECTED and "surveillance" in events[-1].message


def test_unclear_request_asks_and_runs_on_after_a_reply(gateway, folder):
    job = gateway.submit("make me a model", common_pb2.DatasetRef(server_path=str(folder)))
    final, events = follow(gateway, job.job_id, timeout_s=60)
    assert final.state == common_pb2.JOB_STATE_NEEDS_INPUT
    assert {q.id for q in final.questions} >= {"task", "task_type"}
    assert events[-1].questions
    with pytest.raises(grpc.RpcError) as info:
        gateway.reply(job.job_id, {"task": " "})
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    gateway.reply(job.job_id, {"task": "tell the two letters apart", "task_type": "image_classification"})
    reached_data = False
    for event in gateway.watch(job.job_id):
        if event.stage == common_pb2.STAGE_DATA and event.kind == common_pb2.EVENT_KIND_STAGE_FINISHED:
            reached_data = not event.error
            break
    assert reached_data
    cancelled = gateway.cancel(job.job_id)
    assert cancelled.state == common_pb2.JOB_STATE_CANCELLED
    final, events = follow(gateway, job.job_id, timeout_s=60)
    assert final.state == common_pb2.JOB_STATE_CANCELLED
    with pytest.raises(grpc.RpcError) as info:
        gateway.cancel(job.job_id)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
