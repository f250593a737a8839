"""Latency benchmark of an inference endpoint, as a client in its own process.

The latency a target speaks of is the endpoint's p95 for single requests after warm-up, seen by a
client in another process (DESIGN.md, Targets): an in-process client would share the GIL with the
server and measure something else. Run as::

    python -m services.server.bench --endpoint HOST:PORT --model NAME --input IMAGE_FILE [--bundle-dir DIR]
    python -m services.server.bench --endpoint HOST:PORT --model NAME --sample-json FILE [--bundle-dir DIR]

where the JSON file is ``{"text": "..."}`` (a text model) or ``{"row": {"column": value, ...}}`` (a
table model; the column datatypes come from the endpoint's ModelMetadata, as any client would learn
them). It prints one JSON object: ``latency_ms`` through the endpoint and, with ``--bundle-dir``,
``raw_onnx_latency_ms`` of the bare session on the same input, prepared as the endpoint prepares it
(the floor to compare with).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import pathlib
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc
import numpy as np

from inference import grpc_predict_v2_pb2 as pb
from inference import grpc_predict_v2_pb2_grpc as pb_grpc
from services.server.runtime import DEFAULT_INTRA_OP_THREADS, load_runtime

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
STDERR_TAIL = 4000

# One sample input as a client sends it: encoded image bytes, a text, or a table row by column name.
Sample = bytes | str | Mapping[str, Any]


def latency_stats(samples_ms: Sequence[float], wall_s: float | None = None) -> dict[str, float | int]:
    """p50/p95/p99/mean of the samples; throughput over ``wall_s`` (default: the samples' sum)."""
    if not samples_ms:
        raise ValueError("latency_stats needs at least one sample")
    values = np.asarray(samples_ms, dtype=np.float64)
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    total_s = wall_s if wall_s is not None else float(values.sum()) / 1000.0
    return {
        "p50": round(float(p50), 4),
        "p95": round(float(p95), 4),
        "p99": round(float(p99), 4),
        "mean": round(float(values.mean()), 4),
        "requests": len(values),
        "throughput_rps": round(len(values) / total_s, 2) if total_s > 0 else 0.0,
    }


def time_calls(call: Callable[[], object], warmup: int, requests: int) -> dict[str, float | int]:
    """Call ``call`` ``warmup`` times untimed, then ``requests`` times one after another, timed."""
    for _ in range(warmup):
        call()
    samples: list[float] = []
    started = time.perf_counter()
    for _ in range(requests):
        begin = time.perf_counter()
        call()
        samples.append((time.perf_counter() - begin) * 1000.0)
    return latency_stats(samples, wall_s=time.perf_counter() - started)


def image_request(model: str, image: bytes) -> pb.ModelInferRequest:
    """One single-image ModelInfer request as tritonclient sends it (BYTES in raw_input_contents)."""
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="image", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(len(image).to_bytes(4, "little") + image)
    return request


def _bytes_tensor(items: Sequence[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def text_request(model: str, texts: Sequence[str]) -> pb.ModelInferRequest:
    """One ModelInfer request with raw strings as ``text`` BYTES [N]."""
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="text", datatype="BYTES", shape=[len(texts)])
    request.raw_input_contents.append(_bytes_tensor([t.encode("utf-8") for t in texts]))
    return request


def row_request(model: str, rows: Sequence[Mapping[str, Any]], datatypes: Mapping[str, str]) -> pb.ModelInferRequest:
    """One ModelInfer request with table rows as one input per column (``datatypes``: the endpoint's
    metadata, column -> FP32 | BYTES); a missing value (None, absent) is NaN or an empty string."""
    request = pb.ModelInferRequest(model_name=model)
    for name, datatype in datatypes.items():
        values = [row.get(name) for row in rows]
        request.inputs.add(name=name, datatype=datatype, shape=[len(rows)])
        if datatype == "BYTES":
            request.raw_input_contents.append(_bytes_tensor([_category(v).encode("utf-8") for v in values]))
        else:
            numbers = np.asarray([math.nan if v is None or v == "" else float(v) for v in values], dtype="<f4")
            request.raw_input_contents.append(numbers.tobytes())
    return request


def _category(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def input_datatypes(stub: pb_grpc.GRPCInferenceServiceStub, model: str, timeout_s: float) -> dict[str, str]:
    """The model's inputs and their datatypes, from ModelMetadata."""
    metadata = stub.ModelMetadata(pb.ModelMetadataRequest(name=model), timeout=timeout_s)
    return {t.name: t.datatype for t in metadata.inputs}


def sample_request(stub: pb_grpc.GRPCInferenceServiceStub, model: str, sample: Sample,
                   timeout_s: float) -> pb.ModelInferRequest:
    """The single request a client sends for ``sample`` (a row's column types asked of the endpoint)."""
    if isinstance(sample, bytes | bytearray):
        return image_request(model, bytes(sample))
    if isinstance(sample, str):
        return text_request(model, [sample])
    return row_request(model, [sample], input_datatypes(stub, model, timeout_s))


def endpoint_latency(endpoint: str, model: str, sample: Sample, warmup: int, requests: int,
                     timeout_s: float) -> dict[str, float | int]:
    """Time single-input ModelInfer calls (one image, one text or one row) through ``endpoint`` on one channel."""
    with grpc.insecure_channel(endpoint) as channel:
        grpc.channel_ready_future(channel).result(timeout=timeout_s)
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        call_timeout = max(1.0, timeout_s)
        request = sample_request(stub, model, sample, call_timeout)
        stub.ModelInfer(request, timeout=call_timeout)  # fails fast, with the server's message, if wrong
        return time_calls(lambda: stub.ModelInfer(request, timeout=call_timeout), warmup, requests)


def raw_onnx_latency(bundle_dir: str | pathlib.Path, sample: Sample, warmup: int, requests: int,
                     intra_op_threads: int = DEFAULT_INTRA_OP_THREADS) -> dict[str, float | int]:
    """Time the bare session.run on the sample prepared as the endpoint prepares it, with its session options."""
    runtime = load_runtime(bundle_dir, intra_op_threads=intra_op_threads)
    feeds = runtime.prepare(sample)
    return time_calls(lambda: runtime.raw_run(feeds), warmup, requests)


def run_benchmark(endpoint: str, model: str, sample: Sample, bundle_dir: str | pathlib.Path | None = None,
                  warmup: int = 30, requests: int = 300, timeout_s: float = 30.0,
                  intra_op_threads: int = DEFAULT_INTRA_OP_THREADS) -> dict[str, Any]:
    """Both measurements as the JSON-ready dict this module prints."""
    if requests < 1:
        raise ValueError("requests must be at least 1")
    latency = endpoint_latency(endpoint, model, sample, warmup, requests, timeout_s)
    raw = None
    if bundle_dir is not None:
        raw = raw_onnx_latency(bundle_dir, sample, warmup, requests, intra_op_threads)
    return {"latency_ms": latency, "raw_onnx_latency_ms": raw}


async def benchmark_endpoint(endpoint: str, model: str, sample: Sample,
                             bundle_dir: str | pathlib.Path | None, warmup: int, requests: int,
                             timeout_s: float) -> dict[str, Any]:
    """Run this module in a subprocess against ``endpoint`` with ``sample`` (encoded image bytes, a
    text, or a table row by column name) and return its JSON.

    Raises RuntimeError (with the child's stderr) when it fails or runs past ``timeout_s``.
    """
    with tempfile.TemporaryDirectory(prefix="ta-bench-") as scratch:
        if isinstance(sample, bytes | bytearray):
            input_path = pathlib.Path(scratch) / "input.bin"
            input_path.write_bytes(bytes(sample))
            input_args = ["--input", str(input_path)]
        else:
            input_path = pathlib.Path(scratch) / "sample.json"
            payload = {"text": sample} if isinstance(sample, str) else {"row": dict(sample)}
            input_path.write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")
            input_args = ["--sample-json", str(input_path)]
        argv = ["-m", "services.server.bench", "--endpoint", endpoint, "--model", model,
                *input_args, "--warmup", str(warmup), "--requests", str(requests),
                "--timeout", str(timeout_s)]
        if bundle_dir is not None:
            argv += ["--bundle-dir", str(bundle_dir)]
        stdout, stderr, code = await _run_child(argv, timeout_s)
    if code != 0:
        raise RuntimeError(f"the latency benchmark failed (exit {code}): {_tail(stderr)}")
    try:
        return json.loads(stdout)
    except ValueError as exc:
        raise RuntimeError(f"the latency benchmark printed no JSON: {_tail(stdout)} {_tail(stderr)}") from exc


async def _run_child(argv: list[str], timeout_s: float) -> tuple[str, str, int]:
    env = dict(os.environ)
    # The child imports this package from the same checkout, whatever the parent's working directory.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    process = await asyncio.create_subprocess_exec(
        sys.executable, *argv, env=env, cwd=str(REPO_ROOT),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        _, stderr = await process.communicate()
        detail = _tail(stderr.decode(errors="replace"))
        raise RuntimeError(f"the latency benchmark ran past {timeout_s:g} s: {detail}") from None
    return stdout.decode(errors="replace"), stderr.decode(errors="replace"), process.returncode or 0


def _tail(text: str) -> str:
    text = text.strip()
    return text[-STDERR_TAIL:] if text else "(no output)"


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m services.server.bench",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True, help="HOST:PORT of the OIP v2 gRPC endpoint")
    parser.add_argument("--model", required=True, help="model name served there")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", type=pathlib.Path, help="an encoded image file to send")
    source.add_argument("--sample-json", type=pathlib.Path,
                        help='a JSON file {"text": "..."} or {"row": {"column": value, ...}} to send')
    parser.add_argument("--bundle-dir", type=pathlib.Path,
                        help="extracted bundle, to time the bare ONNX session")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds to wait for the endpoint, and per call")
    parser.add_argument("--intra-op-threads", type=int, default=DEFAULT_INTRA_OP_THREADS)
    return parser.parse_args(argv)


def _read_sample(path: pathlib.Path) -> Sample:
    payload = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(payload, dict) and isinstance(payload.get("text"), str):
        return payload["text"]
    if isinstance(payload, dict) and isinstance(payload.get("row"), dict):
        return payload["row"]
    raise ValueError(f'{path} holds neither {{"text": "..."}} nor {{"row": {{...}}}}')


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        sample = args.input.read_bytes() if args.input is not None else _read_sample(args.sample_json)
        result = run_benchmark(args.endpoint, args.model, sample, args.bundle_dir,
                               args.warmup, args.requests, args.timeout, args.intra_op_threads)
    except grpc.RpcError as exc:
        print(f"endpoint {args.endpoint} answered {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    except grpc.FutureTimeoutError:
        print(f"endpoint {args.endpoint} did not become reachable within {args.timeout:g} s", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the parent reads stderr; say what went wrong in one line
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
