"""One trial, start to bundle, for any task: train, export to ONNX, check parity, time, write the bundle.

The training worker (services/model/worker.py) does the messaging around a trial; this module does
the work, so it runs the same in the worker, in tests and in scripts. The dataset artifact's format
(image folder, text or table; docs/formats.md) says which path a trial takes; the trial spec's
candidate must be one that learns that format.

:func:`run_trial` writes ``model.onnx`` and ``bundle.tar`` into the given folder and returns the
TrialResult (without artifact keys: the caller uploads the files).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Callable
from typing import Any

import pyarrow.parquet as pq

from services.common import bundle
from services.common.errors import DataError, InvalidArgument
from services.common.image_dataset import load_image_dataset
from services.common.jsonfmt import enum_to_json
from services.common.preprocessing import preprocess_images
from services.common.table_dataset import load_table_dataset, table_feeds
from services.common.text_dataset import load_text_dataset
from services.common.text_preprocessing import encode_texts, load_tokenizer
from services.model import export, training, zoo
from traineragent.v1 import common_pb2, model_pb2

PathLike = str | os.PathLike[str]
FORMAT_KEY = b"traineragent.format"
PARITY_EXAMPLES = 32
# What each dataset format can learn, and the task it serves.
FORMAT_TASKS = {
    "image_folder": ("image_classification",),
    "text": ("text_classification",),
    "table": ("tabular_classification", "tabular_regression"),
}


@dataclasses.dataclass
class TrialHooks:
    """How a trial talks to the world while it runs: progress and cancellation (all optional)."""

    on_epoch: Callable[[training.EpochReport], None] | None = None
    on_setting: Callable[[Any], None] | None = None  # table models: one call per setting tried
    should_stop: Callable[[], bool] | None = None


def dataset_format(path: PathLike) -> str:
    """The artifact's ``traineragent.format`` (image_folder | text | table); DataError otherwise."""
    try:
        metadata = pq.read_schema(str(path)).metadata or {}
        fmt = json.loads(metadata[FORMAT_KEY])
    except KeyError as exc:
        raise DataError(f"{pathlib.Path(path).name} is not a dataset artifact: it has no {FORMAT_KEY.decode()}") from exc
    except (OSError, ValueError) as exc:
        raise DataError(f"{pathlib.Path(path).name} is not a readable dataset artifact: {exc}") from exc
    if fmt not in FORMAT_TASKS:
        raise DataError(f"dataset format {fmt!r} is not one the workers train on ({', '.join(FORMAT_TASKS)})")
    return str(fmt)


def run_trial(spec: model_pb2.TrialSpec, dataset_path: PathLike, out_dir: PathLike, *, device: str,
              worker: str = "", default_max_epochs: int = 30, deadline_unix: float,
              hooks: TrialHooks | None = None) -> common_pb2.TrialResult:
    """Train ``spec.candidate`` on the dataset artifact and leave model.onnx and bundle.tar in ``out_dir``."""
    hooks = hooks or TrialHooks()
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fmt = dataset_format(dataset_path)
    candidate = zoo.get_candidate(spec.candidate) if spec.candidate else None
    if candidate is None or not set(candidate.task_types) & set(FORMAT_TASKS[fmt]):
        known = ", ".join(c.name for c in zoo.load_catalogue() if set(c.task_types) & set(FORMAT_TASKS[fmt]))
        raise InvalidArgument(f"candidate {spec.candidate!r} cannot learn a {fmt} dataset; candidates that can: {known}")
    hp = json.loads(spec.hyperparameters_json or "{}")
    seed = int(hp.get("seed", 0))
    max_epochs = spec.max_epochs or default_max_epochs
    runner = {"image_folder": _image_trial, "text": _text_trial, "table": _table_trial}[fmt]
    result = runner(spec, dataset_path, out, hp, seed=seed, device=device, max_epochs=max_epochs,
                    deadline_unix=deadline_unix, hooks=hooks)
    result.trial_id = spec.trial_id
    result.candidate = spec.candidate
    result.hyperparameters_json = spec.hyperparameters_json
    result.worker = worker
    result.model_size_mb = round((out / "model.onnx").stat().st_size / 1e6, 4)
    return result


def _from_torch_outcome(outcome: training.TrainOutcome, parity: float, latency_ms: float) -> common_pb2.TrialResult:
    return common_pb2.TrialResult(
        validation_metrics=outcome.validation_metrics, test_metrics=outcome.test_metrics,
        epochs=outcome.epochs, best_epoch=outcome.best_epoch, train_seconds=round(outcome.train_seconds, 3),
        device=outcome.device, num_parameters=outcome.num_parameters, parity_max_abs_diff=parity,
        stop_reason=outcome.stop_reason, onnx_latency_ms=round(latency_ms, 4),
    )


def _image_trial(spec: model_pb2.TrialSpec, dataset_path: PathLike, out: pathlib.Path, hp: dict[str, Any], *,
                 seed: int, device: str, max_epochs: int, deadline_unix: float,
                 hooks: TrialHooks) -> common_pb2.TrialResult:
    splits = load_image_dataset(dataset_path)
    outcome = training.train_image_classifier(
        splits, spec.candidate, hp, max_epochs=max_epochs, deadline_unix=deadline_unix, on_epoch=hooks.on_epoch,
        should_stop=hooks.should_stop, device=device, seed=seed)
    onnx_path = out / "model.onnx"
    export.export_onnx(outcome.model, splits.spec, onnx_path, len(splits.classes))
    sample = preprocess_images(splits.test_images[:PARITY_EXAMPLES], splits.spec)
    parity = export.check_parity(outcome.model, onnx_path, sample)
    latency = export.measure_onnx_latency_ms(onnx_path, sample[:1])
    task = enum_to_json(common_pb2.TaskType.DESCRIPTOR, spec.task_type) or "image_classification"
    description = bundle.build_bundle_dict(task, splits.classes, splits.spec, spec.candidate, outcome.test_metrics,
                                           list(splits.test_images[:8]), opset=export.OPSET)
    bundle.write_bundle(out / "bundle.tar", onnx_path, description)
    return _from_torch_outcome(outcome, parity, latency)


def _parity_texts(texts: list[str]) -> list[str]:
    """Up to PARITY_EXAMPLES texts, the first of them of a length the others do not all share."""
    chosen = list(texts[:PARITY_EXAMPLES])
    if len({len(t.split()) for t in chosen}) < 2:
        chosen.append(" ".join([chosen[0] if chosen else "", "a longer text than the others"]))
    if len(chosen) < 2:
        chosen.append("a short text")
    return chosen


def _text_trial(spec: model_pb2.TrialSpec, dataset_path: PathLike, out: pathlib.Path, hp: dict[str, Any], *,
                seed: int, device: str, max_epochs: int, deadline_unix: float,
                hooks: TrialHooks) -> common_pb2.TrialResult:
    from services.model import text_export, text_training  # torch-heavy; only text workers need it

    splits = load_text_dataset(dataset_path)
    outcome = text_training.train_text_classifier(
        splits, spec.candidate, hp, max_epochs=max_epochs, deadline_unix=deadline_unix, on_epoch=hooks.on_epoch,
        should_stop=hooks.should_stop, device=device, seed=seed, work_dir=out / "preprocessing")
    onnx_path = out / "model.onnx"
    text_export.export_text_onnx(outcome.model, outcome.preprocessing, onnx_path, len(splits.classes))
    tokenizer = load_tokenizer(outcome.tokenizer_path, outcome.preprocessing) if outcome.tokenizer_path else None
    feeds = encode_texts(_parity_texts(splits.test_texts or splits.validation_texts), outcome.preprocessing, tokenizer)
    parity = text_export.check_text_parity(outcome.model, onnx_path, feeds)
    latency = text_export.measure_text_latency_ms(onnx_path, feeds)
    description = text_export.build_text_bundle_dict(splits.classes, outcome.preprocessing, spec.candidate,
                                                     outcome.test_metrics, splits.test_texts[:8], text_export.OPSET)
    text_export.build_text_bundle(out / "bundle.tar", onnx_path, description, outcome.tokenizer_path)
    return _from_torch_outcome(outcome, parity, latency)


def _table_trial(spec: model_pb2.TrialSpec, dataset_path: PathLike, out: pathlib.Path, hp: dict[str, Any], *,
                 seed: int, device: str, max_epochs: int, deadline_unix: float,
                 hooks: TrialHooks) -> common_pb2.TrialResult:
    from services.model import tabular, tabular_export

    splits = load_table_dataset(dataset_path)
    if spec.selection_metric:
        hp = {**hp, "selection_metric": spec.selection_metric}
    hp.pop("seed", None)
    outcome = tabular.train_table_model(splits, spec.candidate, hp, deadline_unix=deadline_unix, seed=seed,
                                        should_stop=hooks.should_stop, on_trial=hooks.on_setting)
    onnx_path = out / "model.onnx"
    tabular_export.export_table_onnx(outcome.pipeline, splits.spec, onnx_path)
    rows = splits.X_test if len(splits.X_test) else splits.X_validation
    parity = tabular_export.check_table_parity(outcome.pipeline, splits.spec, onnx_path, rows.iloc[:64])
    latency = tabular_export.measure_table_latency_ms(onnx_path, table_feeds(rows.iloc[:1], splits.spec))
    description = tabular_export.build_table_bundle_dict(splits.spec, spec.candidate, outcome.test_metrics,
                                                         rows.iloc[:8], tabular_export.OPSET)
    tabular_export.write_table_bundle(out / "bundle.tar", onnx_path, description)
    return common_pb2.TrialResult(
        validation_metrics=outcome.validation_metrics, test_metrics=outcome.test_metrics,
        # For table models an "epoch" is one setting of the candidate's small search.
        epochs=len(outcome.trials),
        best_epoch=next((i + 1 for i, t in enumerate(outcome.trials) if t.hyperparameters is outcome.hyperparameters), 0),
        train_seconds=round(outcome.train_seconds, 3), device="cpu",
        num_parameters=_table_parameters(outcome.pipeline), parity_max_abs_diff=parity,
        stop_reason=outcome.stop_reason, onnx_latency_ms=round(latency, 4),
    )


def _table_parameters(pipeline: Any) -> int:
    """A size figure comparable across table models: tree nodes for boosting, weights for an MLP."""
    model = pipeline.named_steps["model"]
    if hasattr(model, "coefs_"):
        return int(sum(w.size for w in model.coefs_) + sum(b.size for b in model.intercepts_))
    predictors = getattr(model, "_predictors", None) or []
    return int(sum(len(tree.nodes) for stage in predictors for tree in stage))
