"""Services keep no state that matters in memory: the Task service restarted mid-training, the job carries on."""

from __future__ import annotations

import pytest

from cli.predict import predict_files
from services.data.demo import write_digits_folder
from tests.integration.helpers import follow
from traineragent.v1 import common_pb2

pytestmark = pytest.mark.integration


def test_job_survives_a_task_service_restart(gateway, stack, tmp_path):
    folder = tmp_path / "digits"
    write_digits_folder(folder)
    upload = gateway.upload(folder)
    job = gateway.submit("Recognise handwritten digits, at least 90% accuracy",
                         common_pb2.DatasetRef(upload_id=upload.upload_id),
                         common_pb2.JobOptions(deployment_name="restart-check"))
    for event in gateway.watch(job.job_id):
        if event.kind == common_pb2.EVENT_KIND_EPOCH:
            break
    old_pid = stack.pids["task"]
    stack.restart_service("task")
    assert stack.pids["task"] != old_pid
    final, events = follow(gateway, job.job_id)
    assert final.state == common_pb2.JOB_STATE_SUCCEEDED, final.error
    assert final.deployment.model_name == "restart-check"
    # one search only: the restarted agent waited for the operation it had started, it did not start another
    started = [e for e in events if e.stage == common_pb2.STAGE_TRAIN and e.kind == common_pb2.EVENT_KIND_STAGE_STARTED]
    assert len(started) == 1

    stack.restart_service("server")
    restored = {d.name: d for d in gateway.deployments()}["restart-check"]
    assert restored.status == "ready" and restored.endpoint == final.deployment.endpoint
    image = next((folder / "3").glob("*.png")).read_bytes()
    answer = predict_files(restored, [_write(tmp_path / "three.png", image)])
    assert answer[0]["label"] == "3"
    gateway.undeploy("restart-check")


def _write(path, data: bytes):  # noqa: ANN001, ANN202
    path.write_bytes(data)
    return path
