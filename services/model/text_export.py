"""ONNX export of a text classifier, its parity proof, and the text model bundle (docs/formats.md).

The exported graph is the model plus softmax: inputs ``input_ids`` and ``attention_mask`` int64
[N, L] (both axes dynamic), output ``scores`` float32 [N, C]; one self-contained file (MiniLM's
90 MB included). Strings become those inputs through
:func:`services.common.text_preprocessing.encode_texts`, in the parity check as at the endpoint.

The bundle is the image bundle's tar (same fixed member metadata, so equal content gives equal
bytes) with a third member, ``tokenizer.json``, for tokenizer models; the reader accepts those three
names only, regular files only, and never takes a path from the archive.
"""

from __future__ import annotations

import json
import os
import pathlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from services.common.bundle import BundleError, describe_bundle, read_bundle, write_bundle
from services.common.text_preprocessing import TOKENIZER_FILE, TextPreprocessing
from services.model.export import PARITY_TOLERANCE, ParityError, check_single_file, export_single_file

__all__ = [
    "OPSET", "INPUT_NAMES", "OUTPUT_NAME", "TASK_TYPE", "PARITY_TOLERANCE", "ParityError", "export_text_onnx",
    "check_text_parity", "measure_text_latency_ms", "build_text_bundle_dict", "build_text_bundle",
    "read_text_bundle", "onnx_opset",
]

OPSET = 18
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "scores"
TASK_TYPE = "text_classification"
PathLike = str | os.PathLike[str]


class _WithSoftmax(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(input_ids, attention_mask), dim=1)


def _example(spec: TextPreprocessing) -> tuple[torch.Tensor, torch.Tensor]:
    """Two rows of unequal length: a tracer must see real padding, or a model may drop its mask."""
    length = max(2, min(7, spec.max_length))
    high = max(2, spec.vocab_size)
    input_ids = torch.randint(1, high, (2, length), generator=torch.Generator().manual_seed(0))
    attention_mask = torch.ones(2, length, dtype=torch.int64)
    attention_mask[1, length // 2 + 1:] = 0
    input_ids[1, length // 2 + 1:] = 0
    return input_ids, attention_mask


def export_text_onnx(model: nn.Module, spec: TextPreprocessing, path: PathLike, num_classes: int) -> str:
    """Write ``model`` (logits) as a softmax-scoring ONNX file at ``path``; return the exporter used."""
    path = pathlib.Path(path)
    wrapped = _WithSoftmax(model.to("cpu")).eval()
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    exporter = export_single_file(wrapped, _example(spec), path, axes)
    check_single_file(path, dict.fromkeys(INPUT_NAMES, onnx.TensorProto.INT64), num_classes)
    return exporter


def onnx_opset(path: PathLike) -> int:
    """The default-domain opset an ONNX file was written for."""
    proto = onnx.load(str(path), load_external_data=False)
    return next((int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")), OPSET)


def _session(onnx_path: PathLike) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])


def _trim(feeds: Mapping[str, np.ndarray], rows: slice) -> dict[str, np.ndarray]:
    """Rows of an encoded batch, cut to their own longest text (as the endpoint would encode them alone)."""
    mask = np.ascontiguousarray(feeds["attention_mask"][rows], dtype=np.int64)
    length = max(1, int(mask.sum(1).max())) if len(mask) else 1
    ids = np.ascontiguousarray(feeds["input_ids"][rows], dtype=np.int64)
    return {"input_ids": np.ascontiguousarray(ids[:, :length]), "attention_mask": np.ascontiguousarray(mask[:, :length])}


def check_text_parity(model: nn.Module, onnx_path: PathLike, feeds: Mapping[str, np.ndarray]) -> float:
    """Max |softmax(model) - ONNX scores| on the first text alone and on the whole padded batch.

    Also compares the first text's ONNX scores alone and inside the padded batch, so an endpoint's
    answer cannot depend on which other texts share its request. ParityError past 1e-4, and when the
    batch does not hold texts of different lengths (it would not prove the dynamic axes).
    """
    lengths = np.asarray(feeds["attention_mask"]).sum(1)
    if len(lengths) < 2 or lengths.min() == lengths.max():
        raise ValueError("the parity check needs at least two encoded texts of different lengths")
    session = _session(onnx_path)
    model = model.to("cpu").eval()
    single, batch = _trim(feeds, slice(0, 1)), _trim(feeds, slice(None))
    worst, scores = 0.0, []
    for part in (single, batch):  # batch 1 and > 1, and sequence lengths that differ from the export's
        with torch.no_grad():
            expected = torch.softmax(model(*(torch.from_numpy(part[name]) for name in INPUT_NAMES)), dim=1).numpy()
        (actual,) = session.run([OUTPUT_NAME], part)
        if actual.shape != expected.shape:
            raise ParityError(f"ONNX scores have shape {actual.shape}, PyTorch's {expected.shape}")
        if not np.all(np.isfinite(actual)):
            raise ParityError("the ONNX model outputs NaN or infinity")
        worst = max(worst, float(np.max(np.abs(actual - expected))))
        scores.append(actual)
    padding_effect = float(np.max(np.abs(scores[0][0] - scores[1][0])))
    if max(worst, padding_effect) > PARITY_TOLERANCE:
        raise ParityError(f"the ONNX model's scores differ from PyTorch's by up to {worst:.2e} and change by "
                          f"{padding_effect:.2e} with padding (tolerance {PARITY_TOLERANCE:.0e})")
    return max(worst, padding_effect)


def measure_text_latency_ms(onnx_path: PathLike, feeds_single: Mapping[str, np.ndarray], runs: int = 100) -> float:
    """Mean milliseconds of one ``session.run`` on one encoded text, after warm-up (the bare model)."""
    session = _session(onnx_path)
    feeds = _trim(feeds_single, slice(0, 1))
    for _ in range(max(3, runs // 10)):
        session.run([OUTPUT_NAME], feeds)
    started = time.perf_counter()
    for _ in range(runs):
        session.run([OUTPUT_NAME], feeds)
    return (time.perf_counter() - started) * 1000.0 / runs


# --- the bundle -----------------------------------------------------------------------------------


def build_text_bundle_dict(classes: Sequence[str], spec: TextPreprocessing, candidate: str,
                           metrics: Mapping[str, float], sample_inputs: Sequence[str], opset: int) -> dict[str, Any]:
    """bundle.json for a text model (docs/formats.md); at most 8 raw sample texts."""
    return describe_bundle(TASK_TYPE, classes, candidate, metrics, opset, [str(t) for t in sample_inputs],
                           text_preprocessing=json.loads(spec.to_json()))


def _tokenizer_expected(bundle: Mapping[str, Any]) -> bool:
    spec = bundle.get("text_preprocessing") or {}
    return isinstance(spec, Mapping) and spec.get("kind") == "tokenizer"


def build_text_bundle(tar_path: PathLike, onnx_path: PathLike, bundle: Mapping[str, Any],
                      tokenizer_path: PathLike | None = None) -> None:
    """Write the uncompressed tar: model.onnx, bundle.json and (tokenizer models) tokenizer.json."""
    if _tokenizer_expected(bundle) != (tokenizer_path is not None):
        raise ValueError("a tokenizer model's bundle needs its tokenizer.json, and only such a bundle has one")
    write_bundle(tar_path, onnx_path, bundle, {TOKENIZER_FILE: tokenizer_path} if tokenizer_path is not None else None)


def read_text_bundle(tar_path: PathLike, dest_dir: PathLike) -> tuple[pathlib.Path, dict[str, Any], pathlib.Path | None]:
    """Extract a text bundle into ``dest_dir``: the model's path, the parsed bundle.json, the tokenizer's path."""
    model_path, description = read_bundle(tar_path, dest_dir)
    tokenizer = model_path.parent / TOKENIZER_FILE
    if description.get("task_type") != TASK_TYPE:
        raise BundleError(f"the bundle's task_type is {description.get('task_type')!r}, not {TASK_TYPE!r}")
    try:
        TextPreprocessing.from_dict(description.get("text_preprocessing") or {})
    except (ValueError, TypeError, KeyError) as exc:
        raise BundleError(f"the text model bundle's text_preprocessing is not usable: {exc}") from exc
    if _tokenizer_expected(description) != tokenizer.exists():
        raise BundleError(f"the text model bundle's {TOKENIZER_FILE} is missing or does not belong to its "
                          "text_preprocessing")
    return model_path, description, tokenizer if tokenizer.exists() else None
