"""The inference endpoint over real gRPC on loopback: our stubs, the stock tritonclient, and the benchmark.

The served model is the brightness classifier from ``services.server.testing_models``: a solid image
of grey level v is labelled ``brightness_label(v / 255, CLASSES)``, so every answer is checkable.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from inference import grpc_predict_v2_pb2 as pb
from inference import grpc_predict_v2_pb2_grpc as pb_grpc
from services.common.preprocessing import ImagePreprocessing
from services.server.bench import benchmark_endpoint, latency_stats
from services.server.endpoint import Endpoint, find_free_port
from services.server.oip import InferenceServicer
from services.server.runtime import ModelRuntime
from services.server.testing_models import brightness_label, make_test_bundle, solid_image

MODEL = "brightness"
CLASSES = ["black", "dark", "light", "white"]
SPEC = ImagePreprocessing(mode="RGB", height=16, width=16, mean=(0.5, 0.45, 0.4), std=(0.25, 0.2, 0.3))
MAX_BATCH = 8
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
STOCK_CLIENT = REPO_ROOT / "tests" / "tools" / "oip_stock_client.py"

# (encoded image, grey level its pixels have once decoded): different sizes, modes and formats.
IMAGES = [
    (solid_image(10, (20, 30), "L", "PNG"), 10),
    (solid_image((100, 100, 100), (64, 48), "RGB", "JPEG"), 100),
    (solid_image((170, 170, 170, 255), (7, 9), "RGBA", "PNG"), 170),
    (solid_image(240, (33, 5), "L", "JPEG"), 240),
    (solid_image((0, 0), (12, 12), "LA", "PNG"), 255),  # fully transparent: composed on white
]


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return make_test_bundle(tmp_path_factory.mktemp("bundle"), CLASSES, SPEC)


@pytest.fixture(scope="module")
def runtime(bundle_dir: pathlib.Path) -> ModelRuntime:
    return ModelRuntime.from_bundle_dir(bundle_dir)


@pytest.fixture(scope="module")
def address(runtime: ModelRuntime) -> Iterator[str]:
    servicer = InferenceServicer(max_batch=MAX_BATCH)
    servicer.add_model(MODEL, runtime)
    endpoint = Endpoint(servicer)
    port = endpoint.start("127.0.0.1", 0)
    yield f"127.0.0.1:{port}"
    endpoint.stop(0.5)


@pytest.fixture(scope="module")
def channel(address: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(address) as chan:
        grpc.channel_ready_future(chan).result(timeout=10)
        yield chan


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> pb_grpc.GRPCInferenceServiceStub:
    return pb_grpc.GRPCInferenceServiceStub(channel)


def image_request(images: list[bytes], model: str = MODEL) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, id="req-1")
    request.inputs.add(name="image", datatype="BYTES", shape=[len(images)])
    request.raw_input_contents.append(b"".join(len(i).to_bytes(4, "little") + i for i in images))
    return request


def pixels_request(x: np.ndarray, raw: bool = True) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=MODEL)
    tensor = request.inputs.add(name="pixels", datatype="FP32", shape=list(x.shape))
    if raw:
        request.raw_input_contents.append(x.astype("<f4").tobytes())
    else:
        tensor.contents.fp32_contents.extend(x.ravel().tolist())
    return request


def decode(response: pb.ModelInferResponse) -> tuple[list[str], np.ndarray | None]:
    """label and scores from raw_output_contents, in the order the response lists them."""
    labels: list[str] = []
    scores = None
    for tensor, raw in zip(response.outputs, response.raw_output_contents, strict=True):
        if tensor.name == "label":
            offset = 0
            while offset < len(raw):
                length = int.from_bytes(raw[offset:offset + 4], "little")
                labels.append(raw[offset + 4:offset + 4 + length].decode())
                offset += 4 + length
        else:
            scores = np.frombuffer(raw, "<f4").reshape(list(tensor.shape))
    return labels, scores


def expected_labels(levels: list[int]) -> list[str]:
    return [brightness_label(level / 255, CLASSES) for level in levels]


# --- (a) our own stubs -------------------------------------------------------------------------------


def test_health_reflection_and_server_calls(channel: grpc.Channel,
                                            stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "inference.GRPCInferenceService"):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    question = reflection_pb2.ServerReflectionRequest(list_services="")
    replies = reflection.ServerReflectionInfo(iter([question]), timeout=5)
    services = {s.name for reply in replies for s in reply.list_services_response.service}
    assert "inference.GRPCInferenceService" in services
    assert stub.ServerLive(pb.ServerLiveRequest(), timeout=5).live
    assert stub.ServerReady(pb.ServerReadyRequest(), timeout=5).ready
    meta = stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=5)
    assert meta.name == "traineragent" and meta.version and list(meta.extensions) == []


def test_model_ready_and_metadata(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    assert stub.ModelReady(pb.ModelReadyRequest(name=MODEL), timeout=5).ready
    assert not stub.ModelReady(pb.ModelReadyRequest(name="nope"), timeout=5).ready
    meta = stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL), timeout=5)
    assert (meta.name, meta.platform, list(meta.versions)) == (MODEL, "onnxruntime_onnx", ["1"])
    inputs = {t.name: (t.datatype, list(t.shape)) for t in meta.inputs}
    outputs = {t.name: (t.datatype, list(t.shape)) for t in meta.outputs}
    assert inputs == {"image": ("BYTES", [-1]), "pixels": ("FP32", [-1, 3, 16, 16])}
    assert outputs == {"label": ("BYTES", [-1]), "scores": ("FP32", [-1, len(CLASSES)])}
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelMetadata(pb.ModelMetadataRequest(name="nope"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND and MODEL in caught.value.details()


def test_infer_mixed_images(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    response = stub.ModelInfer(image_request([data for data, _ in IMAGES]), timeout=10)
    labels, scores = decode(response)
    assert labels == expected_labels([level for _, level in IMAGES])
    assert scores is not None and scores.shape == (len(IMAGES), len(CLASSES))
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)
    assert [CLASSES[i] for i in scores.argmax(axis=1)] == labels
    assert json.loads(response.parameters["classes"].string_param) == CLASSES
    assert (response.model_name, response.model_version, response.id) == (MODEL, "1", "req-1")


def test_infer_contents_and_requested_outputs(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    request = pb.ModelInferRequest(model_name=MODEL)
    tensor = request.inputs.add(name="image", datatype="BYTES", shape=[2])
    tensor.contents.bytes_contents.extend([IMAGES[0][0], IMAGES[3][0]])
    request.outputs.add(name="label")
    response = stub.ModelInfer(request, timeout=10)
    assert [t.name for t in response.outputs] == ["label"]
    assert decode(response)[0] == expected_labels([10, 240])


@pytest.mark.parametrize("raw", [True, False])
def test_infer_pixels_matches_images(stub: pb_grpc.GRPCInferenceServiceStub, runtime: ModelRuntime,
                                     raw: bool) -> None:
    images = [data for data, _ in IMAGES[:3]]
    x = runtime.preprocess(images)
    by_pixels = decode(stub.ModelInfer(pixels_request(x, raw=raw), timeout=10))
    by_images = decode(stub.ModelInfer(image_request(images), timeout=10))
    assert by_pixels[0] == by_images[0] == expected_labels([10, 100, 170])
    np.testing.assert_allclose(by_pixels[1], by_images[1], rtol=1e-5, atol=1e-6)


def _bad_requests() -> list[tuple[str, pb.ModelInferRequest, grpc.StatusCode, str]]:
    good = IMAGES[0][0]
    cases: list[tuple[str, pb.ModelInferRequest, grpc.StatusCode, str]] = []
    cases.append(("unknown model", image_request([good], model="nope"), grpc.StatusCode.NOT_FOUND, MODEL))
    cases.append(("no inputs", pb.ModelInferRequest(model_name=MODEL), grpc.StatusCode.INVALID_ARGUMENT,
                  "'image'"))
    unknown = image_request([good])
    unknown.inputs[0].name = "picture"
    cases.append(("unknown input", unknown, grpc.StatusCode.INVALID_ARGUMENT, "'picture'"))
    wrong_type = image_request([good])
    wrong_type.inputs[0].datatype = "FP32"
    cases.append(("wrong datatype", wrong_type, grpc.StatusCode.INVALID_ARGUMENT, "BYTES"))
    mismatch = image_request([good, good])
    mismatch.inputs[0].shape[:] = [3]
    cases.append(("shape mismatch", mismatch, grpc.StatusCode.INVALID_ARGUMENT, "3"))
    cases.append(("undecodable", image_request([good, b"\x89PNG not really"]),
                  grpc.StatusCode.INVALID_ARGUMENT, "element 1 is not a decodable image"))
    cases.append(("too many", image_request([good] * (MAX_BATCH + 1)), grpc.StatusCode.INVALID_ARGUMENT,
                  f"at most {MAX_BATCH}"))
    truncated = image_request([good])
    truncated.raw_input_contents[0] = truncated.raw_input_contents[0][:-5]
    cases.append(("truncated raw", truncated, grpc.StatusCode.INVALID_ARGUMENT, "malformed"))
    cases.append(("pixels shape", pixels_request(np.zeros((1, 3, 8, 8), np.float32)),
                  grpc.StatusCode.INVALID_ARGUMENT, "[N, 3, 16, 16]"))
    short = pixels_request(np.zeros((1, 3, 16, 16), np.float32))
    short.raw_input_contents[0] = short.raw_input_contents[0][:100]
    cases.append(("pixels bytes", short, grpc.StatusCode.INVALID_ARGUMENT, "raw bytes"))
    bad_output = image_request([good])
    bad_output.outputs.add(name="probabilities")
    cases.append(("unknown output", bad_output, grpc.StatusCode.INVALID_ARGUMENT, "'probabilities'"))
    return cases


@pytest.mark.parametrize("case", _bad_requests(), ids=lambda case: case[0])
def test_bad_requests_are_refused_and_server_keeps_serving(
        stub: pb_grpc.GRPCInferenceServiceStub,
        case: tuple[str, pb.ModelInferRequest, grpc.StatusCode, str]) -> None:
    _, request, code, fragment = case
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, timeout=10)
    assert caught.value.code() == code, caught.value.details()
    assert fragment in caught.value.details()
    assert decode(stub.ModelInfer(image_request([IMAGES[1][0]]), timeout=10))[0] == expected_labels([100])


def test_find_free_port_skips_a_bound_port(address: str) -> None:
    taken = int(address.rsplit(":", 1)[1])
    assert find_free_port("127.0.0.1", taken, attempts=5) != taken


# --- (b) the stock tritonclient, in its own process ------------------------------------------------------


def test_stock_tritonclient(address: str, tmp_path: pathlib.Path) -> None:
    paths = []
    for index, (data, _) in enumerate(IMAGES):
        path = tmp_path / f"image{index}"
        path.write_bytes(data)
        paths.append(str(path))
    completed = subprocess.run([sys.executable, str(STOCK_CLIENT), address, MODEL, *paths],
                               capture_output=True, text=True, timeout=60, check=False)
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert report["server_live"] and report["server_ready"] and report["model_ready"]
    assert report["metadata"]["platform"] == "onnxruntime_onnx"
    assert report["labels"] == expected_labels([level for _, level in IMAGES])
    assert report["scores_shape"] == [len(IMAGES), len(CLASSES)] and report["scores_dtype"] == "float32"
    assert json.loads(report["parameters"]["classes"]["string_param"]) == CLASSES


# --- (c) the benchmark ------------------------------------------------------------------------------------


def test_latency_stats() -> None:
    stats = latency_stats([1.0, 2.0, 3.0, 4.0], wall_s=0.01)
    assert stats["p50"] == 2.5 and stats["mean"] == 2.5 and stats["requests"] == 4
    assert stats["throughput_rps"] == 400.0
    with pytest.raises(ValueError):
        latency_stats([])


async def test_benchmark_endpoint(address: str, bundle_dir: pathlib.Path) -> None:
    result = await benchmark_endpoint(address, MODEL, IMAGES[1][0], bundle_dir, 5, 40, 60.0)
    keys = {"p50", "p95", "p99", "mean", "requests", "throughput_rps"}
    for name in ("latency_ms", "raw_onnx_latency_ms"):
        stats = result[name]
        assert set(stats) == keys
        assert 0 < stats["p50"] <= stats["p95"] <= stats["p99"]
        assert stats["requests"] == 40 and stats["throughput_rps"] > 0
    print("bench", json.dumps(result))


async def test_benchmark_reports_the_servers_error(address: str) -> None:
    with pytest.raises(RuntimeError, match="NOT_FOUND"):
        await benchmark_endpoint(address, "nope", IMAGES[1][0], None, 1, 2, 30.0)
