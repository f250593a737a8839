"""The model bundle: ``model.onnx`` and ``bundle.json`` in one uncompressed tar (docs/formats.md).

The bundle is all the Server agent needs to serve a model: the graph, the class order, the
preprocessing and sample inputs to benchmark with. Reading it trusts nothing: only the two known
names, only regular files, never a path taken from the archive.
"""

from __future__ import annotations

import base64
import io
import json
import os
import pathlib
import tarfile
from collections.abc import Mapping, Sequence
from typing import Any

from services.common.errors import InvalidArgument
from services.common.preprocessing import ImagePreprocessing

FORMAT_VERSION = 1
MODEL_NAME = "model.onnx"
DESCRIPTION_NAME = "bundle.json"
MAX_SAMPLE_INPUTS = 8
PathLike = str | os.PathLike[str]


class BundleError(InvalidArgument):
    """A tar that is not a model bundle (missing, unexpected or unsafe members)."""


def describe_bundle(task_type: str, classes: Sequence[str], candidate: str, metrics: Mapping[str, float],
                    opset: int, sample_inputs: Sequence[Any], **fields: Any) -> dict[str, Any]:
    """bundle.json's content, the same for every task: the task's own fields (preprocessing,
    features, ...) come as keyword arguments; sample inputs must already be JSON-ready (at most 8 kept)."""
    return {
        "format_version": FORMAT_VERSION,
        "task_type": task_type,
        "classes": list(classes),
        "candidate": candidate,
        "metrics": {k: float(v) for k, v in metrics.items()},
        "onnx_opset": int(opset),
        "sample_inputs": list(sample_inputs)[:MAX_SAMPLE_INPUTS],
        **fields,
    }


def build_bundle_dict(task_type: str, classes: Sequence[str], spec: ImagePreprocessing, candidate: str,
                      metrics: Mapping[str, float], sample_inputs: Sequence[bytes],
                      opset: int) -> dict[str, Any]:
    """An image model's bundle.json; sample inputs (at most 8) are base64 of the encoded images."""
    samples = [base64.b64encode(data).decode("ascii") for data in list(sample_inputs)[:MAX_SAMPLE_INPUTS]]
    return describe_bundle(task_type, classes, candidate, metrics, opset, samples,
                           preprocessing=json.loads(spec.to_json()))


def _member(name: str, size: int) -> tarfile.TarInfo:
    # Fixed metadata, so the same model and description give the same bytes (content-hashed keys).
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    return info


# Files a bundle may carry besides the model and its description (e.g. a text model's tokenizer).
OPTIONAL_MEMBERS = ("tokenizer.json",)


def write_bundle(tar_path: PathLike, onnx_path: PathLike, bundle: Mapping[str, Any],
                 extra_files: Mapping[str, PathLike] | None = None) -> None:
    """Write the uncompressed tar holding model.onnx, bundle.json and any optional member."""
    unknown = sorted(set(extra_files or {}) - set(OPTIONAL_MEMBERS))
    if unknown:
        raise ValueError(f"a bundle cannot carry {unknown}; optional members are {list(OPTIONAL_MEMBERS)}")
    members = [(MODEL_NAME, pathlib.Path(onnx_path).read_bytes()),
               (DESCRIPTION_NAME, json.dumps(bundle, indent=2, sort_keys=True).encode())]
    members += [(name, pathlib.Path(path).read_bytes()) for name, path in sorted((extra_files or {}).items())]
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            tar.addfile(_member(name, len(data)), io.BytesIO(data))


def read_bundle(tar_path: PathLike, dest_dir: PathLike) -> tuple[pathlib.Path, dict[str, Any]]:
    """Extract a bundle into ``dest_dir``; return the model's path and the parsed bundle.json.

    Only model.onnx, bundle.json and the optional members are accepted, as regular files.
    """
    dest = pathlib.Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    allowed = {MODEL_NAME, DESCRIPTION_NAME, *OPTIONAL_MEMBERS}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(tar_path, "r:") as tar:
            for member in tar.getmembers():
                if member.name not in allowed or not member.isreg() or member.name in found:
                    raise BundleError(f"the model bundle holds an unexpected member {member.name!r}; a bundle "
                                      f"holds only {', '.join(sorted(allowed))}")
                handle = tar.extractfile(member)
                assert handle is not None  # a regular file always has content
                found[member.name] = handle.read()
    except tarfile.TarError as exc:
        raise BundleError(f"the model bundle is not a readable tar archive: {exc}") from exc
    missing = sorted({MODEL_NAME, DESCRIPTION_NAME} - set(found))
    if missing:
        raise BundleError(f"the model bundle lacks {', '.join(missing)}")
    try:
        description = json.loads(found[DESCRIPTION_NAME])
    except ValueError as exc:
        raise BundleError(f"the model bundle's {DESCRIPTION_NAME} is not JSON: {exc}") from exc
    if not isinstance(description, dict) or description.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"the model bundle's format_version is not {FORMAT_VERSION}")
    for name, data in found.items():
        (dest / name).write_bytes(data)
    return dest / MODEL_NAME, description


def sample_inputs(bundle: Mapping[str, Any]) -> list[bytes]:
    """The bundle's sample inputs decoded back to encoded image bytes."""
    return [base64.b64decode(text) for text in bundle.get("sample_inputs", [])]
