"""Measure the Model agent's planning figures (zoo.yaml) for text and table candidates on this host.

For each candidate: train it on a demo set through the worker's own trial runner (a short budget:
latency and size do not depend on how well it learnt), serve the bundle on a loopback endpoint and
time single requests from another process after warm-up, as deployments are timed. Prints one JSON
line per candidate: train_ms_per_example, endpoint p50/p95, bare ONNX latency, size.

    .venv/bin/python scripts/measure_zoo.py [--candidates ngram_bag,transformer_small,minilm,gbdt,mlp]

The figures in zoo.yaml come from runs of this script on the 2-core CPU development host.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import sys
import tarfile
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.data import demo, tables  # noqa: E402
from services.model import trials  # noqa: E402
from services.server.bench import benchmark_endpoint  # noqa: E402
from services.server.endpoint import Endpoint, find_free_port  # noqa: E402
from services.server.oip import InferenceServicer  # noqa: E402
from services.server.runtime import load_runtime  # noqa: E402
from traineragent.v1 import common_pb2, model_pb2  # noqa: E402

TEXT = ("ngram_bag", "transformer_small", "minilm")
TABLE = ("gbdt", "mlp")


def _artifact(kind: str, work: pathlib.Path) -> tuple[pathlib.Path, common_pb2.DataReport]:
    folder = work / f"{kind}-source"
    folder.mkdir()
    if kind == "text":
        demo.write_chat_topics_csv(folder / "chat-topics.csv")
        spec = common_pb2.TaskSpec(task_type=common_pb2.TASK_TYPE_TEXT_CLASSIFICATION)
        request = "classify chat messages by topic"
    else:
        demo.write_penguins_csv(folder / "penguins.csv")
        spec = common_pb2.TaskSpec(task_type=common_pb2.TASK_TYPE_TABULAR_CLASSIFICATION)
        request = "predict the penguin species"
    out = work / f"{kind}.parquet"
    return out, tables.prepare_table_files(folder, out, spec, request)


def measure(candidate: str, dataset: pathlib.Path, report: common_pb2.DataReport, work: pathlib.Path,
            budget_s: float, requests: int) -> dict:
    out = work / candidate
    spec = model_pb2.TrialSpec(trial_id=f"m-{candidate}", candidate=candidate, task_type=report.task_type,
                               max_epochs=3)
    started = time.time()
    result = trials.run_trial(spec, dataset, out, device="cpu", deadline_unix=started + budget_s)
    bundle_dir = out / "served"
    with tarfile.open(out / "bundle.tar") as tar:
        tar.extractall(bundle_dir, filter="data")
    runtime = load_runtime(bundle_dir)
    servicer = InferenceServicer()
    servicer.add_model(candidate, runtime)
    endpoint = Endpoint(servicer)
    port = endpoint.start("127.0.0.1", find_free_port("127.0.0.1", 29000))
    try:
        bench = asyncio.run(benchmark_endpoint(f"127.0.0.1:{port}", candidate, runtime.sample_inputs[0], bundle_dir,
                                               50, requests, 120.0))
    finally:
        endpoint.stop(1.0)
    n_train = report.split_sizes.train
    per_epoch_s = result.train_seconds / max(1, result.epochs)
    return {
        "candidate": candidate,
        "train_examples": n_train,
        "train_ms_per_example": round(1000 * per_epoch_s / max(1, n_train), 3),
        "endpoint_p50_ms": bench["latency_ms"]["p50"],
        "endpoint_p95_ms": bench["latency_ms"]["p95"],
        "bare_onnx_p50_ms": (bench.get("raw_onnx_latency_ms") or {}).get("p50"),
        "size_mb": result.model_size_mb,
        "validation": dict(result.validation_metrics),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", default=",".join(TEXT + TABLE))
    parser.add_argument("--budget-s", type=float, default=120.0, help="training seconds per candidate")
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args(argv)
    wanted = [c.strip() for c in args.candidates.split(",") if c.strip()]
    with tempfile.TemporaryDirectory(prefix="ta-zoo-") as tmp:
        work = pathlib.Path(tmp)
        artifacts = {}
        for name in wanted:
            kind = "text" if name in TEXT else "table"
            if kind not in artifacts:
                artifacts[kind] = _artifact(kind, work)
            dataset, report = artifacts[kind]
            print(json.dumps(measure(name, dataset, report, work, args.budget_s, args.requests)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
