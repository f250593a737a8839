"""Text and table datasets: read CSV/TSV/JSONL/Parquet, find the task and its columns, clean, split, write.

One data file (or files named train/validation/test) at the dataset root becomes either a text
dataset artifact (a free-text column and a label) or a table artifact (feature columns and a target),
see docs/formats.md. Files are read through ``datasets`` (``Dataset.from_csv`` / ``from_json`` /
``from_parquet``), CSV and TSV as text so that this module, not a chunked type guess, decides what is
numeric.

Decisions, in order, each from the job's TaskSpec when it says, otherwise from the data:

* the label column: the spec's ``label_column``; else a column the request names ("predict the
  penguin species" -> ``species``); else a conventional name (``label``, ``target``, ``class`` ...);
  otherwise :class:`NeedsInput` with the column names as choices: a label is never guessed;
* the task: the spec's text/tabular task type; else text classification when a free-text column sits
  beside a label of few values (and at most two other useful columns), otherwise a table, regression when the label is numeric with many
  distinct values;
* the text column (text tasks): the spec's first ``input_columns``; else a conventional name
  (``text``, ``message`` ...); else the one free-text column; otherwise NeedsInput.

Cleaning: rows without a label are dropped, exact duplicate rows removed (a copy in two splits would
leak), identifier-like and constant columns dropped with the reason in the TableSpec, missing feature
values kept (the model imputes them). The split is stratified for classification with the image
path's ratios; files named train/validation/test are used as given.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import json
import math
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from services.common.errors import DataError, NeedsInput
from services.common.table_dataset import SPLIT_COLUMN, FeatureSpec, TableSpec, write_table_dataset
from services.common.text_dataset import write_text_dataset
from services.data.images import MIN_PER_CLASS, SPLITS, _check_fractions, natural_sorted, split_counts
from services.data.sources import DATA_FORMATS, data_format, is_ignored_name
from traineragent.v1 import common_pb2

MIN_REGRESSION_ROWS = 10
MAX_LISTED = 20  # column names listed in one message
# A free-text column: most values distinct and long enough to be sentences rather than categories.
FREE_TEXT_MIN_MEAN_CHARS = 25
FREE_TEXT_MIN_UNIQUE_RATIO = 0.5
# A numeric label is a class id (classification) when it has at most this many distinct integer values.
MAX_NUMERIC_CLASSES = 20
# A free-text column makes a text task when at most this many other useful columns sit beside it.
MAX_COLUMNS_BESIDE_TEXT = 2
# A label with at most this many distinct values (and at most a fifth of the rows) is "low-cardinality".
MAX_TEXT_CLASSES = 100

LABEL_NAMES = ("label", "labels", "target", "class", "category", "y", "outcome", "tag", "intent",
               "sentiment", "topic", "class label", "target class")
TEXT_NAMES = ("text", "message", "body", "content", "review", "comment", "sentence", "ticket",
              "description", "utterance", "document", "title", "question", "query", "tweet", "post",
              "email", "summary", "headline")
# Words that introduce the columns to learn from, and words that introduce the one to predict.
_FEATURE_MARKERS = frozenset({"from", "using", "given", "based", "with", "use", "considering", "features",
                              "inputs", "knowing"})
_TARGET_MARKERS = frozenset({"predict", "predicts", "predicting", "prediction", "estimate", "estimating",
                             "forecast", "classify", "classifying", "guess", "determine", "infer", "detect",
                             "tell", "by", "into", "target", "label", "whether", "which", "what", "of"})
_SPLIT_NAMES = {"train": "train", "training": "train", "validation": "validation", "valid": "validation",
                "val": "validation", "dev": "validation", "test": "test", "testing": "test"}
_TASK_NAMES = {
    common_pb2.TASK_TYPE_TEXT_CLASSIFICATION: "text_classification",
    common_pb2.TASK_TYPE_TABULAR_CLASSIFICATION: "tabular_classification",
    common_pb2.TASK_TYPE_TABULAR_REGRESSION: "tabular_regression",
}
_TASKS = {name: value for value, name in _TASK_NAMES.items()}


# --- finding the files -----------------------------------------------------------------------------


def data_files(root: Path) -> list[Path]:
    """The data files (CSV, TSV, JSONL/JSON, Parquet) at the top of a dataset folder, sorted by name."""
    if not root.is_dir():
        return [root] if root.is_file() and data_format(root.name) else []
    return sorted(entry for entry in root.iterdir()
                  if entry.is_file() and not is_ignored_name(entry.name) and data_format(entry.name))


def split_of_file(path: Path) -> str | None:
    """train / validation / test when the file's name says so (``train.csv``, ``penguins-dev.jsonl``)."""
    stem = path.name[: -len(_suffix(path.name))] if _suffix(path.name) else path.stem
    words = [word for word in re.split(r"[^a-z0-9]+", stem.lower()) if word]
    return _SPLIT_NAMES.get(words[-1]) if words else None


def _suffix(name: str) -> str:
    lowered = name.lower()
    return next((suffix for suffix in DATA_FORMATS if lowered.endswith(suffix)), "")


def _assign_splits(files: list[Path]) -> dict[str, Path]:
    """{"all": file} for one file, {split: file} for files named by split; DataError otherwise."""
    if not files:
        raise DataError("the dataset holds no data file: send one CSV, TSV, JSONL or Parquet file "
                        "(or files named train/validation/test)")
    if len(files) == 1:
        return {"all": files[0]}
    named: dict[str, list[Path]] = collections.defaultdict(list)
    unnamed = []
    for path in files:
        split = split_of_file(path)
        (named[split] if split else unnamed).append(path)
    listed = ", ".join(path.name for path in files[:MAX_LISTED])
    if unnamed or any(len(paths) > 1 for paths in named.values()):
        raise DataError(
            f"the dataset holds several data files ({listed}) and it is not clear which is which: "
            "send one file, or name them train, validation (or valid/dev) and test, e.g. train.csv and test.csv"
        )
    if "train" not in named:
        raise DataError(f"the data files ({listed}) have no training file: name the one to train on train.csv "
                        "(or train.jsonl, train.parquet ...)")
    return {split: paths[0] for split, paths in named.items()}


# --- reading ---------------------------------------------------------------------------------------


def read_data_file(path: Path, cache_dir: Path | None = None) -> pd.DataFrame:
    """A data file as a DataFrame (CSV/TSV columns as strings); DataError naming the file otherwise."""
    import datasets  # a second to import; only when a table or text file is read

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    fmt = data_format(path.name)
    if fmt is None:
        raise DataError(f"{path.name} is not a data file we read: use {', '.join(DATA_FORMATS)}")
    if path.stat().st_size == 0:
        raise DataError(f"{path.name} is empty (0 bytes): send the file with its header and rows")
    header: list[str] = []
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix="hf-cache-") as cache:
        try:
            if fmt in ("csv", "tsv"):
                sep = "\t" if fmt == "tsv" else ","
                header = _csv_header(path, sep)
                features = datasets.Features({name: datasets.Value("string") for name in header})
                dataset = datasets.Dataset.from_csv(str(path), sep=sep, features=features, keep_in_memory=True,
                                                    cache_dir=cache)
            elif fmt in ("jsonl", "json"):
                dataset = datasets.Dataset.from_json(str(path), keep_in_memory=True, cache_dir=cache)
            else:
                dataset = datasets.Dataset.from_parquet(str(path), keep_in_memory=True, cache_dir=cache)
            frame = dataset.to_pandas()
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 - pandas, pyarrow and datasets raise many types
            if "corresponds to no data" in str(exc):  # datasets' word for a file without rows
                what = f"columns ({_names(header)}) but" if fmt in ("csv", "tsv") else "no columns and"
                raise DataError(f"{path.name} has {what} no rows: add the data rows") from exc
            raise DataError(f"{path.name} cannot be read as {fmt.upper()}: {_cause(exc)}; {_format_hint(fmt)}") from exc
    assert isinstance(frame, pd.DataFrame)
    frame.columns = [str(column) for column in frame.columns]
    if frame.shape[1] == 0:
        raise DataError(f"{path.name} has no columns: {_format_hint(fmt)}")
    if len(frame) == 0:
        raise DataError(f"{path.name} has columns ({_names(frame.columns)}) but no rows: add the data rows")
    return frame


def _csv_header(path: Path, sep: str) -> list[str]:
    """The header row's column names; DataError when it is missing, blank or names a column twice."""
    fmt = "tsv" if sep == "\t" else "csv"
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            header = next(csv.reader(f, delimiter=sep), None)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path.name} is not UTF-8 text ({exc.reason} at byte {exc.start}): {_format_hint(fmt)}") from exc
    if not header or not any(name.strip() for name in header):
        raise DataError(f"{path.name} has no header row (its first line is empty): {_format_hint(fmt)}")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise DataError(f"{path.name} names the column{'s' if len(repeated) > 1 else ''} {', '.join(repeated)} twice "
                        "in its header: give every column its own name")
    blank = [i for i, name in enumerate(header) if not name.strip()]
    if blank:
        raise DataError(f"{path.name} has a column with no name (position {blank[0] + 1}) in its header: "
                        "give every column a name")
    return header


def _cause(exc: BaseException) -> str:
    """The innermost reason, on one line."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        inner = exc.__cause__ or exc.__context__
        assert inner is not None
        exc = inner
    text = (str(exc) or type(exc).__name__).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _format_hint(fmt: str) -> str:
    return {
        "csv": "save it as UTF-8 CSV with a header row and the same number of fields on every line",
        "tsv": "save it as UTF-8 tab-separated text with a header row and the same number of fields on every line",
        "jsonl": "write one JSON object per line, with the same keys on every line",
        "json": "write one JSON object per line (JSON lines), or one JSON array of objects",
        "parquet": "write it again as Parquet (e.g. pandas DataFrame.to_parquet)",
    }[fmt]


def _names(columns: Any) -> str:
    names = [str(column) for column in columns]
    listed = ", ".join(names[:MAX_LISTED])
    return listed + (f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


# --- column profiles -------------------------------------------------------------------------------


@dataclasses.dataclass
class _Column:
    """What the data says about one column."""

    name: str
    values: pd.Series  # numeric: float64 with NaN; otherwise object strings with None
    numeric: bool
    boolean: bool
    missing: int
    distinct: int
    unique_per_row: bool
    integer_like: bool
    mean_chars: float
    monotonic_step: bool  # integers counting up by one (a row number)

    @property
    def free_text(self) -> bool:
        present = len(self.values) - self.missing
        return (not self.numeric and not self.boolean and present > 0
                and self.distinct >= FREE_TEXT_MIN_UNIQUE_RATIO * present
                and self.mean_chars >= FREE_TEXT_MIN_MEAN_CHARS)


def _missing_mask(values: pd.Series) -> pd.Series:
    mask = values.isna()
    if pd.api.types.is_object_dtype(values.dtype) or pd.api.types.is_string_dtype(values.dtype):
        mask |= values.map(lambda v: isinstance(v, str) and not v.strip()).astype(bool)
    return mask


def _profile(name: str, raw: pd.Series) -> _Column:
    raw = raw.reset_index(drop=True)
    missing = _missing_mask(raw)
    present = raw[~missing]
    nested = present.map(lambda v: isinstance(v, dict | list | tuple | np.ndarray))
    if bool(nested.any()):
        raise DataError(f"column {name!r} holds nested values (lists or objects, e.g. {present[nested].iloc[0]!r}): "
                        "flatten it into plain columns of numbers or text")
    boolean = pd.api.types.is_bool_dtype(raw.dtype) or (
        len(present) > 0 and bool(present.map(lambda v: isinstance(v, bool | np.bool_)).all()))
    numbers: pd.Series | None = None
    if not boolean:
        if pd.api.types.is_numeric_dtype(raw.dtype):
            numbers = raw.astype(np.float64)
        else:
            parsed = pd.to_numeric(present.map(lambda v: v.strip() if isinstance(v, str) else v), errors="coerce")
            if len(present) and not bool(parsed.isna().any()):
                numbers = pd.Series(np.nan, index=raw.index, dtype=np.float64)
                numbers[~missing] = parsed.astype(np.float64)
    if numbers is not None:
        numbers = numbers.where(np.isfinite(numbers))  # inf counts as missing
        missing = numbers.isna()
        kept = numbers[~missing]
        integer_like = bool(len(kept) and np.all(np.floor(kept) == kept))
        ordered = kept.to_numpy()
        monotonic = bool(integer_like and len(ordered) > 1 and np.all(np.diff(ordered) == 1))
        return _Column(name=name, values=numbers, numeric=True, boolean=False, missing=int(missing.sum()),
                       distinct=int(kept.nunique()), unique_per_row=bool(len(kept) == len(raw) and kept.is_unique),
                       integer_like=integer_like, mean_chars=0.0, monotonic_step=monotonic)
    strings = pd.Series([None if m else _as_text(v) for v, m in zip(raw, missing, strict=True)], dtype=object)
    kept_strings = strings[~missing]
    return _Column(name=name, values=strings, numeric=False, boolean=boolean, missing=int(missing.sum()),
                   distinct=int(kept_strings.nunique()),
                   unique_per_row=bool(len(kept_strings) == len(raw) and kept_strings.is_unique),
                   integer_like=False, mean_chars=float(kept_strings.str.len().mean()) if len(kept_strings) else 0.0,
                   monotonic_step=False)


def _as_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# --- choosing the label, the task and the text column ---------------------------------------------


def _norm(name: str) -> str:
    """A column name for comparison: case, underscores, dashes and camelCase ignored."""
    return " ".join(_name_words(name))


def _name_words(name: str) -> list[str]:
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)
    return [word for word in re.split(r"[^a-z0-9]+", spaced.lower()) if word]


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") else word


def _find_column(name: str, columns: list[str]) -> str | None:
    """The column called ``name``, exactly, or ignoring case and separators when that is unambiguous."""
    if name in columns:
        return name
    matches = [column for column in columns if _norm(column) == _norm(name)]
    return matches[0] if len(matches) == 1 else None


def mentioned_columns(request: str, columns: list[str]) -> list[str]:
    """Columns the request names as the thing to predict (word match, case/underscore-insensitive).

    A column matches when every word of its name of 3+ letters (or all its words, for short names)
    appears in the request; of several, those introduced by "from", "using", "given" ... are inputs,
    not the label.
    """
    words = [_stem(word) for word in re.findall(r"[a-z0-9]+", request.lower())]
    if not words:
        return []
    mentions: list[tuple[int, str]] = []
    for column in columns:
        parts = [_stem(word) for word in _name_words(column)]
        significant = [word for word in parts if len(word) >= 3] or [word for word in parts if len(word) >= 2]
        if not significant or not all(word in words for word in significant):
            continue
        mentions.append((min(words.index(word) for word in significant), column))
    if len(mentions) <= 1:
        return [column for _, column in mentions]
    targets = []
    for position, column in sorted(mentions):
        before = [word for word in words[:position] if word in _FEATURE_MARKERS or word in _TARGET_MARKERS]
        if not before or before[-1] not in _FEATURE_MARKERS:
            targets.append(column)
    return targets


def _ask_label(columns: list[str], why: str) -> NeedsInput:
    text = (f"Which column should the model predict? {why[:1].upper()}{why[1:]} The columns are: {_names(columns)}. "
            "Reply with the column's name.")
    return NeedsInput(f"the data does not say which column to predict: {why}",
                      [{"id": "label_column", "text": text, "choices": list(columns)}])


def choose_label_column(profiles: dict[str, _Column], spec_label: str, request: str) -> str:
    """The column to predict: the spec's, the request's, a conventional name; NeedsInput otherwise."""
    columns = list(profiles)
    if spec_label:
        found = _find_column(spec_label, columns)
        if found is None:
            raise DataError(f"the label column {spec_label!r} is not in the data; its columns are "
                            f"{_names(columns)}: name one of them")
        return found
    possible = [c for c in columns if not profiles[c].free_text and not _id_like(profiles[c])
                and profiles[c].distinct >= 2]
    mentioned = mentioned_columns(request, possible)
    if len(mentioned) == 1:
        return mentioned[0]
    conventional = [c for c in possible if _norm(c) in LABEL_NAMES]
    if mentioned:
        conventional = [c for c in conventional if c in mentioned]
        if len(conventional) == 1:
            return conventional[0]
        raise _ask_label(columns, f"the request names several columns ({', '.join(mentioned)}).")
    if len(conventional) == 1:
        return conventional[0]
    if conventional:
        raise _ask_label(columns, f"several columns could be the label ({', '.join(conventional)}).")
    raise _ask_label(columns, "no column is called label, target or class, and the request names none.")


def _low_cardinality(column: _Column, rows: int) -> bool:
    return 2 <= column.distinct <= min(MAX_TEXT_CLASSES, max(2, rows // 5))


def _is_regression_label(column: _Column) -> bool:
    if not column.numeric:
        return False
    if column.distinct <= 2:
        return False
    return not (column.integer_like and column.distinct <= MAX_NUMERIC_CLASSES)


def choose_task(spec_task: int, profiles: dict[str, _Column], label: str, rows: int) -> str:
    """text_classification | tabular_classification | tabular_regression.

    The request's task stands, except that a table label which is plainly a quantity (a number
    with more distinct values than a classifier could learn classes for) is a regression whatever
    the request's reading said: "predict the body mass" names no task, and as classes each mass
    would have a row or two.
    """
    if spec_task in _TASK_NAMES:
        chosen = _TASK_NAMES[spec_task]
        if chosen == "tabular_classification" and _is_regression_label(profiles[label]):
            return "tabular_regression"
        return chosen
    others = [p for name, p in profiles.items() if name != label]
    # Free text beside a few other columns is a text task; beside a real table it is one more column.
    plain = [p for p in others if not p.free_text and p.distinct > 1 and not _id_like(p)]
    if any(p.free_text for p in others) and len(plain) <= MAX_COLUMNS_BESIDE_TEXT:
        label_column = profiles[label]
        if label_column.numeric and not _is_regression_label(label_column):
            return "text_classification"
        if not label_column.numeric and _low_cardinality(label_column, rows):
            return "text_classification"
    return "tabular_regression" if _is_regression_label(profiles[label]) else "tabular_classification"


def choose_text_column(profiles: dict[str, _Column], label: str, spec_inputs: list[str]) -> str:
    """The column a text model reads: the spec's, a conventional name, the one free-text column."""
    columns = [c for c in profiles if c != label]
    if spec_inputs:
        found = _find_column(spec_inputs[0], columns)
        if found is None:
            raise DataError(f"the text column {spec_inputs[0]!r} is not in the data (or is the label); the "
                            f"columns are {_names(list(profiles))}: name one of them")
        return found
    strings = [c for c in columns if not profiles[c].numeric and not profiles[c].boolean]
    conventional = [c for c in strings if _norm(c) in TEXT_NAMES]
    if len(conventional) == 1:
        return conventional[0]
    free = [c for c in (conventional or strings) if profiles[c].free_text]
    if len(free) == 1:
        return free[0]
    candidates = free or conventional or strings
    if not candidates:
        raise DataError(f"no column holds text (the columns other than the label {label!r} are "
                        f"{_names(columns) or 'none'}); a text classifier needs a column of sentences")
    if len(candidates) == 1:
        return candidates[0]
    text = (f"Which column holds the text the model should read? Candidates: {', '.join(candidates[:MAX_LISTED])}. "
            "Reply with the column's name.")
    raise NeedsInput(f"several columns could be the text to classify ({', '.join(candidates[:MAX_LISTED])})",
                     [{"id": "text_column", "text": text, "choices": candidates}])


def _id_like(column: _Column) -> bool:
    """Unique per row and an identifier: named like one, a row counter, or distinct strings."""
    if not column.unique_per_row or len(column.values) < 2:
        return False
    words = _name_words(column.name)
    named = bool(words) and (words[-1] in ("id", "uuid", "guid", "key", "index", "idx") or words[0] == "unnamed")
    if column.numeric:
        return named or column.monotonic_step
    return not column.free_text or named


# --- the pipeline ----------------------------------------------------------------------------------


class _Notes:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, line: str) -> None:
        self.lines.append(line)


def prepare_table_files(root: Path, out_parquet: Path, spec: common_pb2.TaskSpec, request: str = "", *,
                        seed: int = 0, validation_fraction: float = 0.15,
                        test_fraction: float = 0.15) -> common_pb2.DataReport:
    """Turn the data file(s) at ``root`` into a text or table artifact at ``out_parquet``; return the report.

    ``root`` is a folder holding one data file or files named train/validation/test (or one data
    file itself). ``dataset_artifact`` is left empty: the caller stores the file and fills it in.
    Raises DataError for content problems and NeedsInput when only the user can choose a column.
    """
    started = time.monotonic()
    _check_fractions(validation_fraction, test_fraction)
    out_parquet.parent.mkdir(parents=True, exist_ok=True)
    assigned = _assign_splits(data_files(root))
    frames = {split: read_data_file(path, cache_dir=out_parquet.parent) for split, path in assigned.items()}
    fmt = data_format(assigned.get("train", assigned.get("all", next(iter(assigned.values())))).name)
    assert fmt is not None
    frame, given = _combine(frames, assigned)
    notes = _Notes()
    profiles = {name: _profile(name, frame[name]) for name in frame.columns}
    label = choose_label_column(profiles, spec.label_column if spec.HasField("label_column") else "", request)
    task = choose_task(spec.task_type, profiles, label, len(frame))
    if _TASK_NAMES.get(spec.task_type) == "tabular_classification" and task == "tabular_regression":
        notes.add(f"{label!r} is a number with {profiles[label].distinct} distinct values, so it is predicted as "
                  "a quantity (regression), not as classes")
    if task == "text_classification":
        text_column = choose_text_column(profiles, label, list(spec.input_columns))
        result = _prepare_text(frame, profiles, label, text_column, given, notes, seed, validation_fraction,
                               test_fraction, out_parquet)
    else:
        result = _prepare_table(frame, profiles, label, task, given, notes, seed, validation_fraction,
                                test_fraction, out_parquet, list(spec.input_columns))
    result.format = fmt
    result.task_type = _TASKS[task]
    result.label_column = label
    result.seconds = round(time.monotonic() - started, 3)
    return result


def _combine(frames: dict[str, pd.DataFrame], assigned: dict[str, Path]) -> tuple[pd.DataFrame, np.ndarray | None]:
    """One frame of every file's rows and, for split-named files, each row's given split."""
    if "all" in frames:
        frame = frames["all"].reset_index(drop=True)
        _check_reserved(frame, assigned["all"])
        return frame, None
    order = [split for split in SPLITS if split in frames]
    reference = list(frames["train"].columns)
    for split in order:
        columns = list(frames[split].columns)
        if set(columns) != set(reference):
            missing = [c for c in reference if c not in columns]
            extra = [c for c in columns if c not in reference]
            raise DataError(
                f"{assigned[split].name} has different columns from {assigned['train'].name}"
                + (f" (lacks {', '.join(missing[:MAX_LISTED])})" if missing else "")
                + (f" (has extra {', '.join(extra[:MAX_LISTED])})" if extra else "")
                + ": give every split file the same columns"
            )
        _check_reserved(frames[split], assigned[split])
    frame = pd.concat([frames[split][reference] for split in order], ignore_index=True)
    given = np.concatenate([np.full(len(frames[split]), split, dtype=object) for split in order])
    return frame, given


def _check_reserved(frame: pd.DataFrame, path: Path) -> None:
    if SPLIT_COLUMN in frame.columns:
        raise DataError(f"{path.name} has a column named {SPLIT_COLUMN!r}, which the dataset format reserves: "
                        "rename it (to give splits, send files named train/validation/test instead)")
    blank = [i for i, c in enumerate(frame.columns) if not str(c).strip()]
    if blank:
        raise DataError(f"{path.name} has a column with no name (position {blank[0] + 1}): give every column a name")


def _label_strings(column: _Column) -> pd.Series:
    if column.numeric:
        return pd.Series([None if math.isnan(v) else _as_text(float(v)) for v in column.values], dtype=object)
    return column.values


def _drop_missing_labels(label: str, labels: pd.Series, notes: _Notes) -> np.ndarray:
    keep = labels.notna().to_numpy().copy()
    dropped = int((~keep).sum())
    if dropped:
        notes.add(f"dropped {dropped} row{'' if dropped == 1 else 's'} with no value in the label column {label!r}")
    return keep


def _check_classes(labels: pd.Series, label: str) -> list[str]:
    counts = collections.Counter(labels)
    classes = natural_sorted(counts)
    if len(classes) < 2:
        only = classes[0] if classes else "nothing"
        raise DataError(f"the label column {label!r} holds one value only ({only!r}): a classifier needs at least 2 "
                        "classes; add rows of the other classes or choose another label column")
    small = [(name, counts[name]) for name in classes if counts[name] < MIN_PER_CLASS]
    if small:
        listed = ", ".join(f"{name!r} ({count} row{'' if count == 1 else 's'})" for name, count in small[:MAX_LISTED])
        raise DataError(
            f"too few rows in class{'es' if len(small) > 1 else ''} {listed} of column {label!r}: add at least "
            f"{MIN_PER_CLASS} rows per class (we need one for each of train, validation and test) or remove those rows"
        )
    return classes


def _prepare_text(frame: pd.DataFrame, profiles: dict[str, _Column], label: str, text_column: str,
                  given: np.ndarray | None, notes: _Notes, seed: int, validation_fraction: float,
                  test_fraction: float, out_parquet: Path) -> common_pb2.DataReport:
    labels = _label_strings(profiles[label])
    texts = pd.Series([None if v is None or (isinstance(v, float) and math.isnan(v)) else _as_text(v)
                       for v in (profiles[text_column].values if not profiles[text_column].numeric
                                 else _label_strings(profiles[text_column]))], dtype=object)
    keep = _drop_missing_labels(label, labels, notes)
    no_text = keep & texts.map(lambda v: v is None or not str(v).strip()).to_numpy()
    if no_text.any():
        notes.add(f"dropped {int(no_text.sum())} row(s) with an empty text in column {text_column!r}")
    keep = keep & ~no_text
    num_dropped = int((~keep).sum())
    unused = [c for c in frame.columns if c not in (label, text_column)]
    if unused:
        notes.add(f"columns {_names(unused)} are not used: a text classifier reads only {text_column!r}")
    rows = [(int(i), texts[i], labels[i], given[i] if given is not None else None) for i in np.flatnonzero(keep)]
    rows, num_duplicates = _dedupe_texts(rows, notes)
    if not rows:
        raise DataError(f"no row has both a text in {text_column!r} and a label in {label!r}: fill those columns")
    classes = _check_classes(pd.Series([r[2] for r in rows]), label)
    splits = _split_rows([r[2] for r in rows], [r[3] for r in rows], True, seed, validation_fraction,
                         test_fraction, label)
    order = {name: i for i, name in enumerate(SPLITS)}
    ordered = sorted(range(len(rows)), key=lambda i: (order[splits[i]], rows[i][0]))
    write_text_dataset(out_parquet, ((rows[i][1], rows[i][2], splits[i]) for i in ordered), classes,
                       {"text": text_column, "label": label})
    report = _report(classes, [r[2] for r in rows], splits, notes)
    report.num_dropped = num_dropped
    report.num_duplicates = num_duplicates
    report.input_columns.append(text_column)
    report.preprocessing_json = json.dumps({"text_column": text_column, "label_column": label}, sort_keys=True)
    return report


def _dedupe_texts(rows: list[tuple[int, str, str, str | None]],
                  notes: _Notes) -> tuple[list[tuple[int, str, str, str | None]], int]:
    """One row per distinct text (the earliest split's); texts under two labels are removed entirely."""
    order = {name: i for i, name in enumerate(SPLITS)}
    groups: dict[str, list[tuple[int, str, str, str | None]]] = collections.defaultdict(list)
    for row in rows:
        groups[row[1]].append(row)
    kept, removed, conflicts, copies = [], 0, 0, 0
    for text, group in groups.items():
        labels = natural_sorted({row[2] for row in group})
        if len(labels) > 1:
            removed += len(group)
            conflicts += 1
            if conflicts <= MAX_LISTED:
                notes.add(f"conflicting labels: the text {text[:60]!r} appears under {', '.join(labels)}; "
                          "removed every copy (fix the labels to keep it)")
            continue
        group.sort(key=lambda row: (order.get(row[3] or "train", 0), row[0]))
        kept.append(group[0])
        copies += len(group) - 1
    if conflicts > MAX_LISTED:
        notes.add(f"... and {conflicts - MAX_LISTED} more texts with conflicting labels removed")
    if copies:
        notes.add(f"removed {copies} duplicate row{'' if copies == 1 else 's'} (the same text and label twice; "
                  "a copy in two splits would leak test data into training)")
    removed += copies
    kept.sort(key=lambda row: row[0])
    return kept, removed


def _prepare_table(frame: pd.DataFrame, profiles: dict[str, _Column], label: str, task: str,
                   given: np.ndarray | None, notes: _Notes, seed: int, validation_fraction: float,
                   test_fraction: float, out_parquet: Path, spec_inputs: list[str]) -> common_pb2.DataReport:
    label_column = profiles[label]
    classification = task == "tabular_classification"
    if classification:
        labels = _label_strings(label_column)
    else:
        if not label_column.numeric:
            example = next((v for v in label_column.values if v is not None), "")
            raise DataError(f"the label column {label!r} holds text (e.g. {example!r}), not numbers: a regression "
                            "target must be numeric; name a numeric column, or ask for classification")
        labels = pd.Series([None if math.isnan(v) else float(v) for v in label_column.values], dtype=object)
    keep = _drop_missing_labels(label, labels, notes)

    features, dropped = _choose_features(profiles, label, spec_inputs, notes)
    # Exact duplicate rows (every column as given) are removed; across splits the later copy goes.
    original = frame.loc[keep].copy()
    original_index = np.flatnonzero(keep)
    split_rank = (pd.Series(given[keep]).map({name: i for i, name in enumerate(SPLITS)}).to_numpy()
                  if given is not None else np.zeros(len(original), dtype=int))
    hashed = pd.util.hash_pandas_object(original.astype(str).where(original.notna(), None), index=False).to_numpy()
    order = np.lexsort((original_index, split_rank))
    seen: set[int] = set()
    unique_rows = []
    for position in order:
        key = int(hashed[position])
        if key in seen:
            continue
        seen.add(key)
        unique_rows.append(position)
    unique_rows.sort()
    num_duplicates = len(original) - len(unique_rows)
    if num_duplicates:
        notes.add(f"removed {num_duplicates} duplicate row{'' if num_duplicates == 1 else 's'} (identical in every "
                  "column; a copy in two splits would leak test data into training)")
    rows_index = original_index[unique_rows]
    row_labels = [labels[i] for i in rows_index]
    row_given = [given[i] for i in rows_index] if given is not None else [None] * len(rows_index)
    if classification:
        classes = _check_classes(pd.Series(row_labels), label)
    else:
        classes = []
        if len(rows_index) < MIN_REGRESSION_ROWS:
            raise DataError(f"only {len(rows_index)} rows have a value in {label!r}: a regression needs at least "
                            f"{MIN_REGRESSION_ROWS} rows to train, validate and test; add rows")
    splits = _split_rows(row_labels, row_given, classification, seed, validation_fraction, test_fraction, label)

    missing = [(f.name, int(profiles[f.name].values.iloc[rows_index].isna().sum())) for f in features]
    missing = [(name, count) for name, count in missing if count]
    if missing:
        notes.add("missing values kept (the model imputes them): "
                  + ", ".join(f"{name} ({count})" for name, count in missing[:MAX_LISTED]))
    order_of = {name: i for i, name in enumerate(SPLITS)}
    ordered = sorted(range(len(rows_index)), key=lambda i: (order_of[splits[i]], rows_index[i]))
    picked = rows_index[ordered]
    data: dict[str, Any] = {}
    for feature in features:
        values = profiles[feature.name].values.iloc[picked]
        data[feature.name] = values.to_numpy(dtype=np.float64) if feature.kind == "numeric" else values.to_numpy()
    data[label] = [row_labels[i] for i in ordered]
    table = pd.DataFrame(data)
    table_spec = TableSpec(task="classification" if classification else "regression", label_column=label,
                           features=features, classes=classes, dropped=dropped)
    write_table_dataset(out_parquet, table, [splits[i] for i in ordered], table_spec)
    report = _report(classes, row_labels if classification else [], splits, notes)
    report.num_dropped = int((~keep).sum())
    report.num_duplicates = num_duplicates
    report.input_columns.extend(f.name for f in features)
    report.preprocessing_json = table_spec.to_json()
    return report


def _choose_features(profiles: dict[str, _Column], label: str, spec_inputs: list[str],
                     notes: _Notes) -> tuple[list[FeatureSpec], list[dict[str, str]]]:
    """Feature columns and their kinds; identifier-like and constant columns dropped with the reason."""
    columns = [c for c in profiles if c != label]
    if spec_inputs:
        chosen = []
        for name in spec_inputs:
            found = _find_column(name, columns)
            if found is None:
                raise DataError(f"the input column {name!r} is not in the data (or is the label); the columns are "
                                f"{_names(list(profiles))}: name columns it has")
            chosen.append(found)
        unused = [c for c in columns if c not in chosen]
        columns = list(dict.fromkeys(chosen))
        if unused:
            notes.add(f"columns {_names(unused)} are not used: the request names the inputs {', '.join(columns)}")
    features: list[FeatureSpec] = []
    dropped: list[dict[str, str]] = []
    for name in columns:
        column = profiles[name]
        why = ""
        if column.distinct <= 1:
            why = "constant (one value in every row)" if column.distinct == 1 else "empty (no value in any row)"
        elif column.free_text and column.unique_per_row:
            why = "free text with a different value in every row, which a table model cannot use"
        elif _id_like(column):
            why = "an identifier (a different value in every row), which says nothing about new rows"
        if why and not spec_inputs:
            dropped.append({"name": name, "why": why})
            notes.add(f"dropped column {name!r}: {why}")
            continue
        features.append(FeatureSpec(name=name, kind="numeric" if column.numeric else "categorical"))
    if not features:
        raise DataError(f"no column is left to learn from: besides the label {label!r} the data has "
                        f"{_names(columns) or 'no columns'}" + (f" (dropped: {', '.join(d['name'] for d in dropped)})"
                                                             if dropped else "")
                        + "; add columns that describe each row")
    return features, dropped


# --- splitting -------------------------------------------------------------------------------------


def _split_rows(labels: list[Any], given: list[str | None], stratified: bool, seed: int,
                validation_fraction: float, test_fraction: float, label: str) -> list[str]:
    """A split name per row: the given ones, with missing splits carved from train; else a fresh split."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    if all(g is None for g in given):
        return _fresh_split(list(range(n)), labels, stratified, rng, validation_fraction, test_fraction)
    splits = [str(g) for g in given]
    present = set(splits)
    if stratified:
        train_classes = {labels[i] for i in range(n) if splits[i] == "train"}
        unseen = natural_sorted({labels[i] for i in range(n) if splits[i] != "train"} - train_classes)
        if unseen:
            raise DataError(f"classes {', '.join(map(repr, unseen[:MAX_LISTED]))} of {label!r} appear in the "
                            "validation or test file but never in train: add training rows for them")
    missing = [split for split in ("validation", "test") if split not in present]
    train_rows = [i for i in range(n) if splits[i] == "train"]
    for split in missing:
        fraction = validation_fraction if split == "validation" else test_fraction
        for i in _carve(train_rows, labels, stratified, rng, fraction):
            splits[i] = split
        train_rows = [i for i in train_rows if splits[i] == "train"]
    return splits


def _fresh_split(rows: list[int], labels: list[Any], stratified: bool, rng: np.random.Generator,
                 validation_fraction: float, test_fraction: float) -> list[str]:
    splits = ["train"] * len(rows)
    groups = _groups(rows, labels, stratified)
    for members in groups:
        _, validation, test = split_counts(len(members), validation_fraction, test_fraction)
        order = rng.permutation(len(members))
        for rank, index in enumerate(order):
            if rank < validation:
                splits[members[index]] = "validation"
            elif rank < validation + test:
                splits[members[index]] = "test"
    return splits


def _carve(rows: list[int], labels: list[Any], stratified: bool, rng: np.random.Generator,
           fraction: float) -> list[int]:
    """About ``fraction`` of ``rows`` (per class when stratified), never a class's last training row."""
    picked: list[int] = []
    for members in _groups(rows, labels, stratified):
        if len(members) < 2:
            continue
        count = min(len(members) - 1, max(1, round(len(members) * fraction)))
        order = rng.permutation(len(members))
        picked.extend(members[index] for index in order[:count])
    return picked


def _groups(rows: list[int], labels: list[Any], stratified: bool) -> list[list[int]]:
    if not stratified:
        return [list(rows)]
    by_class: dict[Any, list[int]] = collections.defaultdict(list)
    for row in rows:
        by_class[labels[row]].append(row)
    return [by_class[name] for name in natural_sorted(by_class)]


# --- report ----------------------------------------------------------------------------------------


def _report(classes: list[str], labels: list[str], splits: list[str], notes: _Notes) -> common_pb2.DataReport:
    sizes = collections.Counter(splits)
    counts = collections.Counter(labels)
    return common_pb2.DataReport(
        num_examples=len(splits),
        classes=classes,
        class_counts=[common_pb2.ClassCount(name=name, count=counts[name]) for name in classes],
        split_sizes=common_pb2.SplitSizes(train=sizes["train"], validation=sizes["validation"], test=sizes["test"]),
        warnings=notes.lines,
    )
