"""One served model: an onnxruntime session with the training preprocessing in front of it.

Clients send encoded images of any size and mode; the runtime decodes and normalises them with
the exact :func:`preprocess_images` the training worker used, so served scores match evaluation.
No gRPC here: the OIP servicer translates tensors and this module raises domain errors only.
"""

from __future__ import annotations

import base64
import binascii
import json
import pathlib
from collections.abc import Sequence
from typing import Any, TypedDict

import numpy as np
import onnxruntime as ort

from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.preprocessing import ImagePreprocessing, preprocess_images

MODEL_FILE = "model.onnx"
DESCRIPTION_FILE = "bundle.json"
SUPPORTED_TASK_TYPES = ("image_classification",)
DEFAULT_INTRA_OP_THREADS = 1


class TensorMetadata(TypedDict):
    """What ModelMetadata reports for one tensor (OIP v2: name, datatype, shape; -1 = any)."""

    name: str
    datatype: str
    shape: list[int]


class ImageBatchError(InvalidArgument):
    """One element of an image batch is not a decodable image; ``index`` says which."""

    def __init__(self, index: int, detail: str) -> None:
        super().__init__(f"element {index} is not a decodable image (PNG/JPEG): {detail}")
        self.index = index
        self.detail = detail


def session_options(intra_op_threads: int = DEFAULT_INTRA_OP_THREADS) -> ort.SessionOptions:
    """The options every session of a served model uses (the endpoint and the raw benchmark alike).

    A small fixed thread count: single-request latency on a shared host is better with one
    thread than with a pool that fights the gRPC workers for cores.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = max(1, int(intra_op_threads))
    options.inter_op_num_threads = 1
    return options


def load_session(model_path: str | pathlib.Path,
                 intra_op_threads: int = DEFAULT_INTRA_OP_THREADS) -> ort.InferenceSession:
    """An onnxruntime CPU session for ``model_path`` with :func:`session_options`."""
    return ort.InferenceSession(str(model_path), sess_options=session_options(intra_op_threads),
                                providers=["CPUExecutionProvider"])


class ModelRuntime:
    """An image classifier ready to answer: classes, preprocessing and a loaded session."""

    def __init__(self, session: ort.InferenceSession, classes: Sequence[str], spec: ImagePreprocessing, *,
                 task_type: str = "image_classification", sample_inputs: Sequence[bytes] = (),
                 size_bytes: int = 0) -> None:
        self._session = session
        self._classes = tuple(classes)
        self._spec = spec
        self.task_type = task_type
        self.sample_inputs = list(sample_inputs)
        self._size_bytes = int(size_bytes)
        self._input_name = session.get_inputs()[0].name
        self._output_name = session.get_outputs()[0].name
        # Labels indexed by argmax; an object array makes the lookup one vectorised take.
        self._label_array = np.asarray(self._classes, dtype=object)
        self._check_output_width()

    @classmethod
    def from_bundle_dir(cls, directory: str | pathlib.Path,
                        intra_op_threads: int = DEFAULT_INTRA_OP_THREADS) -> ModelRuntime:
        """Load ``model.onnx`` and ``bundle.json`` (docs/formats.md) from an extracted bundle."""
        root = pathlib.Path(directory)
        description = _read_description(root / DESCRIPTION_FILE)
        task_type = description.get("task_type", "")
        if task_type not in SUPPORTED_TASK_TYPES:
            raise FailedPrecondition(f"the endpoint serves {', '.join(SUPPORTED_TASK_TYPES)} bundles; "
                                     f"this bundle's task_type is {task_type!r}")
        classes = description.get("classes") or []
        if not classes:
            raise FailedPrecondition("the model bundle's bundle.json lists no classes")
        spec = ImagePreprocessing.from_json(json.dumps(description["preprocessing"]))
        model_path = root / MODEL_FILE
        if not model_path.is_file():
            raise FailedPrecondition(f"the model bundle in {root} has no {MODEL_FILE}")
        return cls(load_session(model_path, intra_op_threads), classes, spec, task_type=task_type,
                   sample_inputs=_sample_inputs(description), size_bytes=model_path.stat().st_size)

    # --- what the endpoint reports -------------------------------------------------------------------

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names in score order."""
        return self._classes

    @property
    def spec(self) -> ImagePreprocessing:
        """The preprocessing the model was trained with."""
        return self._spec

    @property
    def size_bytes(self) -> int:
        """Bytes of the served ONNX graph (the size a target's ``max_model_size_mb`` is about)."""
        return self._size_bytes

    def inputs(self) -> list[TensorMetadata]:
        """``image`` (encoded bytes) or, alternatively, ``pixels`` (already preprocessed)."""
        spec = self._spec
        return [
            TensorMetadata(name="image", datatype="BYTES", shape=[-1]),
            TensorMetadata(name="pixels", datatype="FP32",
                           shape=[-1, spec.channels, spec.height, spec.width]),
        ]

    def outputs(self) -> list[TensorMetadata]:
        """``label`` (class name per element) and ``scores`` (probabilities in class order)."""
        return [
            TensorMetadata(name="label", datatype="BYTES", shape=[-1]),
            TensorMetadata(name="scores", datatype="FP32", shape=[-1, len(self._classes)]),
        ]

    # --- inference ------------------------------------------------------------------------------------

    def classify_images(self, images: Sequence[bytes]) -> tuple[list[str], np.ndarray]:
        """Encoded images of any size and mode -> labels and scores float32 [N, C]."""
        return self.classify_pixels(self.preprocess(images))

    def preprocess(self, images: Sequence[bytes]) -> np.ndarray:
        """Encoded images -> float32 [N, C, H, W]; a bad element raises :class:`ImageBatchError`.

        The common single-image case is one :func:`preprocess_images` call; batches go one
        element at a time so an error can name the element (the arithmetic is element-wise, so
        the result is identical to one batched call).
        """
        if len(images) == 1:
            return self._preprocess_one(0, images[0])
        if not images:
            return preprocess_images([], self._spec)
        return np.concatenate([self._preprocess_one(i, data) for i, data in enumerate(images)])

    def _preprocess_one(self, index: int, data: bytes) -> np.ndarray:
        try:
            return preprocess_images([data], self._spec)
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for hostile input
            raise ImageBatchError(index, str(exc)) from exc

    def classify_pixels(self, x: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Preprocessed float32 [N, C, H, W] -> labels and scores float32 [N, C]."""
        self._check_pixels(x)
        if x.shape[0] == 0:
            return [], np.zeros((0, len(self._classes)), np.float32)
        scores = np.asarray(self.raw_run(x), dtype=np.float32)
        labels = self._label_array[scores.argmax(axis=1)].tolist()
        return labels, scores

    def raw_run(self, x: np.ndarray) -> np.ndarray:
        """The bare session call, nothing around it: the floor the endpoint's latency is compared to."""
        return self._session.run([self._output_name], {self._input_name: x})[0]

    # --- checks ---------------------------------------------------------------------------------------

    def _check_pixels(self, x: np.ndarray) -> None:
        spec = self._spec
        expected = (spec.channels, spec.height, spec.width)
        if x.dtype != np.float32:
            raise InvalidArgument(f"pixels must be float32, got {x.dtype}")
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise InvalidArgument(f"pixels must have shape [N, {expected[0]}, {expected[1]}, {expected[2]}] "
                                  f"(preprocessed {spec.mode} {spec.height}x{spec.width}), "
                                  f"got {list(x.shape)}; "
                                  "or send encoded images as the 'image' input instead")

    def _check_output_width(self) -> None:
        width = self._session.get_outputs()[0].shape[-1]
        if isinstance(width, int) and width != len(self._classes):
            raise FailedPrecondition(f"the model answers {width} scores but the bundle names "
                                     f"{len(self._classes)} classes")


def _read_description(path: pathlib.Path) -> dict[str, Any]:
    try:
        description = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise FailedPrecondition(f"the model bundle has no {DESCRIPTION_FILE} at {path}") from exc
    except ValueError as exc:
        raise FailedPrecondition(f"the model bundle's {DESCRIPTION_FILE} is not JSON: {exc}") from exc
    if not isinstance(description, dict):
        raise FailedPrecondition(f"the model bundle's {DESCRIPTION_FILE} is not a JSON object")
    return description


def _sample_inputs(description: dict[str, Any]) -> list[bytes]:
    """bundle.json's base64 sample inputs as encoded image bytes (the benchmark sends the first)."""
    try:
        return [base64.b64decode(text, validate=True) for text in description.get("sample_inputs") or []]
    except (binascii.Error, TypeError) as exc:
        raise FailedPrecondition(f"the model bundle's sample_inputs are not base64: {exc}") from exc
