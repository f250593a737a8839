"""The Open Inference Protocol v2 servicer: Triton's messages in, our runtimes behind them.

Inputs arrive exactly as stock clients send them: in ``raw_input_contents`` (tritonclient's default;
BYTES elements each prefixed by a 4-byte little-endian length, numbers as little-endian raw) or in
``contents``. Outputs go back in ``raw_output_contents`` like Triton's. Image models take ``image``
(or ``pixels``), text models ``text``, table models one input per feature column; classifiers answer
``label`` and ``scores`` (and the ``classes`` parameter), regressors ``prediction``. This is the
latency path: nothing here logs per request or parses JSON per request, and the registry is read
without a lock.
"""

from __future__ import annotations

import dataclasses
import json
import struct
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

import grpc
import numpy as np

from inference import grpc_predict_v2_pb2 as pb
from inference import grpc_predict_v2_pb2_grpc as pb_grpc
from services.common.errors import INTERNAL_MESSAGE, InvalidArgument, NotFound, TrainerAgentError
from services.common.logging import get_logger
from services.server.runtime import Decoded, ImageBatchError, Prediction, Runtime

log = get_logger(__name__)

SERVER_NAME = "traineragent"
SERVER_VERSION = "0.1.0"
PLATFORM = "onnxruntime_onnx"
MODEL_VERSION = "1"
DEFAULT_MAX_BATCH = 256
OUTPUT_NAMES = ("label", "scores")  # a classifier's outputs
_LENGTH = struct.Struct("<I")
# Numeric datatypes a non-image input may arrive in: the raw layout and the contents field holding them.
_NUMERIC = {"FP32": ("<f4", "fp32_contents"), "FP64": ("<f8", "fp64_contents"),
            "INT32": ("<i4", "int_contents"), "INT64": ("<i8", "int64_contents")}

Response = TypeVar("Response")


@dataclasses.dataclass(frozen=True)
class _Served:
    """A runtime plus what every response about it repeats, computed once when it is added."""

    runtime: Runtime
    kind: str  # image | text | table
    classes_parameter: pb.InferParameter | None  # None for a regressor
    encoded_labels: tuple[bytes, ...]  # length-prefixed class names, ready to join
    label_index: dict[str, int]
    metadata: pb.ModelMetadataResponse
    pixels_shape: tuple[int, int, int]  # image models only
    input_types: dict[str, tuple[str, ...]]  # input name -> datatypes it accepts
    output_names: tuple[str, ...]
    expected_inputs: str  # "send ..." for error messages
    expected_outputs: str


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """OIP v2 over a thread-safe name -> :class:`ModelRuntime` registry (synchronous gRPC)."""

    def __init__(self, max_batch: int = DEFAULT_MAX_BATCH, server_version: str = SERVER_VERSION) -> None:
        self.max_batch = int(max_batch)
        self.server_version = server_version
        self._lock = threading.Lock()
        # Copy-on-write: writers swap in a new dict under the lock, readers take whatever is there.
        self._models: dict[str, _Served] = {}

    # --- registry ---------------------------------------------------------------------------------

    def add_model(self, name: str, runtime: Runtime) -> None:
        """Serve ``runtime`` as ``name`` (replacing whatever served that name)."""
        served = _describe(name, runtime)
        with self._lock:
            self._models = {**self._models, name: served}

    def remove_model(self, name: str) -> bool:
        """Stop serving ``name``; False when it was not served."""
        with self._lock:
            if name not in self._models:
                return False
            self._models = {k: v for k, v in self._models.items() if k != name}
            return True

    def model_names(self) -> list[str]:
        return sorted(self._models)

    def get_runtime(self, name: str) -> Runtime | None:
        served = self._models.get(name)
        return served.runtime if served else None

    # --- health and metadata -------------------------------------------------------------------------

    def ServerLive(self, request: pb.ServerLiveRequest,
                   context: grpc.ServicerContext) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: pb.ServerReadyRequest,
                    context: grpc.ServicerContext) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=bool(self._models))

    def ModelReady(self, request: pb.ModelReadyRequest,
                   context: grpc.ServicerContext) -> pb.ModelReadyResponse:
        # Like Triton: an unknown model or version is "not ready", not an error.
        ready = request.name in self._models and request.version in ("", MODEL_VERSION)
        return pb.ModelReadyResponse(ready=ready)

    def ServerMetadata(self, request: pb.ServerMetadataRequest,
                       context: grpc.ServicerContext) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=self.server_version, extensions=[])

    def ModelMetadata(self, request: pb.ModelMetadataRequest,
                      context: grpc.ServicerContext) -> pb.ModelMetadataResponse:
        return _guarded(context, lambda: self._lookup(request.name, request.version).metadata)

    # --- inference ------------------------------------------------------------------------------------

    def ModelInfer(self, request: pb.ModelInferRequest,
                   context: grpc.ServicerContext) -> pb.ModelInferResponse:
        return _guarded(context, lambda: self._infer(request))

    def _infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        served = self._lookup(request.model_name, request.model_version)
        wanted = _requested_outputs(request, served)
        if served.kind != "image":
            prediction = served.runtime.infer(_decode_inputs(request, served, self.max_batch))
            return _response(request, served, wanted, prediction.labels, prediction.scores, prediction)
        runtime = served.runtime
        tensor, raw = _single_input(request, served)
        if tensor.name == "image":
            images = _bytes_elements(tensor, raw, self.max_batch)
            try:
                labels, scores = runtime.classify_images(images)  # type: ignore[attr-defined]
            except ImageBatchError as exc:
                raise InvalidArgument(f"input 'image' element {exc.index} is not a decodable image "
                                      f"(PNG/JPEG): {exc.detail}") from exc
        else:
            pixels = _fp32_tensor(tensor, raw, served.pixels_shape, self.max_batch)
            labels, scores = runtime.classify_pixels(pixels)  # type: ignore[attr-defined]
        return _response(request, served, wanted, labels, scores)

    def _lookup(self, name: str, version: str) -> _Served:
        served = self._models.get(name)
        if served is None:
            names = ", ".join(repr(n) for n in sorted(self._models)) or "none"
            raise NotFound(f"unknown model {name!r}; this endpoint serves {names}")
        if version not in ("", MODEL_VERSION):
            raise NotFound(f"model {name!r} has no version {version!r}; leave the version empty or send "
                           f"{MODEL_VERSION!r}")
        return served


# --- request decoding ---------------------------------------------------------------------------------


def _single_input(request: pb.ModelInferRequest,
                  served: _Served) -> tuple[pb.ModelInferRequest.InferInputTensor, bytes | None]:
    """The one input tensor and its raw bytes (None when it came in ``contents``)."""
    if len(request.inputs) != 1:
        names = ", ".join(repr(t.name) for t in request.inputs) or "none"
        raise InvalidArgument(f"the request has {len(request.inputs)} inputs ({names}); "
                              f"{_expected_inputs(served)}")
    tensor = request.inputs[0]
    if tensor.name not in ("image", "pixels"):
        raise InvalidArgument(f"unknown input {tensor.name!r}; {_expected_inputs(served)}")
    datatype = "BYTES" if tensor.name == "image" else "FP32"
    if tensor.datatype != datatype:
        raise InvalidArgument(f"input {tensor.name!r} must have datatype {datatype}, got {tensor.datatype!r}")
    raw_count = len(request.raw_input_contents)
    if raw_count == 0:
        return tensor, None
    if raw_count != 1:
        raise InvalidArgument(f"the request has 1 input but {raw_count} raw_input_contents; "
                              "send one per input")
    if tensor.HasField("contents") and tensor.contents.ByteSize():
        raise InvalidArgument(f"input {tensor.name!r} has both contents and raw_input_contents; "
                              "send one of them")
    return tensor, request.raw_input_contents[0]


def _expected_inputs(served: _Served) -> str:
    return served.expected_inputs


def _decode_inputs(request: pb.ModelInferRequest, served: _Served, max_batch: int) -> dict[str, Decoded]:
    """Every input of a text or table request by name: BYTES as bytes elements, numbers as arrays [N]."""
    if not request.inputs:
        raise InvalidArgument(f"the request has no inputs; {served.expected_inputs}")
    raw_count = len(request.raw_input_contents)
    if raw_count and raw_count != len(request.inputs):
        raise InvalidArgument(f"the request has {len(request.inputs)} inputs but {raw_count} raw_input_contents; "
                              "send one per input, in the inputs' order")
    decoded: dict[str, Decoded] = {}
    counts: dict[str, int] = {}
    for position, tensor in enumerate(request.inputs):
        name = tensor.name
        accepted = served.input_types.get(name)
        if accepted is None:
            raise InvalidArgument(f"unknown input {name!r}; {served.expected_inputs}")
        if name in decoded:
            raise InvalidArgument(f"input {name!r} appears twice; send each input once")
        if tensor.datatype not in accepted:
            others = f" (or {', '.join(accepted[1:])})" if len(accepted) > 1 else ""
            raise InvalidArgument(f"input {name!r} must have datatype {accepted[0]}{others}, "
                                  f"got {tensor.datatype!r}")
        count = _batch_size(tensor, max_batch)
        shape = list(tensor.shape)
        if shape not in ([count], [count, 1]):
            raise InvalidArgument(f"input {name!r} must have shape [N] or [N, 1] (one value per element), "
                                  f"got {shape}")
        raw = request.raw_input_contents[position] if raw_count else None
        if raw is not None and tensor.HasField("contents") and tensor.contents.ByteSize():
            raise InvalidArgument(f"input {name!r} has both contents and raw_input_contents; send one of them")
        values: Decoded
        if tensor.datatype == "BYTES":
            values = list(tensor.contents.bytes_contents) if raw is None else _split_length_prefixed(raw, name)
        else:
            layout, field = _NUMERIC[tensor.datatype]
            if raw is None:
                values = np.asarray(getattr(tensor.contents, field), dtype=layout)
            else:
                width = np.dtype(layout).itemsize
                if len(raw) != count * width:
                    raise InvalidArgument(f"input {name!r} of shape {shape} needs {count * width} raw bytes "
                                          f"(little-endian {tensor.datatype}), got {len(raw)}")
                values = np.frombuffer(raw, dtype=layout)
        if len(values) != count:
            raise InvalidArgument(f"input {name!r} has shape {shape} but carries {len(values)} elements; "
                                  "make the shape match the number of values")
        decoded[name] = values
        counts[name] = count
    if len(set(counts.values())) > 1:
        shown = ", ".join(f"{n!r} has {k}" for n, k in counts.items())
        raise InvalidArgument(f"the inputs have different lengths ({shown}); send the same number of "
                              "elements in every input")
    return decoded


def _batch_size(tensor: pb.ModelInferRequest.InferInputTensor, max_batch: int) -> int:
    shape = list(tensor.shape)
    if not shape or any(d < 0 for d in shape):
        raise InvalidArgument(f"input {tensor.name!r} needs a concrete shape, got {shape}")
    count = shape[0]
    if count == 0:
        raise InvalidArgument(f"input {tensor.name!r} has no elements; send at least one")
    if count > max_batch:
        raise InvalidArgument(f"input {tensor.name!r} has {count} elements; this endpoint takes at most "
                              f"{max_batch} per request, so split the batch")
    return count


def _bytes_elements(tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes | None,
                    max_batch: int) -> list[bytes]:
    """The encoded images of a BYTES [N] (or [N, 1]) tensor."""
    count = _batch_size(tensor, max_batch)
    shape = list(tensor.shape)
    if shape not in ([count], [count, 1]):
        raise InvalidArgument(f"input 'image' must have shape [N] (one encoded image per element), "
                              f"got {shape}")
    elements = list(tensor.contents.bytes_contents) if raw is None else _split_length_prefixed(raw)
    if len(elements) != count:
        raise InvalidArgument(f"input 'image' has shape {shape} but carries {len(elements)} elements; "
                              "make the shape match the number of images")
    return elements


def _split_length_prefixed(raw: bytes, name: str = "image") -> list[bytes]:
    """Triton's raw BYTES layout: per element a 4-byte little-endian length, then the bytes."""
    elements: list[bytes] = []
    view, offset, end = memoryview(raw), 0, len(raw)
    while offset < end:
        if offset + 4 > end:
            raise InvalidArgument(f"raw_input_contents for {name!r} is malformed: a length prefix is cut short "
                                  "(each element is a 4-byte little-endian length, then the bytes)")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > end:
            raise InvalidArgument(f"raw_input_contents for {name!r} is malformed: element {len(elements)} "
                                  f"claims {length} bytes but only {end - offset} remain")
        elements.append(bytes(view[offset:offset + length]))
        offset += length
    return elements


def _fp32_tensor(tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes | None,
                 chw: tuple[int, int, int], max_batch: int) -> np.ndarray:
    """The pixels tensor as float32 [N, C, H, W], checked against the model's C, H, W."""
    count = _batch_size(tensor, max_batch)
    shape = list(tensor.shape)
    if shape != [count, *chw]:
        raise InvalidArgument("input 'pixels' must have shape [N, {}, {}, {}]".format(*chw)
                              + f" (preprocessed), got {shape}; or send encoded images as 'image'")
    size = count * chw[0] * chw[1] * chw[2]
    if raw is None:
        values = np.asarray(tensor.contents.fp32_contents, dtype=np.float32)
    else:
        if len(raw) != size * 4:
            raise InvalidArgument(f"input 'pixels' of shape {shape} needs {size * 4} raw bytes "
                                  f"(little-endian float32), got {len(raw)}")
        values = np.frombuffer(raw, dtype="<f4")
    if values.size != size:
        raise InvalidArgument(f"input 'pixels' of shape {shape} needs {size} fp32_contents, "
                              f"got {values.size}")
    return values.astype(np.float32, copy=False).reshape(shape)


def _requested_outputs(request: pb.ModelInferRequest, served: _Served) -> Sequence[str]:
    if not request.outputs:
        return served.output_names
    names = [o.name for o in request.outputs]
    unknown = [n for n in names if n not in served.output_names]
    if unknown:
        raise InvalidArgument(f"unknown output {unknown[0]!r}; this model answers {served.expected_outputs}")
    return names


# --- response -------------------------------------------------------------------------------------------


def _response(request: pb.ModelInferRequest, served: _Served, wanted: Sequence[str], labels: list[str] | None,
              scores: np.ndarray | None, prediction: Prediction | None = None) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(model_name=request.model_name, model_version=MODEL_VERSION,
                                     id=request.id)
    if served.classes_parameter is not None:
        response.parameters["classes"].CopyFrom(served.classes_parameter)
    for name in wanted:
        if name == "label" and labels is not None:
            response.outputs.add(name="label", datatype="BYTES", shape=[len(labels)])
            index, encoded = served.label_index, served.encoded_labels
            response.raw_output_contents.append(b"".join(encoded[index[label]] for label in labels))
        elif name == "scores" and scores is not None:
            response.outputs.add(name="scores", datatype="FP32", shape=list(scores.shape))
            response.raw_output_contents.append(scores.astype("<f4", copy=False).tobytes())
        elif name == "prediction" and prediction is not None and prediction.prediction is not None:
            values = prediction.prediction
            response.outputs.add(name="prediction", datatype="FP32", shape=[len(values)])
            response.raw_output_contents.append(values.astype("<f4", copy=False).tobytes())
    return response


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join("N" if d < 0 else str(d) for d in shape) + "]"


def _tensors_text(tensors: Sequence[pb.ModelMetadataResponse.TensorMetadata]) -> str:
    return ", ".join(f"{t.name!r} {t.datatype} {_shape_text(t.shape)}" for t in tensors)


def _describe(name: str, runtime: Runtime) -> _Served:
    classes = runtime.classes
    metadata = pb.ModelMetadataResponse(name=name, versions=[MODEL_VERSION], platform=PLATFORM)
    for tensor in runtime.inputs():
        metadata.inputs.add(name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"])
    for tensor in runtime.outputs():
        metadata.outputs.add(name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"])
    encoded = tuple(_LENGTH.pack(len(c.encode())) + c.encode() for c in classes)
    output_names = tuple(t.name for t in metadata.outputs)
    if runtime.kind == "image":
        spec = runtime.spec  # type: ignore[attr-defined]
        pixels_shape = (spec.channels, spec.height, spec.width)
        expected_inputs = ("send 'image' BYTES [N] (encoded PNG/JPEG) or 'pixels' FP32 [N, {}, {}, {}]"
                           .format(*pixels_shape))
    elif runtime.kind == "text":
        pixels_shape = (0, 0, 0)
        expected_inputs = "send 'text' BYTES [N] (one UTF-8 string per element)"
    else:
        pixels_shape = (0, 0, 0)
        expected_inputs = (f"send one input per feature column, each [N] (one value per row): "
                           f"{_tensors_text(metadata.inputs)}; a missing value is NaN for a number and an "
                           "empty string for a category")
    return _Served(
        runtime=runtime,
        kind=runtime.kind,
        classes_parameter=(pb.InferParameter(string_param=json.dumps(list(classes), ensure_ascii=False))
                           if "label" in output_names else None),
        encoded_labels=encoded,
        label_index={c: i for i, c in enumerate(classes)},
        metadata=metadata,
        pixels_shape=pixels_shape,
        input_types=runtime.input_datatypes(),
        output_names=output_names,
        expected_inputs=expected_inputs,
        expected_outputs=" and ".join(
            f"{t.name!r} {t.datatype} {'[N, C]' if t.name == 'scores' else _shape_text(t.shape)}"
            for t in metadata.outputs),
    )


def _guarded(context: grpc.ServicerContext, call: Callable[[], Response]) -> Response:
    """Run ``call``; domain errors become their status code, anything else INTERNAL (and a log entry)."""
    try:
        return call()
    except TrainerAgentError as exc:
        code, message = exc.code, exc.message
    except Exception:  # noqa: BLE001 - a bad request must never take the endpoint down
        log.exception("inference_internal_error")
        code, message = grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE
    context.abort(code, message)
    raise AssertionError("unreachable: context.abort raises")
