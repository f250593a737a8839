"""The artifact store: datasets, checkpoints, ONNX models and reports, named by content hash.

One small interface (put, get, exists by content hash) so the NATS object store, the embedded
default, can be swapped for an S3-compatible bucket by configuration later. Keys look like
``sha256-<hex>``; storing the same bytes twice stores them once.
"""

from __future__ import annotations

import hashlib
import io
import pathlib
from typing import Protocol

from nats.js import JetStreamContext
from nats.js import errors as js_errors

from services.common.bus import ARTIFACTS_BUCKET
from services.common.errors import NotFound

_CHUNK = 1024 * 1024


def content_key(digest_hex: str) -> str:
    return f"sha256-{digest_hex}"


def file_digest(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


class ArtifactStore(Protocol):
    """What every artifact backend offers."""

    async def put_bytes(self, data: bytes) -> str: ...

    async def put_file(self, path: pathlib.Path) -> str: ...

    async def get_bytes(self, key: str) -> bytes: ...

    async def get_to_file(self, key: str, path: pathlib.Path) -> pathlib.Path: ...

    async def exists(self, key: str) -> bool: ...

    async def size(self, key: str) -> int: ...


class NatsArtifactStore:
    """Artifacts in the JetStream object store ``traineragent_artifacts``."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self._store = None

    async def _obs(self):  # noqa: ANN202 - nats' ObjectStore type
        if self._store is None:
            self._store = await self._js.object_store(ARTIFACTS_BUCKET)
        return self._store

    async def put_bytes(self, data: bytes) -> str:
        key = content_key(hashlib.sha256(data).hexdigest())
        if not await self.exists(key):
            await (await self._obs()).put(key, io.BytesIO(data))
        return key

    async def put_file(self, path: pathlib.Path) -> str:
        key = content_key(file_digest(path))
        if not await self.exists(key):
            with path.open("rb") as f:
                await (await self._obs()).put(key, f)
        return key

    async def get_bytes(self, key: str) -> bytes:
        buffer = io.BytesIO()
        await self._get(key, buffer)
        return buffer.getvalue()

    async def get_to_file(self, key: str, path: pathlib.Path) -> pathlib.Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        with partial.open("wb") as f:
            await self._get(key, f)
        partial.replace(path)
        return path

    async def _get(self, key: str, sink: io.BufferedIOBase) -> None:
        try:
            await (await self._obs()).get(key, writeinto=sink)
        except (js_errors.ObjectNotFoundError, js_errors.ObjectDeletedError) as exc:
            raise NotFound(f"artifact {key} not found in the artifact store") from exc

    async def exists(self, key: str) -> bool:
        try:
            info = await (await self._obs()).get_info(key)
        except (js_errors.ObjectNotFoundError, js_errors.ObjectDeletedError):
            return False
        return not info.deleted

    async def size(self, key: str) -> int:
        try:
            info = await (await self._obs()).get_info(key)
        except (js_errors.ObjectNotFoundError, js_errors.ObjectDeletedError) as exc:
            raise NotFound(f"artifact {key} not found in the artifact store") from exc
        return int(info.size or 0)
