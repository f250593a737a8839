"""The backbone: the digits request through gateway, all four agents and a training worker to a live endpoint.

Images kept back before upload are re-encoded as RGB JPEG at another size and sent to the endpoint;
accuracy is computed from the endpoint's own answers.
"""

from __future__ import annotations

import json
import pathlib
import random
import subprocess
import sys

import grpc
import numpy as np
import pytest

from cli.predict import decode_bytes_tensor, encode_bytes_tensor
from inference import grpc_predict_v2_pb2 as oip
from inference import grpc_predict_v2_pb2_grpc as oip_grpc
from services.common.jsonfmt import message_to_json
from services.data.demo import write_digits_folder
from tests.integration.helpers import encode, follow
from traineragent.v1 import common_pb2

pytestmark = pytest.mark.integration
ROOT = pathlib.Path(__file__).resolve().parents[2]
REQUEST = "Recognise handwritten digits, at least 97% accuracy, under 5 ms per image"


@pytest.fixture(scope="module")
def digits_job(gateway, tmp_path_factory):
    folder = tmp_path_factory.mktemp("digits") / "digits"
    write_digits_folder(folder)
    rng = random.Random(7)
    kept_back: list[tuple[str, bytes]] = []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(class_dir.glob("*.png"))
        for path in rng.sample(files, k=len(files) // 10):
            kept_back.append((class_dir.name, path.read_bytes()))
            path.unlink()
    upload = gateway.upload(folder)
    job = gateway.submit(REQUEST, common_pb2.DatasetRef(upload_id=upload.upload_id))
    final, events = follow(gateway, job.job_id)
    return final, events, kept_back


def test_job_succeeds_with_a_full_report(digits_job):
    job, events, _ = digits_job
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job.error
    report = message_to_json(job)
    assert report["state"] == "SUCCEEDED"
    assert report["task_spec"]["task_type"] == "image_classification"
    assert report["task_spec"]["targets"] == [{"metric": "accuracy", "op": ">=", "value": 0.97}]
    assert report["task_spec"]["constraints"]["max_latency_ms"] == 5.0
    assert report["data_report"]["classes"] == [str(d) for d in range(10)]
    assert report["model_report"]["test_metrics"]["accuracy"] >= 0.9
    assert len(report["model_report"]["leaderboard"]) >= 2
    assert len({t["candidate"] for t in report["model_report"]["leaderboard"]}) >= 2
    assert report["model_report"]["parity_max_abs_diff"] < 1e-4
    deployment = report["deployment"]
    assert deployment["endpoint"].startswith("127.0.0.1:")
    assert deployment["model_name"]
    assert 0 < deployment["latency_ms"]["p50"] <= deployment["latency_ms"]["p95"]
    assert deployment["raw_onnx_latency_ms"]["p50"] > 0
    assert isinstance(report["targets_met"], bool)
    assert {r["metric"] for r in report["target_results"]} == {"accuracy", "latency_p95_ms"}


def test_events_cover_every_stage_and_epoch(digits_job):
    job, events, _ = digits_job
    assert [e.seq for e in events] == list(range(len(events)))
    stages_started = {e.stage for e in events if e.kind == common_pb2.EVENT_KIND_STAGE_STARTED}
    assert stages_started >= {common_pb2.STAGE_REVIEW, common_pb2.STAGE_DATA, common_pb2.STAGE_TRAIN,
                              common_pb2.STAGE_EXPORT, common_pb2.STAGE_DEPLOY}
    epochs = [e for e in events if e.kind == common_pb2.EVENT_KIND_EPOCH]
    assert epochs and all("val_accuracy" in e.metrics for e in epochs)
    trials = [e for e in events if e.kind == common_pb2.EVENT_KIND_TRIAL_FINISHED]
    assert len(trials) >= 2
    # the two trials were taken from the work queue by the stack's two workers
    assert len({e.trial.worker for e in trials}) == 2
    assert events[-1].state == common_pb2.JOB_STATE_SUCCEEDED


def test_late_watcher_replays_from_the_start(gateway, digits_job):
    job, events, _ = digits_job
    replay = list(gateway.watch(job.job_id))
    assert [(e.seq, e.kind, e.message) for e in replay] == [(e.seq, e.kind, e.message) for e in events]


def _infer(endpoint: str, model: str, images: list[bytes]) -> tuple[list[str], np.ndarray, list[str]]:
    request = oip.ModelInferRequest(model_name=model)
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = "image", "BYTES"
    tensor.shape.append(len(images))
    request.raw_input_contents.append(encode_bytes_tensor(images))
    with grpc.insecure_channel(endpoint) as channel:
        response = oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)
    outputs = dict(zip([o.name for o in response.outputs], response.raw_output_contents, strict=True))
    shapes = {o.name: tuple(o.shape) for o in response.outputs}
    labels = [b.decode() for b in decode_bytes_tensor(outputs["label"])]
    scores = np.frombuffer(outputs["scores"], dtype="<f4").reshape(shapes["scores"])
    return labels, scores, json.loads(response.parameters["classes"].string_param)


def test_endpoint_answers_kept_back_images_as_rgb_jpeg_at_another_size(digits_job):
    job, _, kept_back = digits_job
    import io

    from PIL import Image

    images, truth = [], []
    for label, data in kept_back:
        image = Image.open(io.BytesIO(data))
        images.append(encode(image, "JPEG", "RGB", size=44))
        truth.append(label)
    labels, scores, classes = _infer(job.deployment.endpoint, job.deployment.model_name, images)
    accuracy = float(np.mean([p == t for p, t in zip(labels, truth, strict=True)]))
    assert accuracy >= 0.95, f"endpoint accuracy on re-encoded kept-back images: {accuracy:.4f}"
    assert scores.shape == (len(images), 10)
    assert classes == [str(d) for d in range(10)]
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-4)


def test_stock_tritonclient_reads_the_endpoint(digits_job, tmp_path):
    job, _, kept_back = digits_job
    files = []
    for i, (label, data) in enumerate(kept_back[:5]):
        path = tmp_path / f"{i}_{label}.png"
        path.write_bytes(data)
        files.append(path)
    # tritonclient and our generated inference protos clash in one process: run it in its own.
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "tools" / "oip_stock_client.py"), job.deployment.endpoint,
         job.deployment.model_name, *map(str, files)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["server_live"] and answer["server_ready"] and answer["model_ready"]
    assert answer["scores_shape"] == [len(files), 10] and answer["scores_dtype"] == "float32"
    assert [i["name"] for i in answer["metadata"]["inputs"]][:1] == ["image"]
    correct = sum(str(label) == path.name.split("_")[1].split(".")[0] for label, path in zip(answer["labels"], files, strict=True))
    assert correct >= 4


def test_deployment_is_listed_and_the_model_exports(gateway, digits_job, tmp_path):
    job, _, _ = digits_job
    names = {d.name: d for d in gateway.deployments()}
    assert job.deployment.name in names
    assert names[job.deployment.name].status == "ready"
    files = {p.name for p in gateway.download_model(job.job_id, tmp_path)}
    assert {"model.onnx", "bundle.json", "report.json"} <= files
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["pixels"]
    bundle = json.loads((tmp_path / "bundle.json").read_text())
    assert bundle["classes"] == [str(d) for d in range(10)]
