"""The text dataset artifact (docs/formats.md): rows of text, label and split, classes in the metadata.

Shared by the Data agent (writer) and the training workers (reader); free of torch.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from services.common.errors import DataError

PathLike = str | os.PathLike[str]
SPLITS = ("train", "validation", "test")
FORMAT_KEY = b"traineragent.format"
CLASSES_KEY = b"traineragent.classes"
SOURCE_COLUMNS_KEY = b"traineragent.source_columns"
TEXT_FORMAT = "text"
TEXT_SCHEMA = pa.schema([pa.field("text", pa.string()), pa.field("label", pa.string()),
                         pa.field("split", pa.string())])


@dataclasses.dataclass
class TextSplits:
    """A text dataset artifact in memory: strings and class indices per split."""

    classes: list[str]
    source_columns: dict[str, str]
    train_texts: list[str]
    train_labels: np.ndarray
    validation_texts: list[str]
    validation_labels: np.ndarray
    test_texts: list[str]
    test_labels: np.ndarray

    def texts(self, split: str) -> list[str]:
        return getattr(self, f"{split}_texts")

    def labels(self, split: str) -> np.ndarray:
        return getattr(self, f"{split}_labels")


def write_text_dataset(path: PathLike, rows: Iterable[tuple[str, str, str]], classes: Sequence[str],
                       source_columns: Mapping[str, str]) -> int:
    """Write the text dataset artifact from (text, label, split) rows; returns the number of rows."""
    known = set(classes)
    texts, labels, splits = [], [], []
    for i, (text, label, split) in enumerate(rows):
        if label not in known:
            raise ValueError(f"row {i}: label {label!r} is not one of {sorted(known)}")
        if split not in SPLITS:
            raise ValueError(f"row {i}: split {split!r} is not one of {SPLITS}")
        if not isinstance(text, str):
            raise ValueError(f"row {i}: text is {type(text).__name__}, not a string")
        texts.append(text)
        labels.append(label)
        splits.append(split)
    schema = TEXT_SCHEMA.with_metadata({
        FORMAT_KEY: json.dumps(TEXT_FORMAT).encode(),
        CLASSES_KEY: json.dumps(list(classes)).encode(),
        SOURCE_COLUMNS_KEY: json.dumps(dict(source_columns), sort_keys=True).encode(),
    })
    table = pa.Table.from_arrays([pa.array(texts, pa.string()), pa.array(labels, pa.string()),
                                  pa.array(splits, pa.string())], schema=schema)
    pq.write_table(table, str(path), compression="zstd")
    return len(texts)


def load_text_dataset(path: PathLike) -> TextSplits:
    """Read a text dataset artifact; a file that is not one raises DataError naming what is wrong."""
    name = pathlib.Path(path).name
    metadata = pq.read_schema(str(path)).metadata or {}
    try:
        fmt = json.loads(metadata[FORMAT_KEY])
        classes = [str(c) for c in json.loads(metadata[CLASSES_KEY])]
        source_columns = {str(k): str(v) for k, v in json.loads(metadata.get(SOURCE_COLUMNS_KEY, b"{}")).items()}
    except KeyError as exc:
        raise DataError(f"{name} is not a text dataset artifact: metadata {exc} is missing") from exc
    if fmt != TEXT_FORMAT:
        raise DataError(f"{name} is a {fmt!r} dataset artifact, not a text one")
    table = pq.read_table(str(path), columns=["text", "label", "split"])
    index = {c: i for i, c in enumerate(classes)}
    parts: dict[str, tuple[list[str], list[int]]] = {s: ([], []) for s in SPLITS}
    for text, label, split in zip(table.column("text").to_pylist(), table.column("label").to_pylist(),
                                  table.column("split").to_pylist(), strict=True):
        if label not in index:
            raise DataError(f"the dataset has label {label!r}, which is not among its classes {classes}")
        if split not in parts:
            raise DataError(f"the dataset has a row in split {split!r}; splits are {', '.join(SPLITS)}")
        parts[split][0].append(text if text is not None else "")
        parts[split][1].append(index[label])
    fields: dict[str, Any] = {}
    for split, (split_texts, split_labels) in parts.items():
        fields[f"{split}_texts"] = split_texts
        fields[f"{split}_labels"] = np.asarray(split_labels, dtype=np.int64)
    return TextSplits(classes=classes, source_columns=source_columns, **fields)


# --- training -------------------------------------------------------------------------------------
