"""The image-folder dataset artifact: one Parquet file, laid out as docs/formats.md says.

Rows hold the original encoded bytes (never re-encoded, so training and the endpoint decode exactly
what the user gave); the file-level metadata carries the class order and the preprocessing, so the
artifact alone is enough to train on. Rows are written in bounded batches, so a large dataset never
has to sit in memory at once.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from services.common.preprocessing import ImagePreprocessing

FORMAT_KEY = b"traineragent.format"
CLASSES_KEY = b"traineragent.classes"
PREPROCESSING_KEY = b"traineragent.preprocessing"
IMAGE_FOLDER_FORMAT = "image_folder"

SCHEMA = pa.schema([
    pa.field("image", pa.binary()),
    pa.field("label", pa.string()),
    pa.field("split", pa.string()),
    pa.field("path", pa.string()),
])

# A row group closes at whichever comes first: keeps memory bounded and binary arrays far below 2 GiB.
_BATCH_ROWS = 1024
_BATCH_BYTES = 64 * 1024 * 1024

Row = tuple[bytes, str, str, str]  # (image bytes, label, split, path relative to the dataset root)


@dataclasses.dataclass(frozen=True)
class ImageDataset:
    """A dataset artifact read back: its rows and its metadata."""

    table: pa.Table
    classes: list[str]
    preprocessing: ImagePreprocessing
    format: str


def write_image_folder_parquet(path: Path, rows: Iterable[Row], classes: list[str],
                               preprocessing: ImagePreprocessing) -> int:
    """Write the rows to ``path``; return how many were written."""
    schema = SCHEMA.with_metadata({
        FORMAT_KEY: json.dumps(IMAGE_FOLDER_FORMAT).encode(),
        CLASSES_KEY: json.dumps(list(classes)).encode(),
        PREPROCESSING_KEY: preprocessing.to_json().encode(),
    })
    written = 0
    batch: list[Row] = []
    batch_bytes = 0
    # Encoded images do not compress further; the text columns do.
    compression = {"image": "none", "label": "snappy", "split": "snappy", "path": "snappy"}
    with pq.ParquetWriter(path, schema, compression=compression) as writer:
        for row in rows:
            batch.append(row)
            batch_bytes += len(row[0])
            if len(batch) >= _BATCH_ROWS or batch_bytes >= _BATCH_BYTES:
                writer.write_table(_to_table(batch, schema))
                written += len(batch)
                batch, batch_bytes = [], 0
        if batch or written == 0:
            writer.write_table(_to_table(batch, schema))
            written += len(batch)
    return written


def read_image_folder_parquet(path: Path) -> ImageDataset:
    """Read a dataset artifact back (tests, and any consumer that wants the whole table)."""
    table = pq.read_table(path)
    metadata = table.schema.metadata or {}
    try:
        fmt = _json_or_text(metadata[FORMAT_KEY])
        classes = json.loads(metadata[CLASSES_KEY])
        preprocessing = ImagePreprocessing.from_json(metadata[PREPROCESSING_KEY].decode())
    except KeyError as exc:
        raise ValueError(f"{path} is not an image-folder dataset artifact: no metadata {exc}") from exc
    return ImageDataset(table=table, classes=list(classes), preprocessing=preprocessing, format=fmt)


def _to_table(batch: list[Row], schema: pa.Schema) -> pa.Table:
    columns = list(zip(*batch, strict=True)) if batch else [(), (), (), ()]
    arrays = [pa.array(column, type=field.type) for column, field in zip(columns, schema, strict=True)]
    return pa.Table.from_arrays(arrays, schema=schema)


def _json_or_text(raw: bytes) -> str:
    """The format value as JSON (``"image_folder"``), tolerating a writer that stored the bare word."""
    try:
        value = json.loads(raw)
    except ValueError:
        return raw.decode()
    return str(value)
