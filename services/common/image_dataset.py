"""The image dataset artifact (docs/formats.md): one writer (the Data agent) and one reader (the workers).

One Parquet file per dataset: the original encoded image bytes with label, split and relative
path per row; the class order and the preprocessing in the file's metadata, so the artifact alone
is enough to train on.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from services.common.errors import DataError
from services.common.preprocessing import ImagePreprocessing

SPLITS = ("train", "validation", "test")
FORMAT_KEY = b"traineragent.format"
CLASSES_KEY = b"traineragent.classes"
PREPROCESSING_KEY = b"traineragent.preprocessing"
IMAGE_FOLDER_FORMAT = "image_folder"
DATASET_SCHEMA = pa.schema([
    pa.field("image", pa.binary()),
    pa.field("label", pa.string()),
    pa.field("split", pa.string()),
    pa.field("path", pa.string()),
])
# A row group closes at whichever comes first, so memory stays bounded while writing.
_WRITE_BATCH_ROWS = 1024
_WRITE_BATCH_BYTES = 64 * 1024 * 1024


@dataclasses.dataclass
class ImageSplits:
    """A dataset artifact in memory: encoded images and class indices per split."""

    classes: list[str]
    spec: ImagePreprocessing
    train_images: list[bytes]
    train_labels: np.ndarray
    validation_images: list[bytes]
    validation_labels: np.ndarray
    test_images: list[bytes]
    test_labels: np.ndarray

    def images(self, split: str) -> list[bytes]:
        return getattr(self, f"{split}_images")

    def labels(self, split: str) -> np.ndarray:
        return getattr(self, f"{split}_labels")


def write_image_dataset(path: str | os.PathLike[str], rows: Iterable[tuple[bytes, str, str, str]],
                        classes: Sequence[str], spec: ImagePreprocessing) -> int:
    """Write the dataset artifact (docs/formats.md) from (image bytes, label, split, relpath) rows.

    The one writer of the format: the Data agent calls it, so the reader below always agrees. Rows
    are streamed in bounded row groups; the image bytes are stored as given, never re-encoded.
    Returns the number of rows written.
    """
    known = set(classes)
    schema = DATASET_SCHEMA.with_metadata({
        FORMAT_KEY: json.dumps(IMAGE_FOLDER_FORMAT).encode(),
        CLASSES_KEY: json.dumps(list(classes)).encode(),
        PREPROCESSING_KEY: spec.to_json().encode(),
    })
    written, batch, batch_bytes = 0, [], 0
    compression = {"image": "none", "label": "snappy", "split": "snappy", "path": "snappy"}
    with pq.ParquetWriter(str(path), schema, compression=compression) as writer:
        for image, label, split, relpath in rows:
            if label not in known:
                raise ValueError(f"row {relpath!r}: label {label!r} is not one of {sorted(known)}")
            if split not in SPLITS:
                raise ValueError(f"row {relpath!r}: split {split!r} is not one of {SPLITS}")
            batch.append((bytes(image), label, split, relpath))
            batch_bytes += len(image)
            if len(batch) >= _WRITE_BATCH_ROWS or batch_bytes >= _WRITE_BATCH_BYTES:
                writer.write_table(_rows_to_table(batch, schema))
                written, batch, batch_bytes = written + len(batch), [], 0
        if batch or written == 0:
            writer.write_table(_rows_to_table(batch, schema))
            written += len(batch)
    return written


def _rows_to_table(batch: list[tuple[bytes, str, str, str]], schema: pa.Schema) -> pa.Table:
    columns = list(zip(*batch, strict=True)) if batch else [(), (), (), ()]
    arrays = [pa.array(column, type=field.type) for column, field in zip(columns, schema, strict=True)]
    return pa.Table.from_arrays(arrays, schema=schema)


def load_image_dataset(path: str | os.PathLike[str]) -> ImageSplits:
    """Read a dataset artifact; a file that is not one raises DataError naming what is missing."""
    table = pq.read_table(str(path), columns=["image", "label", "split"])
    metadata = pq.read_schema(str(path)).metadata or {}
    try:
        classes = [str(c) for c in json.loads(metadata[CLASSES_KEY])]
        spec = ImagePreprocessing.from_json(metadata[PREPROCESSING_KEY].decode())
    except KeyError as exc:
        name = pathlib.Path(path).name
        raise DataError(f"{name} is not an image dataset artifact: metadata {exc} is missing") from exc
    index = {name: i for i, name in enumerate(classes)}
    images = table.column("image").to_pylist()
    labels = table.column("label").to_pylist()
    splits = table.column("split").to_pylist()
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise DataError(f"the dataset has labels {unknown[:5]} that are not among its classes {classes}")
    parts: dict[str, tuple[list[bytes], list[int]]] = {s: ([], []) for s in SPLITS}
    for image, label, split in zip(images, labels, splits, strict=True):
        if split not in parts:
            raise DataError(f"the dataset has a row in split {split!r}; splits are {', '.join(SPLITS)}")
        parts[split][0].append(image)
        parts[split][1].append(index[label])
    fields = {}
    for split, (split_images, split_labels) in parts.items():
        fields[f"{split}_images"] = split_images
        fields[f"{split}_labels"] = np.asarray(split_labels, dtype=np.int64)
    return ImageSplits(classes=classes, spec=spec, **fields)


@dataclasses.dataclass(frozen=True)
class DatasetTable:
    """A dataset artifact read back whole: every row (with paths) and the metadata."""

    table: pa.Table
    classes: list[str]
    preprocessing: ImagePreprocessing
    format: str


def read_dataset_table(path: str | os.PathLike[str]) -> DatasetTable:
    """The whole artifact as a table (for inspection and tests; training uses load_image_dataset)."""
    table = pq.read_table(str(path))
    metadata = table.schema.metadata or {}
    try:
        fmt = json.loads(metadata[FORMAT_KEY])
        classes = [str(c) for c in json.loads(metadata[CLASSES_KEY])]
        spec = ImagePreprocessing.from_json(metadata[PREPROCESSING_KEY].decode())
    except KeyError as exc:
        raise DataError(f"{pathlib.Path(path).name} is not an image dataset artifact: metadata {exc} is missing") from exc
    return DatasetTable(table=table, classes=classes, preprocessing=spec, format=str(fmt))
