"""Served models: an onnxruntime session with the training preprocessing in front of it, per task type.

:func:`load_runtime` reads a bundle's ``bundle.json`` and returns the runtime for its task type, all
behind one interface (:class:`Runtime`: OIP tensor metadata, classes, sample inputs, size, the bare
session call for the benchmark's floor):

- ``image_classification`` (:class:`ModelRuntime`): encoded images of any size and mode, decoded
  and normalised with the exact :func:`preprocess_images` the training worker used;
- ``text_classification`` (:class:`TextRuntime`): raw UTF-8 strings, encoded with the bundle's
  :class:`TextPreprocessing` (and its tokenizer.json) through :func:`encode_texts`, as in training;
- ``tabular_classification`` / ``tabular_regression`` (:class:`TableRuntime`): one tensor per
  feature column, turned into the model's feeds by :func:`table_feeds`, as in training.

So served scores match evaluation and no client ever preprocesses. No gRPC and no torch here: the
OIP servicer translates tensors and this module raises domain errors only.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import numpy as np
import onnxruntime as ort
import pandas as pd

from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.preprocessing import ImagePreprocessing, preprocess_images
from services.common.table_dataset import FeatureSpec, TableSpec, category_text, table_feeds
from services.common.text_preprocessing import TextPreprocessing, encode_texts, load_tokenizer

MODEL_FILE = "model.onnx"
DESCRIPTION_FILE = "bundle.json"
IMAGE_TASK_TYPES = ("image_classification",)
TEXT_TASK_TYPE = "text_classification"
TABLE_TASK_TYPES = ("tabular_classification", "tabular_regression")
SUPPORTED_TASK_TYPES = (*IMAGE_TASK_TYPES, TEXT_TASK_TYPE, *TABLE_TASK_TYPES)
DEFAULT_INTRA_OP_THREADS = 1
TABLE_SPEC_KEY = "traineragent.table"  # the TableSpec JSON the table export stores in the ONNX metadata
NUMERIC_DATATYPES = ("FP32", "FP64", "INT32", "INT64")  # a numeric column's tensor (FP32 is the documented one)

# What an input tensor holds once decoded: BYTES elements, or numbers (shape [N] or as sent for pixels).
Decoded = list[bytes] | np.ndarray


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


class ColumnError(InvalidArgument):
    """An element of a BYTES input that is not UTF-8; the message names the input and the element."""

    def __init__(self, name: str, index: int, exc: UnicodeDecodeError) -> None:
        super().__init__(f"input {name!r} element {index} is not valid UTF-8 ({exc.reason} at byte {exc.start}); "
                         "send UTF-8 encoded strings")


@dataclasses.dataclass(frozen=True, slots=True)
class Prediction:
    """A runtime's answer for N elements: labels and scores (classifiers) or predictions (regressors)."""

    labels: list[str] | None = None
    scores: np.ndarray | None = None  # float32 [N, C]
    prediction: np.ndarray | None = None  # float32 [N]


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


class Runtime:
    """What every served model offers the endpoint, the benchmark and the deployment record.

    ``kind`` is "image", "text" or "table"; ``sample_inputs`` are raw inputs as a client sends them
    (encoded image bytes, a string, a row dict by column name); :meth:`prepare` turns one into the
    session's feeds and :meth:`raw_run` is the bare session call on them (the benchmark's floor).
    :meth:`infer` answers decoded OIP inputs by name (BYTES as ``list[bytes]``, numbers as arrays).
    """

    kind: str = ""
    task_type: str = ""
    sample_inputs: list[Any]

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names in score order; empty for a regressor."""
        raise NotImplementedError

    @property
    def size_bytes(self) -> int:
        """Bytes of the served ONNX graph (the size a target's ``max_model_size_mb`` is about)."""
        raise NotImplementedError

    def inputs(self) -> list[TensorMetadata]:
        raise NotImplementedError

    def outputs(self) -> list[TensorMetadata]:
        raise NotImplementedError

    def input_datatypes(self) -> dict[str, tuple[str, ...]]:
        """Each input's name and the datatypes it accepts (the first is the one metadata reports)."""
        return {t["name"]: (t["datatype"],) for t in self.inputs()}

    def prepare(self, sample: Any) -> Any:
        """One raw sample input -> the session's feeds, as the endpoint would prepare it."""
        raise NotImplementedError

    def raw_run(self, feeds: Any) -> np.ndarray:
        raise NotImplementedError

    def infer(self, inputs: Mapping[str, Decoded]) -> Prediction:
        raise NotImplementedError


class ModelRuntime(Runtime):
    """An image classifier ready to answer: classes, preprocessing and a loaded session."""

    kind = "image"

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
        if task_type not in IMAGE_TASK_TYPES:
            raise FailedPrecondition(f"this is not an image bundle: its task_type is {task_type!r}; "
                                     "load it with load_runtime")
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
        return self._size_bytes

    def input_datatypes(self) -> dict[str, tuple[str, ...]]:
        return {"image": ("BYTES",), "pixels": ("FP32",)}

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

    def prepare(self, sample: bytes) -> np.ndarray:
        return self.preprocess([sample])

    def infer(self, inputs: Mapping[str, Decoded]) -> Prediction:
        if "image" in inputs:
            labels, scores = self.classify_images(inputs["image"])  # type: ignore[arg-type]
        else:
            labels, scores = self.classify_pixels(np.asarray(inputs["pixels"]))
        return Prediction(labels=labels, scores=scores)

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


# --- text ---------------------------------------------------------------------------------------------


class TextRuntime(Runtime):
    """A text classifier: raw strings in, encoded by the bundle's own preprocessing as in training."""

    kind = "text"

    def __init__(self, session: ort.InferenceSession, classes: Sequence[str], spec: TextPreprocessing,
                 tokenizer: Any = None, *, sample_inputs: Sequence[str] = (), size_bytes: int = 0) -> None:
        self._session = session
        self._classes = tuple(classes)
        self._spec = spec
        self._tokenizer = tokenizer
        self.task_type = TEXT_TASK_TYPE
        self.sample_inputs = [str(s) for s in sample_inputs]
        self._size_bytes = int(size_bytes)
        self._label_array = np.asarray(self._classes, dtype=object)
        names = [i.name for i in session.get_inputs()]
        if sorted(names) != ["attention_mask", "input_ids"]:
            raise FailedPrecondition(f"the text model takes inputs {names}; a text bundle's model takes "
                                     "input_ids and attention_mask")
        self._output_name = session.get_outputs()[0].name
        _check_width(session, len(self._classes))

    @classmethod
    def from_bundle_dir(cls, directory: str | pathlib.Path,
                        intra_op_threads: int = DEFAULT_INTRA_OP_THREADS) -> TextRuntime:
        root = pathlib.Path(directory)
        description = _read_description(root / DESCRIPTION_FILE)
        classes = _classes(description)
        try:
            spec = TextPreprocessing.from_dict(description.get("text_preprocessing") or {})
        except (ValueError, TypeError, KeyError) as exc:
            raise FailedPrecondition(f"the text bundle's text_preprocessing is not usable: {exc}") from exc
        tokenizer = None
        if spec.kind == "tokenizer":
            path = root / pathlib.Path(str(spec.tokenizer_file)).name
            if not path.is_file():
                raise FailedPrecondition(f"the text bundle has no {path.name} though its preprocessing needs it")
            tokenizer = load_tokenizer(path, spec)
        samples = [s for s in description.get("sample_inputs") or [] if isinstance(s, str)]
        model_path = _model_path(root)
        return cls(load_session(model_path, intra_op_threads), classes, spec, tokenizer,
                   sample_inputs=samples, size_bytes=model_path.stat().st_size)

    @property
    def classes(self) -> tuple[str, ...]:
        return self._classes

    @property
    def spec(self) -> TextPreprocessing:
        return self._spec

    @property
    def size_bytes(self) -> int:
        return self._size_bytes

    def inputs(self) -> list[TensorMetadata]:
        """``text``: one UTF-8 string per element."""
        return [TensorMetadata(name="text", datatype="BYTES", shape=[-1])]

    def outputs(self) -> list[TensorMetadata]:
        return _classifier_outputs(len(self._classes))

    def encode(self, texts: Sequence[str | bytes]) -> dict[str, np.ndarray]:
        """Raw strings -> ``input_ids`` / ``attention_mask``, exactly as training encoded them."""
        return encode_texts(texts, self._spec, self._tokenizer)

    def prepare(self, sample: str) -> dict[str, np.ndarray]:
        return self.encode([sample])

    def raw_run(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        return self._session.run([self._output_name], feeds)[0]

    def classify_texts(self, texts: Sequence[str | bytes]) -> tuple[list[str], np.ndarray]:
        """Strings (or UTF-8 bytes; invalid UTF-8 raises :class:`ColumnError`) -> labels and scores [N, C]."""
        decoded = [_utf8("text", i, t) if isinstance(t, bytes) else t for i, t in enumerate(texts)]
        if not decoded:
            return [], np.zeros((0, len(self._classes)), np.float32)
        scores = np.asarray(self.raw_run(self.encode(decoded)), dtype=np.float32)
        return self._label_array[scores.argmax(axis=1)].tolist(), scores

    def infer(self, inputs: Mapping[str, Decoded]) -> Prediction:
        if "text" not in inputs:
            raise InvalidArgument("send the input 'text' BYTES [N] (one UTF-8 string per element)")
        labels, scores = self.classify_texts(inputs["text"])  # type: ignore[arg-type]
        return Prediction(labels=labels, scores=scores)


# --- tables -------------------------------------------------------------------------------------------


class TableRuntime(Runtime):
    """A table model: one input per feature column, the recorded preprocessing applied as in training."""

    kind = "table"

    def __init__(self, session: ort.InferenceSession, spec: TableSpec, *, sample_inputs: Sequence[Mapping[str, Any]] = (),
                 size_bytes: int = 0) -> None:
        self._session = session
        self._spec = spec
        self._classes = tuple(spec.classes)
        self.task_type = spec.task_type
        self.sample_inputs = [dict(s) for s in sample_inputs]
        self._size_bytes = int(size_bytes)
        self._names = tuple(spec.feature_names)
        self._kinds = {f.name: f.kind for f in spec.features}
        self._expected = ", ".join(repr(n) for n in self._names)
        self._label_array = np.asarray(self._classes, dtype=object)
        graph_inputs = [i.name for i in session.get_inputs()]
        if sorted(graph_inputs) != sorted(self._names):
            raise FailedPrecondition(f"the table model takes inputs {graph_inputs} but the bundle names the "
                                     f"features {list(self._names)}")
        self._output_name = session.get_outputs()[0].name
        wanted = "scores" if spec.task == "classification" else "prediction"
        if self._output_name != wanted:
            raise FailedPrecondition(f"the table model's output is {self._output_name!r}; a {spec.task_type} "
                                     f"model answers {wanted!r}")
        if spec.task == "classification":
            _check_width(session, len(self._classes))

    @classmethod
    def from_bundle_dir(cls, directory: str | pathlib.Path,
                        intra_op_threads: int = DEFAULT_INTRA_OP_THREADS) -> TableRuntime:
        root = pathlib.Path(directory)
        description = _read_description(root / DESCRIPTION_FILE)
        model_path = _model_path(root)
        session = load_session(model_path, intra_op_threads)
        spec = _table_spec(description, session)
        samples = [s for s in description.get("sample_inputs") or [] if isinstance(s, dict)]
        return cls(session, spec, sample_inputs=samples, size_bytes=model_path.stat().st_size)

    @property
    def classes(self) -> tuple[str, ...]:
        return self._classes

    @property
    def spec(self) -> TableSpec:
        return self._spec

    @property
    def size_bytes(self) -> int:
        return self._size_bytes

    @property
    def regression(self) -> bool:
        return self._spec.task == "regression"

    def inputs(self) -> list[TensorMetadata]:
        """One per feature column, named as the column: numeric FP32 [N], categorical BYTES [N]."""
        return [TensorMetadata(name=f.name, datatype="FP32" if f.kind == "numeric" else "BYTES", shape=[-1])
                for f in self._spec.features]

    def input_datatypes(self) -> dict[str, tuple[str, ...]]:
        return {f.name: NUMERIC_DATATYPES if f.kind == "numeric" else ("BYTES",) for f in self._spec.features}

    def outputs(self) -> list[TensorMetadata]:
        if self.regression:
            return [TensorMetadata(name="prediction", datatype="FP32", shape=[-1])]
        return _classifier_outputs(len(self._classes))

    def feeds(self, columns: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Values per column (numbers, strings, None/NaN/"" for missing) -> the session's feeds, by
        :func:`table_feeds`, the conversion training and the parity check used."""
        return table_feeds(pd.DataFrame({name: columns[name] for name in self._names}), self._spec)

    def prepare(self, sample: Mapping[str, Any]) -> dict[str, np.ndarray]:
        return table_feeds(sample, self._spec)

    def raw_run(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        return self._session.run([self._output_name], feeds)[0]

    def predict_columns(self, columns: Mapping[str, Any]) -> Prediction:
        """Columns by name (each N values) -> labels and scores, or predictions [N]."""
        self._check_columns(columns)
        return self._answer(self.feeds(columns))

    def infer(self, inputs: Mapping[str, Decoded]) -> Prediction:
        """Decoded OIP columns (numbers as arrays, categories as UTF-8 bytes) -> the answer."""
        return self._answer(self.decoded_feeds(inputs))

    def decoded_feeds(self, inputs: Mapping[str, Decoded]) -> dict[str, np.ndarray]:
        """The session's feeds for decoded OIP columns: numbers as arrays, categories as UTF-8 bytes.

        The latency path: the feeds are built here directly, with exactly :func:`table_feeds`'s
        values for such columns (numbers through float32, not finite -> NaN; categories as str,
        blank -> "" = missing), without its DataFrame round trip (about a millisecond per request);
        tests/unit/test_endpoint_text_table.py proves the two equal on hostile values.
        """
        self._check_columns(inputs)
        feeds: dict[str, np.ndarray] = {}
        for name in self._names:
            values = inputs[name]
            if self._kinds[name] == "categorical":
                texts = [_utf8(name, i, v) for i, v in enumerate(values)]
                feeds[name] = np.asarray([category_text(t) for t in texts], dtype=object).reshape(-1, 1)
            else:
                with np.errstate(over="ignore", invalid="ignore"):
                    narrow = np.asarray(values, dtype=np.float64).astype(np.float32).reshape(-1, 1)
                narrow[~np.isfinite(narrow)] = np.nan
                feeds[name] = narrow
        return feeds

    def _answer(self, feeds: Mapping[str, np.ndarray]) -> Prediction:
        output = np.asarray(self.raw_run(feeds), dtype=np.float32)
        if self.regression:
            return Prediction(prediction=output.reshape(-1))
        return Prediction(labels=self._label_array[output.argmax(axis=1)].tolist(), scores=output)

    def _check_columns(self, columns: Mapping[str, Any]) -> None:
        missing = [n for n in self._names if n not in columns]
        unknown = [n for n in columns if n not in self._kinds]
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"lacks the column{'s' if len(missing) > 1 else ''} "
                             f"{', '.join(repr(n) for n in missing)}")
            if unknown:
                target = self._spec.label_column
                note = f" ({target!r} is what the model predicts)" if target in unknown else ""
                parts.append(f"has {'inputs' if len(unknown) > 1 else 'an input'} the model does not read: "
                             f"{', '.join(repr(n) for n in unknown)}{note}")
            raise InvalidArgument(f"the request {' and '.join(parts)}; send one input per feature column: "
                                  f"{self._expected} (a missing value: NaN for a number, an empty string for "
                                  "a category)")
        lengths = {n: len(columns[n]) for n in self._names}
        if len(set(lengths.values())) > 1:
            shown = ", ".join(f"{n!r} has {k}" for n, k in lengths.items())
            raise InvalidArgument(f"the columns have different lengths ({shown}); send one value per row in "
                                  "every column")


def _table_spec(description: Mapping[str, Any], session: ort.InferenceSession) -> TableSpec:
    """The TableSpec: features and classes from bundle.json, the label column from the model's metadata."""
    task_type = description.get("task_type")
    try:
        features = [FeatureSpec(name=str(f["name"]), kind=str(f["kind"])) for f in description["features"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise FailedPrecondition(f"the table bundle's features are not usable: {exc}") from exc
    recorded = session.get_modelmeta().custom_metadata_map.get(TABLE_SPEC_KEY)
    label_column = ""
    if recorded:
        try:
            label_column = str(json.loads(recorded).get("label_column") or "")
        except (ValueError, AttributeError):
            label_column = ""
    names = {f.name for f in features}
    if not label_column or label_column in names:
        label_column = next(n for n in ("__target__", "__target_0__", "__target_1__") if n not in names)
    task = "classification" if task_type == "tabular_classification" else "regression"
    try:
        return TableSpec(task=task, label_column=label_column, features=features,
                         classes=[str(c) for c in description.get("classes") or []] if task == "classification" else [])
    except ValueError as exc:
        raise FailedPrecondition(f"the table bundle is not usable: {exc}") from exc


# --- shared -------------------------------------------------------------------------------------------


def _utf8(name: str, index: int, value: bytes | str) -> str:
    if isinstance(value, str):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ColumnError(name, index, exc) from None


def _classifier_outputs(count: int) -> list[TensorMetadata]:
    return [TensorMetadata(name="label", datatype="BYTES", shape=[-1]),
            TensorMetadata(name="scores", datatype="FP32", shape=[-1, count])]


def _check_width(session: ort.InferenceSession, count: int) -> None:
    width = session.get_outputs()[0].shape[-1]
    if isinstance(width, int) and width != count:
        raise FailedPrecondition(f"the model answers {width} scores but the bundle names {count} classes")


def _classes(description: Mapping[str, Any]) -> list[str]:
    classes = [str(c) for c in description.get("classes") or []]
    if len(classes) < 2:
        raise FailedPrecondition(f"the model bundle's bundle.json lists {len(classes)} classes; a classifier "
                                 "needs at least 2")
    return classes


def _model_path(root: pathlib.Path) -> pathlib.Path:
    path = root / MODEL_FILE
    if not path.is_file():
        raise FailedPrecondition(f"the model bundle in {root} has no {MODEL_FILE}")
    return path


def load_runtime(directory: str | pathlib.Path, intra_op_threads: int = DEFAULT_INTRA_OP_THREADS) -> Runtime:
    """The runtime for an extracted bundle, chosen by its bundle.json's ``task_type``."""
    root = pathlib.Path(directory)
    task_type = _read_description(root / DESCRIPTION_FILE).get("task_type", "")
    if task_type in IMAGE_TASK_TYPES:
        return ModelRuntime.from_bundle_dir(root, intra_op_threads)
    if task_type == TEXT_TASK_TYPE:
        return TextRuntime.from_bundle_dir(root, intra_op_threads)
    if task_type in TABLE_TASK_TYPES:
        return TableRuntime.from_bundle_dir(root, intra_op_threads)
    raise FailedPrecondition(f"the endpoint serves {', '.join(SUPPORTED_TASK_TYPES)} bundles; this bundle's "
                             f"task_type is {task_type!r}")


ImageRuntime = ModelRuntime
