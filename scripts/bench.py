"""make bench — demo jobs end to end on a fresh embedded stack, with the figures the notes report.

`make bench` runs the digits job; `scripts/bench.py --jobs all` also the chat-topics text job and the
penguins species and body-mass table jobs, each beside its plain scikit-learn baseline (TF-IDF +
logistic regression, HistGradientBoosting) trained and scored on the job's own split, and the Task
agent's brain alone on 100 labelled requests (``--jobs plan``: no stack; phrase rules only and as shipped).
Prints wall time of each stage and of the whole job, test metrics, the endpoint's latency
(p50/p95/p99, single requests from another process after warm-up), and the bare onnxruntime
latency of the same model on the same input (the serving overhead is the difference). Writes the
same figures as JSON to bench-results.json. Timings vary with the machine: they belong here, not
in tests.
"""

from __future__ import annotations

import argparse
import asyncio
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
from services.common.artifacts import NatsArtifactStore  # noqa: E402
from services.common.bus import Bus  # noqa: E402
from services.common.table_dataset import load_table_dataset  # noqa: E402
from services.common.text_dataset import load_text_dataset  # noqa: E402
from services.data.demo import write_chat_topics_csv, write_digits_folder, write_penguins_csv  # noqa: E402
from services.model import baselines  # noqa: E402
from traineragent.v1 import common_pb2  # noqa: E402

JOBS = {
    "digits": ("Recognise handwritten digits, at least 97% accuracy, under 5 ms per image", "digits"),
    "text": ("Classify chat messages by topic, at least 85% accuracy", "chat-topics.csv"),
    "species": ("Predict the penguin species from its measurements", "penguins.csv"),
    "body_mass": ("Predict a penguin's body mass in grams, MAE under 300", "penguins.csv"),
}


def _write_data(state: pathlib.Path) -> None:
    write_digits_folder(state / "digits")
    write_chat_topics_csv(state / "chat-topics.csv")
    write_penguins_csv(state / "penguins.csv")


def _baseline(stack: Stack, job: common_pb2.Job, scratch: pathlib.Path) -> dict | None:
    """The plain scikit-learn baseline on the job's own split (text and tables)."""
    task = job.data_report.task_type
    if task not in (common_pb2.TASK_TYPE_TEXT_CLASSIFICATION, common_pb2.TASK_TYPE_TABULAR_CLASSIFICATION,
                    common_pb2.TASK_TYPE_TABULAR_REGRESSION):
        return None

    async def fetch() -> pathlib.Path:
        bus = await Bus.connect(f"nats://127.0.0.1:{stack.ports['nats']}", name="bench")
        try:
            return await NatsArtifactStore(bus.js).get_to_file(job.data_report.dataset_artifact,
                                                              scratch / f"{job.job_id}.parquet")
        finally:
            await bus.close()

    path = asyncio.run(fetch())
    if task == common_pb2.TASK_TYPE_TEXT_CLASSIFICATION:
        return {"tfidf_logreg_test_accuracy": round(baselines.tfidf_accuracy(load_text_dataset(path)), 4)}
    splits = load_table_dataset(path)
    name = "hgb_test_accuracy" if splits.spec.task == "classification" else "hgb_test_mae"
    return {name: round(baselines.hgb_score(splits), 4)}


def _run_job(client: GatewayClient, stack: Stack, request: str, data: pathlib.Path, scratch: pathlib.Path) -> dict:
    t1 = time.monotonic()
    upload = client.upload(data)
    upload_s = time.monotonic() - t1
    job = client.submit(request, common_pb2.DatasetRef(upload_id=upload.upload_id))
    for event in client.watch(job.job_id):
        if event.kind == common_pb2.EVENT_KIND_STATE_CHANGED and event.state in (4, 5, 6, 7):
            break
    job_s = time.monotonic() - t1
    job = client.get_job(job.job_id)
    dep = job.deployment
    return {
        "request": request,
        "state": common_pb2.JobState.Name(job.state),
        "upload_s": round(upload_s, 2),
        "job_wall_s": round(job_s, 2),
        "stage_seconds": dict(job.stage_seconds),
        "chosen": job.model_report.candidate,
        "device": job.model_report.leaderboard[0].device if job.model_report.leaderboard else None,
        "test_metrics": {k: round(v, 4) for k, v in job.model_report.test_metrics.items()},
        "baseline": _baseline(stack, job, scratch),
        "endpoint_latency_ms": {"p50": dep.latency_ms.p50, "p95": dep.latency_ms.p95, "p99": dep.latency_ms.p99,
                                "throughput_rps": dep.latency_ms.throughput_rps},
        "raw_onnx_latency_ms": {"p50": dep.raw_onnx_latency_ms.p50, "p95": dep.raw_onnx_latency_ms.p95},
        "serving_overhead_p50_ms": round(dep.latency_ms.p50 - dep.raw_onnx_latency_ms.p50, 4),
        "targets_met": job.targets_met,
        "trials": [{"candidate": t.candidate, "validation": {k: round(v, 4) for k, v in t.validation_metrics.items()},
                    "epochs": t.epochs, "train_s": t.train_seconds, "params": t.num_parameters}
                   for t in job.model_report.leaderboard],
    }


def plan_figures(count: int = 100) -> dict:
    """The Task agent's brain alone (no stack): ``count`` labelled requests, half English, half Chinese,
    read with the phrase rules only and with the shipped brain (semantic review, head, task reader)."""
    import os
    import statistics

    from services.task import semantic_review, task_reader
    from services.task.evaluation import TASK_SETS, load_set, plan_with_rules

    set_dir = ROOT / "tests" / "task_eval"
    items = [item for name in TASK_SETS for item in load_set(set_dir / f"{name}.jsonl")]
    texts = ([i["text"] for i in items if i["lang"] == "en"][: count // 2]
             + [i["text"] for i in items if i["lang"] == "zh"][: count - count // 2])
    figures: dict = {"requests": len(texts)}
    saved = {key: os.environ.get(key) for key in (semantic_review.ENV_SWITCH, task_reader.ENV_SWITCH)}
    try:
        for mode, switch in (("rules_only", "0"), ("shipped", "1")):
            os.environ[semantic_review.ENV_SWITCH] = os.environ[task_reader.ENV_SWITCH] = switch
            started = time.perf_counter()
            plan_with_rules(texts[0])  # the first request loads what the brain needs (the encoder)
            first_s = time.perf_counter() - started
            each = []
            for text in texts[1:]:
                t = time.perf_counter()
                plan_with_rules(text)
                each.append((time.perf_counter() - t) * 1000)
            figures[mode] = {"first_request_s": round(first_s, 3), "total_s": round(time.perf_counter() - started, 3),
                             "p50_ms": round(statistics.median(each), 2),
                             "p95_ms": round(statistics.quantiles(each, n=20)[-1], 2)}
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", default="digits", help=f"comma-separated, of {', '.join(JOBS)} (or 'all')")
    args = parser.parse_args(argv)
    names = [*JOBS, "plan"] if args.jobs == "all" else [n.strip() for n in args.jobs.split(",") if n.strip()]
    unknown = [n for n in names if n not in JOBS and n != "plan"]
    if unknown:
        parser.error(f"unknown jobs {unknown}; choose from {', '.join(JOBS)}, plan")
    figures: dict = {}
    if "plan" in names:  # the Task agent's brain alone, before any stack starts
        names.remove("plan")
        figures["plan"] = plan_figures()
        print(json.dumps({"plan": figures["plan"]}, indent=2), flush=True)
    if not names:
        (ROOT / "bench-results.json").write_text(json.dumps(figures, indent=2))
        return 0
    state = pathlib.Path(tempfile.mkdtemp(prefix="ta-bench-"))
    _write_data(state)
    ports = {name: free_port() for name in DEFAULT_PORTS}
    ports["endpoints"] = 40100
    stack = Stack(state_dir=state, ports=ports)
    t0 = time.monotonic()
    stack.start()
    startup_s = time.monotonic() - t0
    try:
        client = GatewayClient(stack.gateway)
        figures["stack_startup_s"] = round(startup_s, 2)
        for name in names:
            request, data = JOBS[name]
            figures[name] = _run_job(client, stack, request, state / data, state)
            print(json.dumps({name: figures[name]}, indent=2), flush=True)
        (ROOT / "bench-results.json").write_text(json.dumps(figures, indent=2))
        client.close()
        return 0 if all(figures[n]["state"] == "SUCCEEDED" for n in names) else 1
    finally:
        stack.stop()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
