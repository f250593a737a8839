"""Uploaded datasets: the uploaded file and a small manifest, both in the artifact store.

The upload is an archive of a folder, or one data file (CSV, TSV, JSONL/JSON, Parquet) stored as
sent, with kind ``file``; the Data agent extracts the archive, or puts the data file alone in a
folder under its own name. The gateway writes them (UploadDataset); the Data agent reads them. The
upload id a client gets is the manifest's content key, so the same file uploaded twice gets the same id.
"""

from __future__ import annotations

import dataclasses
import json

from services.common.artifacts import ArtifactStore
from services.common.errors import InvalidArgument, NotFound


@dataclasses.dataclass(frozen=True)
class UploadManifest:
    archive_artifact: str  # the uploaded bytes (an archive, or the data file itself when kind is "file")
    filename: str
    kind: str  # zip | tar | tar.gz | tar.bz2 | tar.xz | file (one data file: .csv .tsv .jsonl .json .parquet)
    size_bytes: int
    sha256: str
    num_files: int

    def to_json(self) -> bytes:
        return json.dumps({"upload_manifest": 1, **dataclasses.asdict(self)}, sort_keys=True).encode()


async def store_manifest(store: ArtifactStore, manifest: UploadManifest) -> str:
    return await store.put_bytes(manifest.to_json())


async def load_manifest(store: ArtifactStore, upload_id: str) -> UploadManifest:
    """The manifest of an upload; NotFound/InvalidArgument say what to do when the id is wrong."""
    if not upload_id.startswith("sha256-"):
        raise InvalidArgument(f"upload id {upload_id!r} is not valid: use the id UploadDataset returned")
    try:
        raw = json.loads(await store.get_bytes(upload_id))
    except NotFound as exc:
        raise InvalidArgument(f"upload {upload_id} does not exist: upload the dataset again") from exc
    except ValueError as exc:
        raise InvalidArgument(f"{upload_id} is not an upload id: use the id UploadDataset returned") from exc
    if not isinstance(raw, dict) or raw.pop("upload_manifest", None) != 1:
        raise InvalidArgument(f"{upload_id} is not an upload id: use the id UploadDataset returned")
    return UploadManifest(**raw)
