"""Run real trials through a real training worker process and print what it reports.

Starts nats-server, stores the digits dataset artifact, records a job, queues one trial per image
candidate on the JetStream work queue, starts `python -m services.model.worker` and prints each
trial_finished event (device, epochs, accuracies, time). Used to check the worker's CUDA path on a
GPU host (it picks CUDA when torch sees a GPU) and its CPU path anywhere else.

    python scripts/worker_check.py [--epochs 8] [--budget-s 120]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cli.launcher import free_port, nats_server_binary, port_open  # noqa: E402
from services.common.artifacts import NatsArtifactStore  # noqa: E402
from services.common.bus import Bus, new_id  # noqa: E402
from services.data.demo import write_digits_folder  # noqa: E402
from services.data.images import prepare_image_folder  # noqa: E402
from services.model import zoo  # noqa: E402
from traineragent.v1 import common_pb2, model_pb2  # noqa: E402


async def check(epochs: int, budget_s: float) -> list[dict]:
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="worker-check-"))
    port = free_port()
    argv = [nats_server_binary(), "-js", "-sd", str(tmp / "nats"), "-a", "127.0.0.1", "-p", str(port)]
    nats = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: ASYNC220
    worker = None
    try:
        while not port_open(port):
            time.sleep(0.1)
        bus = await Bus.connect(f"nats://127.0.0.1:{port}", name="worker-check")
        store = NatsArtifactStore(bus.js)
        write_digits_folder(tmp / "digits")
        report = prepare_image_folder(tmp / "digits", tmp / "digits.parquet")
        dataset = await store.put_file(tmp / "digits.parquet")
        job = common_pb2.Job(job_id=new_id(), state=common_pb2.JOB_STATE_RUNNING, request="worker check")
        await bus.create_job(job)
        trials = []
        for candidate in zoo.candidates_for("image_classification"):
            trial = model_pb2.TrialSpec(
                job_id=job.job_id, trial_id=f"check-{candidate.name}", operation_id="check", candidate=candidate.name,
                hyperparameters_json=json.dumps(candidate.default_hyperparameters), dataset_artifact=dataset,
                classes=list(report.classes), preprocessing_json=report.preprocessing_json,
                deadline_unix=time.time() + budget_s * 4, max_epochs=epochs,
                task_type=common_pb2.TASK_TYPE_IMAGE_CLASSIFICATION, selection_metric="accuracy", budget_seconds=budget_s)
            await bus.enqueue_trial(trial, trial.trial_id)
            trials.append(trial.trial_id)
        env = dict(os.environ, TRAINERAGENT_NATS_URL=f"nats://127.0.0.1:{port}",
                   TRAINERAGENT_WORK_DIR=str(tmp / "work"), PYTHONPATH=str(ROOT), TRAINERAGENT_LOG_FORMAT="json")
        worker = subprocess.Popen([sys.executable, "-m", "services.model.worker"], env=env, cwd=ROOT)  # noqa: ASYNC220
        results = []
        async for event in bus.event_history(job.job_id, idle_timeout_s=budget_s * 4):
            if event.kind == common_pb2.EVENT_KIND_EPOCH:
                print(event.message, flush=True)
            if event.kind == common_pb2.EVENT_KIND_TRIAL_FINISHED:
                t = event.trial
                results.append({"trial": t.trial_id, "device": t.device, "error": t.error, "epochs": t.epochs,
                                "stop_reason": t.stop_reason, "train_seconds": t.train_seconds,
                                "validation_accuracy": t.validation_metrics.get("accuracy"),
                                "test_accuracy": t.test_metrics.get("accuracy"),
                                "parity_max_abs_diff": t.parity_max_abs_diff, "onnx_latency_ms": t.onnx_latency_ms,
                                "params": t.num_parameters})
                if len(results) == len(trials):
                    break
        await bus.close()
        return results
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=30)
        nats.terminate()
        nats.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--budget-s", type=float, default=120.0)
    args = parser.parse_args()
    results = asyncio.run(check(args.epochs, args.budget_s))
    print(json.dumps(results, indent=2))
    return 0 if results and all(not r["error"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
