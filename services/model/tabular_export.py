"""ONNX export of a table pipeline, with proof that the export computes what scikit-learn computes.

The whole fitted pipeline (imputation, scaling, one-hot encoding, estimator) becomes one
self-contained graph by skl2onnx: one input per feature column, named exactly as the column
(numeric float32 [N, 1], categorical string [N, 1]), and one output, ``scores`` float32 [N, C]
(class probabilities in the spec's class order) or ``prediction`` float32 [N, 1]. Rows become
feeds through :func:`services.common.table_dataset.table_feeds` in training, in the parity check
and at the endpoint alike, so no client ever preprocesses.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pathlib
import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from skl2onnx import convert_sklearn
from skl2onnx.common import tree_ensemble
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.pipeline import Pipeline

from services.common.bundle import MAX_SAMPLE_INPUTS, describe_bundle, write_bundle
from services.common.errors import DataError, TrainingError
from services.common.table_dataset import TableSpec, canonical_table_frame, json_safe_rows, table_feeds
from services.model.export import ParityError
from services.model.tabular import predict_table

__all__ = [
    "OPSET", "ML_OPSET", "SCORES", "PREDICTION", "PARITY_TOLERANCE", "ParityError", "export_table_onnx",
    "check_table_parity", "table_feeds", "measure_table_latency_ms", "build_table_bundle_dict",
    "write_table_bundle", "onnx_opset",
]

OPSET = 18
ML_OPSET = 3  # ai.onnx.ml: TreeEnsemble*, OneHotEncoder, Imputer, LabelEncoder
SCORES = "scores"
PREDICTION = "prediction"
# Probabilities: absolute; regression: relative to the largest |prediction| in the batch.
PARITY_TOLERANCE = 1e-4
PathLike = str | os.PathLike[str]


def output_name(spec: TableSpec) -> str:
    return SCORES if spec.task == "classification" else PREDICTION


@contextlib.contextmanager
def _int_missing_tracks() -> Iterator[None]:
    """skl2onnx 1.20 passes Python ``False`` for a HistGradientBoosting leaf's
    ``nodes_missing_value_tracks_true``, an INTS attribute that protobuf >= 6 refuses to hold a bool
    in; make it 0/1 while converting. (No NaN ever reaches the trees: the pipeline imputes first.)
    Not thread-safe: one conversion at a time per process, as a training worker runs them."""
    original = getattr(tree_ensemble, "add_node", None)
    if original is None:
        yield
        return

    @functools.wraps(original)
    def add_node(*args: Any, **kwargs: Any) -> Any:
        if "nodes_missing_value_tracks_true" in kwargs:
            kwargs["nodes_missing_value_tracks_true"] = int(kwargs["nodes_missing_value_tracks_true"])
        return original(*args, **kwargs)

    tree_ensemble.add_node = add_node
    try:
        yield
    finally:
        tree_ensemble.add_node = original


def _check_names(spec: TableSpec) -> None:
    if output_name(spec) in spec.feature_names:
        raise DataError(f"a feature column is named {output_name(spec)!r}, which is the model's output name; "
                        f"rename that column in the data")


def export_table_onnx(pipeline: Pipeline, spec: TableSpec, path: PathLike) -> str:
    """Write the fitted pipeline as one ONNX file at ``path``; return the exporter's name ("skl2onnx")."""
    _check_names(spec)
    path = pathlib.Path(path)
    initial_types = [(f.name, FloatTensorType([None, 1]) if f.kind == "numeric" else StringTensorType([None, 1]))
                     for f in spec.features]
    estimator = pipeline.steps[-1][1]
    options = {id(estimator): {"zipmap": False}} if spec.task == "classification" else None
    with _int_missing_tracks():
        proto = convert_sklearn(pipeline, initial_types=initial_types, options=options,
                                target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET})
    _name_inputs_and_output(proto.graph, spec)
    proto.metadata_props.add(key="traineragent.table", value=spec.to_json())
    onnx.checker.check_model(proto, full_check=True)
    _check_graph(proto, spec)
    onnx.save_model(proto, str(path), save_as_external_data=False)
    return "skl2onnx"


def _rename_values(graph: onnx.GraphProto, mapping: Mapping[str, str]) -> None:
    """Rename values everywhere at once (node inputs and outputs, graph inputs, outputs, initializers)."""
    for node in graph.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]
    for value in (*graph.input, *graph.output, *graph.value_info, *graph.initializer):
        value.name = mapping.get(value.name, value.name)


def _name_inputs_and_output(graph: onnx.GraphProto, spec: TableSpec) -> None:
    """Inputs named exactly as the columns; one output, ``scores`` or ``prediction``.

    skl2onnx turns names like "body mass.index" into identifiers and keeps its own names ("label",
    "probabilities", "variable") for itself, renaming a column that has one. ONNX names are
    arbitrary strings, so: move internal values out of the columns' way, give the inputs the
    columns' names, and keep only the probabilities (classifier) or the prediction (regressor).
    """
    outputs = [o.name for o in graph.output]
    wanted = output_name(spec)
    if spec.task == "classification":
        if len(outputs) != 2:
            raise TrainingError(f"skl2onnx gave a classifier the outputs {outputs}; expected a label and "
                                f"probabilities")
        source, dim = outputs[1], len(spec.classes)
    else:
        source, dim = outputs[0], 1
    inputs = [i.name for i in graph.input]
    internal = ({t.name for t in graph.initializer} | {n for node in graph.node for n in node.output}) - set(inputs)
    reserved = set(spec.feature_names) | {wanted}
    used = set(inputs) | internal | reserved
    moves: dict[str, str] = {}
    for name in sorted(internal & reserved):
        fresh, k = f"{name}__internal", 0
        while fresh in used:
            k += 1
            fresh = f"{name}__internal{k}"
        moves[name] = fresh
        used.add(fresh)
    _rename_values(graph, moves)
    source = moves.get(source, source)
    _rename_values(graph, {**dict(zip(inputs, spec.feature_names, strict=True)), source: wanted})
    del graph.output[:]
    graph.output.append(onnx.helper.make_tensor_value_info(wanted, onnx.TensorProto.FLOAT, ["N", dim]))


def _check_graph(proto: onnx.ModelProto, spec: TableSpec) -> None:
    inputs = [(i.name, i.type.tensor_type.elem_type) for i in proto.graph.input]
    expected = [(f.name, onnx.TensorProto.FLOAT if f.kind == "numeric" else onnx.TensorProto.STRING)
                for f in spec.features]
    if inputs != expected:
        raise TrainingError(f"the exported table model has inputs {inputs}, expected {expected}")
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        raise TrainingError("the exported table model refers to external weight files")


def onnx_opset(path: PathLike) -> int:
    """The default-domain opset an ONNX file was written for."""
    proto = onnx.load(str(path), load_external_data=False)
    return next((int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")), OPSET)


@functools.lru_cache(maxsize=8)
def _cached_session(path: str, mtime_ns: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


def _session(onnx_path: PathLike) -> ort.InferenceSession:
    path = pathlib.Path(onnx_path)
    return _cached_session(str(path.resolve()), path.stat().st_mtime_ns)


def run_table_onnx(onnx_path: PathLike, spec: TableSpec, rows: Any) -> np.ndarray:
    """The ONNX model's scores [N, C] or predictions [N] for raw rows."""
    (output,) = _session(onnx_path).run([output_name(spec)], table_feeds(rows, spec))
    return output if spec.task == "classification" else output.reshape(-1)


def check_table_parity(pipeline: Pipeline, spec: TableSpec, onnx_path: PathLike, frame: Any) -> float:
    """The largest difference between scikit-learn and onnxruntime on ``frame``'s rows (one row alone,
    then all together): absolute for probabilities, relative to the largest |prediction| for
    regression. ParityError past PARITY_TOLERANCE."""
    rows = canonical_table_frame(frame, spec)
    if len(rows) == 0:
        raise ValueError("the parity check needs at least one row")
    worst = 0.0
    for batch in (rows.iloc[:1].reset_index(drop=True), rows):  # batch 1 and > 1: both must work
        expected = predict_table(pipeline, spec, batch)
        actual = run_table_onnx(onnx_path, spec, batch)
        if actual.shape != expected.shape:
            raise ParityError(f"ONNX outputs have shape {actual.shape}, scikit-learn's {expected.shape}")
        if not np.all(np.isfinite(actual)):
            raise ParityError("the ONNX model outputs NaN or infinity where scikit-learn does not")
        diff = float(np.max(np.abs(actual.astype(np.float64) - expected)))
        if spec.task == "regression":
            diff /= max(float(np.max(np.abs(expected))), 1e-12)
        worst = max(worst, diff)
    if worst > PARITY_TOLERANCE:
        kind = "probabilities" if spec.task == "classification" else "predictions (relative)"
        raise ParityError(f"the ONNX model's {kind} differ from scikit-learn's by up to {worst:.2e} "
                          f"(tolerance {PARITY_TOLERANCE:.0e})")
    return worst


def measure_table_latency_ms(onnx_path: PathLike, feeds_single: Mapping[str, np.ndarray], runs: int = 100) -> float:
    """Mean milliseconds of one ``session.run`` on one row's feeds, after warm-up (the bare model)."""
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feeds = dict(feeds_single)
    for _ in range(max(3, runs // 10)):
        session.run(None, feeds)
    started = time.perf_counter()
    for _ in range(runs):
        session.run(None, feeds)
    return (time.perf_counter() - started) * 1000.0 / runs


def build_table_bundle_dict(spec: TableSpec, candidate: str, metrics: Mapping[str, float], sample_rows: Any,
                            opset: int) -> dict[str, Any]:
    """bundle.json for a table model (docs/formats.md); at most 8 sample rows, None for missing."""
    frame = canonical_table_frame(sample_rows, spec)
    return describe_bundle(spec.task_type, spec.classes, candidate, metrics, opset,
                           json_safe_rows(frame, spec, limit=MAX_SAMPLE_INPUTS),
                           features=[{"name": f.name, "kind": f.kind} for f in spec.features])


def write_table_bundle(tar_path: PathLike, onnx_path: PathLike, bundle: Mapping[str, Any]) -> None:
    """The same tar as every model bundle: model.onnx and bundle.json."""
    write_bundle(tar_path, onnx_path, bundle)

