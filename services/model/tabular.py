"""Training table models: one scikit-learn Pipeline per candidate, chosen on validation, judged on test.

Each candidate is a whole pipeline, preprocessing included, so the exported ONNX graph
(:mod:`services.model.tabular_export`) takes raw columns: numeric columns are median-imputed (and
standardised for the MLP), categorical ones get a "missing" category for nulls and a one-hot
encoding that ignores categories never seen in training. The inputs are always
:func:`services.common.table_dataset.canonical_table_frame` rows, the values the endpoint will see.

Candidates:

* ``gbdt``: HistGradientBoostingClassifier/Regressor. Each setting of the small search is fitted
  once at its largest ``max_iter``; the number of boosting rounds is read off the validation loss of
  the staged predictions, and the winner is refitted with exactly that many rounds.
  Split thresholds are stored as float32 values that split every float32 input the same way
  (see :func:`_float32_thresholds`), so the float32 ONNX trees take the same branches.
* ``mlp``: MLPClassifier/MLPRegressor, trained epoch by epoch with early stopping on the validation
  split (the best epoch's weights are kept). The regressor learns standardised targets and the
  scale is folded back into its output layer afterwards, so the fitted model predicts in the
  target's units and converts to ONNX as a plain MLPRegressor.

Categorical columns keep one-hot columns for their ``max_categories`` most frequent training
values only; rarer ones are encoded like unseen ones (all zeros), so an identifier-like column
cannot blow up the model. (skl2onnx 1.20 cannot convert OneHotEncoder's own infrequent grouping.)

Settings are tried in order until the deadline; the first is always trained.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from services.common.errors import DataError
from services.common.table_dataset import MISSING_CATEGORY, TableSpec, TableSplits, canonical_table_frame
from services.model.training import classification_metrics
from services.model.zoo import get_candidate

TABLE_CANDIDATES = ("gbdt", "mlp")
MISSING_FILL = "missing"  # the category a missing value becomes inside the model

# Starting points; the zoo's entry for the candidate (zoo.yaml), when it has one, overrides these,
# and the caller's hp override both. "search" lists the settings tried, each over the base values.
DEFAULT_HYPERPARAMETERS: dict[str, dict[str, Any]] = {
    "gbdt": {
        "learning_rate": 0.05,
        "max_iter": 400,
        "max_leaf_nodes": 15,
        "min_samples_leaf": 10,
        "l2_regularization": 0.0,
        "max_bins": 255,
        "max_categories": 32,
        "search": [
            {},
            {"max_leaf_nodes": 31, "min_samples_leaf": 20},
            {"max_leaf_nodes": 7, "min_samples_leaf": 5, "l2_regularization": 1.0},
            {"learning_rate": 0.1, "max_iter": 200, "max_leaf_nodes": 4, "min_samples_leaf": 10},
        ],
    },
    "mlp": {
        "hidden_layer_sizes": [64],
        "alpha": 0.0001,
        "learning_rate_init": 0.003,
        "batch_size": 32,
        "max_epochs": 300,
        "patience": 25,
        "max_categories": 32,
        "search": [
            {},
            {"hidden_layer_sizes": [128, 64]},
            {"hidden_layer_sizes": [64], "alpha": 0.01},
            {"hidden_layer_sizes": [32], "alpha": 0.1},
        ],
    },
}
_GBDT_PARAMS = ("learning_rate", "max_iter", "max_leaf_nodes", "min_samples_leaf", "l2_regularization", "max_bins")
_MLP_PARAMS = ("hidden_layer_sizes", "alpha", "learning_rate_init", "batch_size", "max_epochs", "patience")


@dataclasses.dataclass
class TableTrial:
    """One setting of the search and how it did on validation."""

    hyperparameters: dict[str, Any]
    validation_metrics: dict[str, float]
    seconds: float


@dataclasses.dataclass
class TableOutcome:
    pipeline: Pipeline  # fitted: preprocessing + estimator; takes canonical_table_frame rows
    validation_metrics: dict[str, float]
    test_metrics: dict[str, float]
    train_seconds: float
    candidate: str
    stop_reason: str  # completed | deadline | cancelled
    hyperparameters: dict[str, Any]  # the chosen setting (for gbdt, max_iter is the rounds kept)
    trials: list[TableTrial]


# --- hyper-parameters and pipelines ---------------------------------------------------------------


def candidate_defaults(candidate: str) -> dict[str, Any]:
    """The candidate's starting hyper-parameters: code defaults, then the zoo's entry if it has one."""
    if candidate not in TABLE_CANDIDATES:
        raise ValueError(f"unknown table model {candidate!r}; table models are {', '.join(TABLE_CANDIDATES)}")
    hp = dict(DEFAULT_HYPERPARAMETERS[candidate])
    try:
        hp.update(get_candidate(candidate).default_hyperparameters)
    except ValueError:
        pass  # not (yet) in the catalogue: the code's defaults
    return hp


def _preprocessor(spec: TableSpec, scale_numeric: bool) -> ColumnTransformer:
    transformers = []
    if spec.numeric_features:
        steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median", keep_empty_features=True))]
        if scale_numeric:
            steps.append(("scale", StandardScaler()))
        transformers.append(("numeric", Pipeline(steps), spec.numeric_features))
    if spec.categorical_features:
        # Inputs hold MISSING_CATEGORY for a null (string tensors have none); the imputer names it.
        transformers.append(("categorical", Pipeline([
            ("impute", SimpleImputer(missing_values=MISSING_CATEGORY, strategy="constant", fill_value=MISSING_FILL)),
            ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float64)),
        ]), spec.categorical_features))
    return ColumnTransformer(transformers, remainder="drop", sparse_threshold=0.0)


def _frequent_categories(frame: pd.DataFrame, columns: Sequence[str], limit: int) -> list[list[str]]:
    """Per column, the ``limit`` most frequent values (a null counts as MISSING_FILL), sorted."""
    kept = []
    for column in columns:
        counts = frame[column].where(frame[column] != MISSING_CATEGORY, MISSING_FILL).value_counts()
        ranked = sorted(counts.items(), key=lambda item: (-item[1], str(item[0])))
        kept.append(sorted(str(value) for value, _ in ranked[:limit]))
    return kept


def _estimator(candidate: str, task: str, hp: Mapping[str, Any], seed: int) -> Any:
    if candidate == "gbdt":
        params = {k: hp[k] for k in _GBDT_PARAMS if k in hp}
        params["max_iter"] = int(params.get("max_iter", 100))
        cls = HistGradientBoostingClassifier if task == "classification" else HistGradientBoostingRegressor
        # Our validation split picks the rounds; no internal hold-out, no native categorical splits
        # (the one-hot encoding is what the ONNX graph reproduces).
        return cls(early_stopping=False, categorical_features=None, random_state=seed, **params)
    cls = MLPClassifier if task == "classification" else MLPRegressor
    # Early stopping is ours, on the validation split (see _fit_mlp), not sklearn's 10% of train.
    return cls(hidden_layer_sizes=tuple(int(h) for h in hp.get("hidden_layer_sizes", [64])),
               alpha=float(hp.get("alpha", 1e-4)), learning_rate_init=float(hp.get("learning_rate_init", 1e-3)),
               batch_size=int(hp.get("batch_size", 32)), max_iter=int(hp.get("max_epochs", 300)),
               early_stopping=False, shuffle=True, random_state=seed)


def build_pipeline(candidate: str, spec: TableSpec, hp: Mapping[str, Any] | None = None, seed: int = 0) -> Pipeline:
    """An unfitted pipeline: ColumnTransformer (impute, scale, one-hot) then the candidate's estimator.

    ``max_categories`` needs the training data, so :func:`train_table_model` applies it."""
    hp = {**candidate_defaults(candidate), **(hp or {})}
    return Pipeline([
        ("preprocess", _preprocessor(spec, scale_numeric=candidate == "mlp")),
        ("model", _estimator(candidate, spec.task, hp, seed)),
    ])


# --- metrics --------------------------------------------------------------------------------------


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if y_true.size == 0:
        return {"mae": 0.0, "rmse": 0.0, "r2": 0.0}
    return {
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "rmse": float(math.sqrt(mean_squared_error(y_true, y_pred))),
        "r2": float(r2_score(y_true, y_pred)) if y_true.size > 1 else 0.0,
    }


def predict_table(pipeline: Pipeline, spec: TableSpec, rows: Any) -> np.ndarray:
    """Class probabilities [N, C] in the spec's order, or predictions [N], for raw rows."""
    frame = canonical_table_frame(rows, spec)
    if spec.task == "classification":
        return pipeline.predict_proba(frame)
    return pipeline.predict(frame).reshape(-1)


def table_metrics(pipeline: Pipeline, spec: TableSpec, rows: Any, labels: Sequence[Any]) -> dict[str, float]:
    """classification: accuracy, f1, precision, recall (macro; predicted class = argmax of the scores,
    as the endpoint does); regression: mae, rmse, r2."""
    if spec.task == "classification":
        y_true = _class_indices(labels, spec)
        if len(y_true) == 0:
            return classification_metrics(y_true, y_true, len(spec.classes))
        return classification_metrics(y_true, predict_table(pipeline, spec, rows).argmax(axis=1), len(spec.classes))
    y_true = np.asarray(labels, dtype=np.float64)
    return regression_metrics(y_true, predict_table(pipeline, spec, rows) if len(y_true) else y_true)


def _class_indices(labels: Sequence[Any], spec: TableSpec) -> np.ndarray:
    index = {name: i for i, name in enumerate(spec.classes)}
    try:
        return np.asarray([index[str(v)] for v in labels], dtype=np.int64)
    except KeyError as exc:
        raise DataError(f"label {exc} is not among the classes {spec.classes}") from exc


# --- the search -----------------------------------------------------------------------------------


def _log_loss(y: np.ndarray, proba: np.ndarray) -> float:
    picked = proba[np.arange(len(y)), y]
    return float(-np.mean(np.log(np.clip(picked, 1e-15, 1.0))))


def _selection_key(task: str, metrics: Mapping[str, float], selection_metric: str) -> tuple[float, ...]:
    """Higher is better. Classification: the metric, then lower validation log loss breaks ties."""
    if task == "classification":
        return (metrics[selection_metric], -metrics.get("log_loss", 0.0))
    sign = 1.0 if selection_metric == "r2" else -1.0
    return (sign * metrics[selection_metric],)


def _validation_metrics(task: str, y: np.ndarray, output: np.ndarray, num_classes: int) -> dict[str, float]:
    if task == "classification":
        return {**classification_metrics(y, output.argmax(axis=1), num_classes), "log_loss": _log_loss(y, output)}
    return regression_metrics(y, output)


def _fit_gbdt(estimator: Any, setting: Mapping[str, Any], task: str, x_train: np.ndarray, y_train: np.ndarray,
              x_val: np.ndarray, y_val: np.ndarray, num_classes: int,
              deadline_unix: float) -> tuple[Any, dict[str, float], int]:
    """Fit at max_iter; keep the round count with the lowest validation loss (refitted to exactly that)."""
    estimator.fit(x_train, y_train)
    if task == "classification":
        stages = estimator.staged_predict_proba(x_val)
        losses = [_log_loss(y_val, p) for p in stages]
    else:
        stages = estimator.staged_predict(x_val)
        losses = [float(np.mean((y_val - p) ** 2)) for p in stages]
    best_rounds = int(np.argmin(losses)) + 1
    if best_rounds < estimator.n_iter_:
        # Without subsampling or internal early stopping the first rounds are the same trees.
        estimator = clone(estimator).set_params(max_iter=best_rounds).fit(x_train, y_train)
    _float32_thresholds(estimator)
    output = estimator.predict_proba(x_val) if task == "classification" else estimator.predict(x_val)
    return estimator, _validation_metrics(task, y_val, output, num_classes), best_rounds


def _float32_thresholds(estimator: Any) -> None:
    """Store every split threshold t as the largest float32 <= t.

    Model inputs are float32 values (the endpoint's tensors; canonical_table_frame rounds training
    rows the same way), and for a float32 x, ``x <= t`` exactly when ``x <= float32_floor(t)``: the
    model's predictions do not change. The ONNX tree ensemble keeps thresholds as float32, where
    rounding t to the *nearest* float32 can land on a data value: a midpoint such as 23.7 between
    23.6 and 23.8 would send 23.7 left in ONNX and right in scikit-learn.
    """
    for iteration in estimator._predictors:
        for predictor in iteration:
            nodes = predictor.nodes
            split = nodes["is_leaf"] == 0
            thresholds = nodes["num_threshold"][split]
            with np.errstate(over="ignore"):
                rounded = thresholds.astype(np.float32)
            rounded = np.where(rounded.astype(np.float64) > thresholds,
                               np.nextafter(rounded, np.float32(-np.inf)), rounded)
            nodes["num_threshold"][split] = rounded.astype(np.float64)


def _fit_mlp(estimator: Any, setting: Mapping[str, Any], task: str, x_train: np.ndarray, y_train: np.ndarray,
             x_val: np.ndarray, y_val: np.ndarray, num_classes: int,
             deadline_unix: float) -> tuple[Any, dict[str, float], int]:
    """Epochs of ``partial_fit`` while the validation loss improves within ``patience`` epochs; the
    weights of the best epoch are kept. A small table cannot spare sklearn's own 10% hold-out."""
    max_epochs, patience = int(setting.get("max_epochs", 300)), int(setting.get("patience", 25))
    if task == "regression":
        # Adam on raw targets of size 100s crawls: learn z-scores, fold the scale back in at the end.
        mean, std = float(np.mean(y_train)), float(np.std(y_train)) or 1.0
        target, val_target = (y_train - mean) / std, (y_val - mean) / std
    best_loss, best_epoch, epoch = math.inf, 0, 0
    best_weights: tuple[list[np.ndarray], list[np.ndarray]] | None = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for epoch in range(1, max_epochs + 1):
            if task == "classification":
                estimator.partial_fit(x_train, y_train, classes=np.arange(num_classes))
                loss = _log_loss(y_val, estimator.predict_proba(x_val))
            else:
                estimator.partial_fit(x_train, target)
                loss = float(np.mean((val_target - estimator.predict(x_val)) ** 2))
            if not math.isfinite(loss):
                break
            if loss < best_loss - 1e-6:
                best_loss, best_epoch = loss, epoch
                best_weights = ([c.copy() for c in estimator.coefs_], [b.copy() for b in estimator.intercepts_])
            if epoch - best_epoch >= patience or time.time() >= deadline_unix:
                break
    if best_weights is not None:
        estimator.coefs_, estimator.intercepts_ = best_weights
    if task == "regression":
        # The output layer is linear: y = std * (h W + b) + mean = h (std W) + (std b + mean).
        estimator.coefs_[-1] = estimator.coefs_[-1] * std
        estimator.intercepts_[-1] = estimator.intercepts_[-1] * std + mean
        output = estimator.predict(x_val)
    else:
        output = estimator.predict_proba(x_val)
    return estimator, _validation_metrics(task, y_val, output, num_classes), best_epoch


def _search_settings(hp: Mapping[str, Any]) -> list[dict[str, Any]]:
    base = {k: v for k, v in hp.items() if k != "search"}
    search = hp.get("search") or [{}]
    return [{**base, **dict(override)} for override in search]


def train_table_model(
    splits: TableSplits,
    candidate: str,
    hp: Mapping[str, Any] | None = None,
    *,
    deadline_unix: float,
    seed: int = 0,
    should_stop: Callable[[], bool] | None = None,
    on_trial: Callable[[TableTrial], None] | None = None,
) -> TableOutcome:
    """Try the candidate's settings on train, choose on validation, report validation and test metrics.

    ``hp`` overrides the defaults (``search: []`` or ``search: [{}]`` trains just the base setting);
    ``selection_metric`` (accuracy/f1/precision/recall, or mae/rmse/r2) says what validation picks
    by (accuracy, and mae, by default). Settings run in order while the time spent on the slowest so
    far still fits before ``deadline_unix``; the first always runs.
    """
    started = time.time()
    spec = splits.spec
    hp = {**candidate_defaults(candidate), **(hp or {})}
    task = spec.task
    selection_metric = str(hp.get("selection_metric", "accuracy" if task == "classification" else "mae"))
    allowed = ("accuracy", "f1", "precision", "recall") if task == "classification" else ("mae", "rmse", "r2")
    if selection_metric not in allowed:
        raise ValueError(f"selection_metric {selection_metric!r} does not fit {task}; use one of {', '.join(allowed)}")
    if len(splits.X_train) == 0 or len(splits.X_validation) == 0:
        raise DataError("training needs rows in both the train and the validation split")
    num_classes = len(spec.classes)
    if task == "classification":
        y_train, y_val = splits.label_indices("train"), splits.label_indices("validation")
        absent = [spec.classes[i] for i in sorted(set(range(num_classes)) - set(y_train.tolist()))]
        if absent:
            raise DataError(f"classes {absent} have no rows in the train split; every class needs some")
    else:
        y_train = splits.y_train.to_numpy(dtype=np.float64)
        y_val = splits.y_validation.to_numpy(dtype=np.float64)

    template = build_pipeline(candidate, spec, hp, seed)
    preprocess = template.named_steps["preprocess"]
    train_frame = canonical_table_frame(splits.X_train, spec)
    if spec.categorical_features and hp.get("max_categories"):
        categories = _frequent_categories(train_frame, spec.categorical_features, int(hp["max_categories"]))
        preprocess.set_params(categorical__onehot__categories=categories)
    x_train = preprocess.fit_transform(train_frame)
    x_val = preprocess.transform(canonical_table_frame(splits.X_validation, spec))
    fit = _fit_gbdt if candidate == "gbdt" else _fit_mlp

    trials: list[TableTrial] = []
    best: tuple[tuple[float, ...], Any, dict[str, Any], dict[str, float]] | None = None
    stop_reason, slowest = "completed", 0.0
    for i, setting in enumerate(_search_settings(hp)):
        if i > 0:
            if should_stop is not None and should_stop():
                stop_reason = "cancelled"
                break
            if time.time() + slowest > deadline_unix:
                stop_reason = "deadline"
                break
        trial_started = time.time()
        estimator = _estimator(candidate, task, setting, seed)
        estimator, metrics, rounds = fit(estimator, setting, task, x_train, y_train, x_val, y_val, num_classes,
                                         deadline_unix)
        chosen = {k: v for k, v in setting.items() if k in (_GBDT_PARAMS if candidate == "gbdt" else _MLP_PARAMS)}
        chosen["max_iter" if candidate == "gbdt" else "epochs"] = rounds
        trial = TableTrial(hyperparameters=chosen, validation_metrics=metrics, seconds=time.time() - trial_started)
        trials.append(trial)
        slowest = max(slowest, trial.seconds)
        if on_trial is not None:
            on_trial(trial)
        key = _selection_key(task, metrics, selection_metric)
        if best is None or key > best[0]:
            best = (key, estimator, chosen, metrics)

    assert best is not None  # the first setting always runs
    if stop_reason == "completed" and time.time() >= deadline_unix:
        stop_reason = "deadline"  # the last setting ran into it (an MLP stops its epochs there)
    _, estimator, chosen, _ = best
    pipeline = Pipeline([("preprocess", preprocess), ("model", estimator)])
    validation = table_metrics(pipeline, spec, splits.X_validation, splits.y_validation)
    test = table_metrics(pipeline, spec, splits.X_test, splits.y_test)
    return TableOutcome(pipeline=pipeline, validation_metrics=validation, test_metrics=test,
                        train_seconds=time.time() - started, candidate=candidate, stop_reason=stop_reason,
                        hyperparameters=chosen, trials=trials)

