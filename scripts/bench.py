"""make bench — the digits job end to end on a fresh embedded stack, with the figures the notes report.

Prints wall time of each stage and of the whole job, test accuracy, the endpoint's latency
(p50/p95/p99, single requests from another process after warm-up), and the bare onnxruntime
latency of the same model on the same input (the serving overhead is the difference). Writes the
same figures as JSON to bench-results.json. Timings vary with the machine: they belong here, not
in tests.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cli.client import GatewayClient  # noqa: E402
from cli.launcher import DEFAULT_PORTS, Stack, free_port  # noqa: E402
from services.data.demo import write_digits_folder  # noqa: E402
from traineragent.v1 import common_pb2  # noqa: E402

REQUEST = "Recognise handwritten digits, at least 97% accuracy, under 5 ms per image"


def main() -> int:
    state = pathlib.Path(tempfile.mkdtemp(prefix="ta-bench-"))
    data = state / "digits"
    write_digits_folder(data)
    ports = {name: free_port() for name in DEFAULT_PORTS}
    ports["endpoints"] = 40100
    stack = Stack(state_dir=state, ports=ports)
    t0 = time.monotonic()
    stack.start()
    startup_s = time.monotonic() - t0
    try:
        client = GatewayClient(stack.gateway)
        t1 = time.monotonic()
        upload = client.upload(data)
        upload_s = time.monotonic() - t1
        job = client.submit(REQUEST, common_pb2.DatasetRef(upload_id=upload.upload_id))
        for event in client.watch(job.job_id):
            if event.kind == common_pb2.EVENT_KIND_STATE_CHANGED and event.state in (4, 5, 6, 7):
                break
        job_s = time.monotonic() - t1
        job = client.get_job(job.job_id)
        dep = job.deployment
        figures = {
            "state": common_pb2.JobState.Name(job.state),
            "stack_startup_s": round(startup_s, 2),
            "upload_s": round(upload_s, 2),
            "job_wall_s": round(job_s, 2),
            "stage_seconds": dict(job.stage_seconds),
            "chosen": job.model_report.candidate,
            "device": job.model_report.leaderboard[0].device if job.model_report.leaderboard else None,
            "test_accuracy": job.model_report.test_metrics.get("accuracy"),
            "endpoint_latency_ms": {"p50": dep.latency_ms.p50, "p95": dep.latency_ms.p95, "p99": dep.latency_ms.p99,
                                    "throughput_rps": dep.latency_ms.throughput_rps},
            "raw_onnx_latency_ms": {"p50": dep.raw_onnx_latency_ms.p50, "p95": dep.raw_onnx_latency_ms.p95},
            "serving_overhead_p50_ms": round(dep.latency_ms.p50 - dep.raw_onnx_latency_ms.p50, 4),
            "targets_met": job.targets_met,
            "trials": [{"candidate": t.candidate, "val_accuracy": t.validation_metrics.get("accuracy"),
                        "epochs": t.epochs, "train_s": t.train_seconds, "params": t.num_parameters}
                       for t in job.model_report.leaderboard],
        }
        print(json.dumps(figures, indent=2))
        (ROOT / "bench-results.json").write_text(json.dumps(figures, indent=2))
        client.close()
        return 0 if job.state == common_pb2.JOB_STATE_SUCCEEDED else 1
    finally:
        stack.stop()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
