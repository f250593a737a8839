"""The table dataset artifact (docs/formats.md) and the one way table rows become model inputs.

One Parquet file per dataset: the feature columns under their original names (numeric as float64,
categorical as string, nulls kept), the target column and a ``__split__`` column; the
:class:`TableSpec` (task, label column, feature kinds, classes, dropped columns) in the file's
metadata, so the artifact alone is enough to train on.

:func:`canonical_table_frame` is the single definition of how raw values become model inputs, used by
training, the parity check and the endpoint (through :func:`table_feeds`): numbers go through
float32, because the endpoint's numeric tensors are FP32, and a missing category becomes
:data:`MISSING_CATEGORY`, because a string tensor cannot hold a null. The model's own imputer turns
that marker into its "missing" category in scikit-learn and in ONNX alike. Only pandas, numpy and
pyarrow here: the Server agent imports this module without the training stack.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from services.common.errors import DataError, InvalidArgument

SPLITS = ("train", "validation", "test")
SPLIT_COLUMN = "__split__"
FORMAT_KEY = b"traineragent.format"
TABLE_KEY = b"traineragent.table"
TABLE_FORMAT = "table"
TASKS = ("classification", "regression")
KINDS = ("numeric", "categorical")
# What a missing categorical value is in a model input: string tensors have no null.
MISSING_CATEGORY = ""
PathLike = str | os.PathLike[str]


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """One input column: its name in the user's data and how the model reads it."""

    name: str
    kind: str  # numeric | categorical

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"feature {self.name!r} has kind {self.kind!r}; kinds are {', '.join(KINDS)}")


@dataclasses.dataclass
class TableSpec:
    """What a table dataset holds: the task, the target, the features and what was left out."""

    task: str  # classification | regression
    label_column: str
    features: list[FeatureSpec]
    classes: list[str] = dataclasses.field(default_factory=list)  # classification: the model's order
    dropped: list[dict[str, str]] = dataclasses.field(default_factory=list)  # [{"name", "why"}]

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"table task {self.task!r} is not one of {', '.join(TASKS)}")
        names = [f.name for f in self.features]
        if not names:
            raise ValueError("a table needs at least one feature column")
        if len(set(names)) != len(names):
            raise ValueError(f"feature names repeat: {sorted({n for n in names if names.count(n) > 1})}")
        if self.label_column in names:
            raise ValueError(f"the label column {self.label_column!r} is also a feature")
        if SPLIT_COLUMN in names or self.label_column == SPLIT_COLUMN:
            raise ValueError(f"{SPLIT_COLUMN!r} is reserved for the split column")
        if self.task == "classification" and len(self.classes) < 2:
            raise ValueError(f"a classification table needs at least 2 classes, not {self.classes}")
        if self.task == "regression" and self.classes:
            raise ValueError("a regression table has no classes")

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def numeric_features(self) -> list[str]:
        return [f.name for f in self.features if f.kind == "numeric"]

    @property
    def categorical_features(self) -> list[str]:
        return [f.name for f in self.features if f.kind == "categorical"]

    @property
    def task_type(self) -> str:
        """The TaskSpec's name for this task: tabular_classification | tabular_regression."""
        return f"tabular_{self.task}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "label_column": self.label_column,
            "features": [{"name": f.name, "kind": f.kind} for f in self.features],
            "classes": list(self.classes),
            "dropped": [dict(d) for d in self.dropped],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> TableSpec:
        return cls(
            task=str(raw["task"]),
            label_column=str(raw["label_column"]),
            features=[FeatureSpec(name=str(f["name"]), kind=str(f["kind"])) for f in raw["features"]],
            classes=[str(c) for c in raw.get("classes") or []],
            dropped=[{str(k): str(v) for k, v in d.items()} for d in raw.get("dropped") or []],
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> TableSpec:
        return cls.from_dict(json.loads(text))


@dataclasses.dataclass
class TableSplits:
    """A table dataset artifact in memory: features and labels per split, as stored, and the spec.

    Features keep the stored types (float64 with NaN, strings with nulls); labels are the class
    names (classification) or float64 values (regression). :meth:`label_indices` gives the class
    indices in the spec's order.
    """

    spec: TableSpec
    X_train: pd.DataFrame
    y_train: pd.Series
    X_validation: pd.DataFrame
    y_validation: pd.Series
    X_test: pd.DataFrame
    y_test: pd.Series

    def features(self, split: str) -> pd.DataFrame:
        return getattr(self, f"X_{split}")

    def labels(self, split: str) -> pd.Series:
        return getattr(self, f"y_{split}")

    def label_indices(self, split: str) -> np.ndarray:
        if self.spec.task != "classification":
            raise ValueError("class indices exist only for classification tables")
        index = {name: i for i, name in enumerate(self.spec.classes)}
        return np.asarray([index[v] for v in self.labels(split)], dtype=np.int64)


# --- writing and reading the artifact -------------------------------------------------------------


def _numeric_column(values: pd.Series, name: str) -> np.ndarray:
    try:
        return pd.to_numeric(values, errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
    except (ValueError, TypeError) as exc:
        raise DataError(f"column {name!r} is numeric in the table spec but holds a non-number: {exc}") from exc


def _string_column(values: pd.Series) -> list[str | None]:
    return [None if _is_missing(v) else str(v) for v in values]


def write_table_dataset(path: PathLike, frame: pd.DataFrame, split: Sequence[str], spec: TableSpec) -> int:
    """Write the table dataset artifact (docs/formats.md): the spec's features, its label, ``__split__``.

    The one writer of the format, so the reader below always agrees. ``split`` holds one of
    train/validation/test per row of ``frame``; columns of ``frame`` that the spec does not name are
    not written. Labels may not be missing, and classification labels must be among the spec's
    classes. Returns the number of rows written.
    """
    if len(split) != len(frame):
        raise ValueError(f"{len(split)} split names for {len(frame)} rows")
    bad_splits = sorted({str(s) for s in split} - set(SPLITS))
    if bad_splits:
        raise ValueError(f"split names {bad_splits} are not among {', '.join(SPLITS)}")
    missing = [c for c in [*spec.feature_names, spec.label_column] if c not in frame.columns]
    if missing:
        raise DataError(f"the table lacks columns {missing}; it has {[str(c) for c in frame.columns]}")

    arrays: list[pa.Array] = []
    fields: list[pa.Field] = []
    for feature in spec.features:
        column = frame[feature.name]
        if feature.kind == "numeric":
            arrays.append(pa.array(_numeric_column(column, feature.name), type=pa.float64(), from_pandas=True))
            fields.append(pa.field(feature.name, pa.float64()))
        else:
            arrays.append(pa.array(_string_column(column), type=pa.string()))
            fields.append(pa.field(feature.name, pa.string()))

    labels = frame[spec.label_column]
    if any(_is_missing(v) for v in labels):
        raise DataError(f"the label column {spec.label_column!r} has missing values; drop those rows first")
    if spec.task == "classification":
        label_values = [str(v) for v in labels]
        unknown = sorted(set(label_values) - set(spec.classes))
        if unknown:
            raise DataError(f"labels {unknown[:5]} are not among the classes {spec.classes}")
        arrays.append(pa.array(label_values, type=pa.string()))
        fields.append(pa.field(spec.label_column, pa.string()))
    else:
        arrays.append(pa.array(_numeric_column(labels, spec.label_column), type=pa.float64()))
        fields.append(pa.field(spec.label_column, pa.float64()))
    arrays.append(pa.array([str(s) for s in split], type=pa.string()))
    fields.append(pa.field(SPLIT_COLUMN, pa.string()))

    schema = pa.schema(fields).with_metadata({
        FORMAT_KEY: json.dumps(TABLE_FORMAT).encode(),
        TABLE_KEY: spec.to_json().encode(),
    })
    pq.write_table(pa.Table.from_arrays(arrays, schema=schema), str(path))
    return len(frame)


def read_table_spec(path: PathLike) -> TableSpec:
    """The spec in a table artifact's metadata; DataError when the file is not a table artifact."""
    name = pathlib.Path(path).name
    try:
        metadata = pq.read_schema(str(path)).metadata or {}
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{name} is not a readable Parquet file: {exc}") from exc
    try:
        fmt = json.loads(metadata[FORMAT_KEY])
        raw = metadata[TABLE_KEY]
    except KeyError as exc:
        raise DataError(f"{name} is not a table dataset artifact: metadata {exc} is missing") from exc
    if fmt != TABLE_FORMAT:
        raise DataError(f"{name} is a {fmt!r} dataset artifact, not a table")
    try:
        return TableSpec.from_json(raw.decode())
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{name} has an unreadable table spec in its metadata: {exc}") from exc


def load_table_dataset(path: PathLike) -> TableSplits:
    """Read a table artifact into per-split frames; a file that is not one raises DataError."""
    spec = read_table_spec(path)
    columns = [*spec.feature_names, spec.label_column, SPLIT_COLUMN]
    table = pq.read_table(str(path))
    absent = [c for c in columns if c not in table.column_names]
    if absent:
        raise DataError(f"{pathlib.Path(path).name} lacks the columns {absent} its table spec names")
    data: dict[str, Any] = {}
    for feature in spec.features:
        column = table.column(feature.name)
        if feature.kind == "numeric":
            data[feature.name] = column.to_numpy().astype(np.float64)
        else:
            data[feature.name] = np.asarray(column.to_pylist(), dtype=object)
    frame = pd.DataFrame(data, columns=spec.feature_names)
    label_values = table.column(spec.label_column).to_pylist()
    if any(v is None for v in label_values):
        raise DataError(f"the label column {spec.label_column!r} has missing values")
    if spec.task == "classification":
        labels = pd.Series([str(v) for v in label_values], dtype=object, name=spec.label_column)
        unknown = sorted(set(labels) - set(spec.classes))
        if unknown:
            raise DataError(f"the dataset has labels {unknown[:5]} that are not among its classes {spec.classes}")
    else:
        labels = pd.Series(np.asarray(label_values, dtype=np.float64), name=spec.label_column)
    splits = np.asarray(table.column(SPLIT_COLUMN).to_pylist(), dtype=object)
    bad = sorted({str(s) for s in splits} - set(SPLITS))
    if bad:
        raise DataError(f"the dataset has rows in splits {bad}; splits are {', '.join(SPLITS)}")
    parts: dict[str, Any] = {}
    for name in SPLITS:
        mask = splits == name
        parts[f"X_{name}"] = frame.loc[mask].reset_index(drop=True)
        parts[f"y_{name}"] = labels.loc[mask].reset_index(drop=True)
    return TableSplits(spec=spec, **parts)


# --- rows -> model inputs -------------------------------------------------------------------------


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, float | np.floating):
        return math.isnan(value)
    return False


def _to_float(value: Any, column: str) -> float:
    if _is_missing(value):
        return math.nan
    if isinstance(value, bytes | np.bytes_):
        value = value.decode("utf-8")
    if isinstance(value, str):
        if not value.strip():
            return math.nan
        try:
            return float(value)
        except ValueError:
            raise InvalidArgument(f"column {column!r} is numeric; {value!r} is not a number") from None
    if isinstance(value, bool | np.bool_):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"column {column!r} is numeric; {value!r} is not a number") from None


def category_text(text: str) -> str:
    """A category string as the model reads it: blank (empty or whitespace-only) is missing, as the
    Data agent counts it when it reads the user's file."""
    return text if text.strip() else MISSING_CATEGORY


def _to_category(value: Any) -> str:
    if _is_missing(value):
        return MISSING_CATEGORY
    if isinstance(value, bytes | np.bytes_):
        value = bytes(value).decode("utf-8", errors="replace")
    return category_text(str(value))


def _columns_of(rows: pd.DataFrame | Mapping[str, Any] | Iterable[Mapping[str, Any]],
                spec: TableSpec) -> tuple[dict[str, Any], int]:
    """Values per feature column from a frame, one row as a dict, or dict rows (absent = missing)."""
    names = spec.feature_names
    if isinstance(rows, pd.DataFrame):
        absent = [n for n in names if n not in rows.columns]
        if absent:
            raise InvalidArgument(f"the rows lack the columns {absent}; the model reads {names}")
        return {n: rows[n] for n in names}, len(rows)
    if isinstance(rows, Mapping):
        rows = [rows]
    rows = list(rows)
    allowed = set(names) | {spec.label_column}
    columns: dict[str, list[Any]] = {n: [] for n in names}
    for i, row in enumerate(rows):
        unknown = sorted(str(k) for k in row if k not in allowed)
        if unknown:
            raise InvalidArgument(f"row {i} has columns {unknown} that the model does not read; "
                                  f"it reads {names}")
        for n in names:
            columns[n].append(row.get(n))
    return columns, len(rows)


def canonical_table_frame(rows: pd.DataFrame | Mapping[str, Any] | Iterable[Mapping[str, Any]],
                          spec: TableSpec) -> pd.DataFrame:
    """Rows as the model sees them: numeric float64 holding float32 values (NaN when missing or
    not finite), categorical Python strings (MISSING_CATEGORY when missing), the spec's columns in
    its order.

    Training, evaluation and the parity check feed scikit-learn this frame; :func:`table_feeds`
    is the same values as ONNX inputs, so both see exactly the same numbers.
    """
    columns, count = _columns_of(rows, spec)
    data: dict[str, Any] = {}
    for feature in spec.features:
        values = columns[feature.name]
        if feature.kind == "numeric":
            if isinstance(values, pd.Series) and pd.api.types.is_numeric_dtype(values.dtype):
                floats = values.to_numpy(dtype=np.float64, na_value=np.nan)  # the common case, vectorised
            else:
                floats = np.fromiter((_to_float(v, feature.name) for v in values), dtype=np.float64, count=count)
            with np.errstate(over="ignore", invalid="ignore"):
                narrow = floats.astype(np.float32)
            narrow[~np.isfinite(narrow)] = np.nan  # infinities (and beyond float32) count as missing
            data[feature.name] = narrow.astype(np.float64)
        else:
            data[feature.name] = np.asarray([category_text(v) if type(v) is str else _to_category(v) for v in values],
                                            dtype=object)
    return pd.DataFrame(data, columns=spec.feature_names, index=pd.RangeIndex(count))


def table_feeds(rows: pd.DataFrame | Mapping[str, Any] | Iterable[Mapping[str, Any]],
                spec: TableSpec) -> dict[str, np.ndarray]:
    """onnxruntime feeds for a table model: one [N, 1] array per feature, named as the column.

    Numeric columns are float32 (NaN for missing), categorical ones object arrays of str
    (MISSING_CATEGORY for missing); rows are a DataFrame, one dict, or dicts by column name, where
    an absent column counts as missing.
    """
    frame = canonical_table_frame(rows, spec)
    feeds: dict[str, np.ndarray] = {}
    for feature in spec.features:
        values = frame[feature.name].to_numpy()
        if feature.kind == "numeric":
            feeds[feature.name] = values.astype(np.float32).reshape(-1, 1)
        else:
            feeds[feature.name] = values.astype(object).reshape(-1, 1)
    return feeds


def json_safe_rows(frame: pd.DataFrame, spec: TableSpec, limit: int | None = None) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts by column name (None for missing), e.g. a bundle's sample inputs."""
    rows = []
    for _, row in frame.head(limit if limit is not None else len(frame)).iterrows():
        item: dict[str, Any] = {}
        for feature in spec.features:
            value = row[feature.name]
            if _is_missing(value) or (feature.kind == "categorical" and value == MISSING_CATEGORY):
                item[feature.name] = None
            elif feature.kind == "numeric":
                # The shortest text that is the same float32 (39.1, not 39.099998474121094).
                item[feature.name] = float(str(np.float32(value)))
            else:
                item[feature.name] = str(value)
        rows.append(item)
    return rows
