"""ONNX export of a trained classifier, with proof that the export computes what PyTorch computes.

The exported graph is the model plus softmax: input ``pixels`` float32 [N, C, H, W] (already
preprocessed), output ``scores`` float32 [N, num_classes], any batch size, one self-contained
file. The TorchScript exporter is used where torch still has it (it writes a compact graph with
the weights inside); otherwise the dynamo exporter, whose weights are then folded back into the file.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import time
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from services.common.errors import TrainingError
from services.common.preprocessing import ImagePreprocessing

OPSET = 18
INPUT_NAME = "pixels"
OUTPUT_NAME = "scores"
PARITY_TOLERANCE = 1e-4
PathLike = str | os.PathLike[str]


class ParityError(TrainingError):
    """The ONNX model's scores differ from PyTorch's by more than the tolerance."""


class _WithSoftmax(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(pixels), dim=1)


def export_onnx(model: nn.Module, spec: ImagePreprocessing, path: PathLike, num_classes: int) -> str:
    """Write ``model`` (logits) as a softmax-scoring ONNX file at ``path``; return the exporter used."""
    path = pathlib.Path(path)
    wrapped = _WithSoftmax(model.to("cpu")).eval()
    example = torch.zeros(2, spec.channels, spec.height, spec.width)
    exporter = export_single_file(wrapped, (example,), path, {INPUT_NAME: {0: "batch"}})
    check_single_file(path, {INPUT_NAME: onnx.TensorProto.FLOAT}, num_classes)
    return exporter


def export_single_file(wrapped: nn.Module, example: tuple[torch.Tensor, ...], path: pathlib.Path,
                       dynamic_axes: dict[str, dict[int, str]]) -> str:
    """Export ``wrapped`` (inputs named as ``dynamic_axes``'s keys, in order; output ``scores``) to one file.

    The TorchScript exporter first (``dynamo=False`` still exists in torch 2.13 and needs no extra
    package); the dynamo exporter when it is gone or fails, its weights folded back into the one file.
    Returns which exporter wrote it.
    """
    try:
        _export_torchscript(wrapped, example, path, dynamic_axes)
        return "torchscript"
    except Exception:  # noqa: BLE001 - the legacy exporter may be gone or fail; dynamo is the fallback
        _remove_side_files(path)
        _export_dynamo(wrapped, example, path, dynamic_axes)
        return "dynamo"


def _export_torchscript(wrapped: nn.Module, example: tuple[torch.Tensor, ...], path: pathlib.Path,
                        dynamic_axes: dict[str, dict[int, str]]) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice and tracer warnings
        torch.onnx.export(
            wrapped, example, str(path), dynamo=False, opset_version=OPSET,
            input_names=list(dynamic_axes), output_names=[OUTPUT_NAME],
            dynamic_axes={**dynamic_axes, OUTPUT_NAME: {0: "batch"}},
        )


def _export_dynamo(wrapped: nn.Module, example: tuple[torch.Tensor, ...], path: pathlib.Path,
                   dynamic_axes: dict[str, dict[int, str]]) -> None:
    dims: dict[str, torch.export.Dim] = {}
    shapes = {name: {axis: dims.setdefault(label, torch.export.Dim(label, min=1)) for axis, label in axes.items()}
              for name, axes in dynamic_axes.items()}
    with torch.no_grad():
        program = torch.onnx.export(
            wrapped, example, dynamo=True, opset_version=OPSET, input_names=list(dynamic_axes),
            output_names=[OUTPUT_NAME], dynamic_shapes=shapes, external_data=False, verbose=False,
        )
    program.save(str(path), external_data=False)
    # Belt and braces: fold any external tensors back into the one file.
    proto = onnx.load(str(path), load_external_data=True)
    onnx.save_model(proto, str(path), save_as_external_data=False)
    _remove_side_files(path)


def _remove_side_files(path: pathlib.Path) -> None:
    for side in path.parent.glob(path.name + ".data*"):
        with contextlib.suppress(OSError):
            side.unlink()


def check_single_file(path: pathlib.Path, inputs: dict[str, int], num_classes: int) -> None:
    """The file is valid ONNX with no external weights, these inputs (name: element type) and scores [batch, C]."""
    proto = onnx.load(str(path), load_external_data=False)
    onnx.checker.check_model(str(path), full_check=True)  # by path: files over 2 GB are checked too
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        raise TrainingError(f"the exported ONNX model {path.name} refers to external weight files")
    found = {i.name: i.type.tensor_type.elem_type for i in proto.graph.input}
    outputs = [o.name for o in proto.graph.output]
    if found != inputs or outputs != [OUTPUT_NAME]:
        raise TrainingError(f"the exported ONNX model has inputs {sorted(found)} and outputs {outputs}, "
                            f"expected {sorted(inputs)} and [{OUTPUT_NAME!r}]")
    dims = [d.dim_param or d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
    if len(dims) != 2 or dims[1] != num_classes:
        raise TrainingError(f"the exported ONNX model outputs shape {dims}, expected [batch, {num_classes}]")


def _session(onnx_path: PathLike) -> ort.InferenceSession:
    return ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])


def check_parity(model: nn.Module, onnx_path: PathLike, x: np.ndarray) -> float:
    """Max |softmax(model(x)) - onnx scores| over one image and the whole batch; ParityError past 1e-4."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if len(x) == 0:
        raise ValueError("the parity check needs at least one preprocessed image")
    session = _session(onnx_path)
    model = model.to("cpu").eval()
    worst = 0.0
    for batch in (x[:1], x):  # batch size 1 and > 1: a fixed batch axis would break one of them
        with torch.no_grad():
            expected = torch.softmax(model(torch.from_numpy(batch)), dim=1).numpy()
        (actual,) = session.run([OUTPUT_NAME], {INPUT_NAME: batch})
        if actual.shape != expected.shape:
            raise ParityError(f"ONNX scores have shape {actual.shape}, PyTorch's {expected.shape}")
        worst = max(worst, float(np.max(np.abs(actual - expected))))
    if worst > PARITY_TOLERANCE:
        raise ParityError(f"the ONNX model's scores differ from PyTorch's by up to {worst:.2e} "
                          f"(tolerance {PARITY_TOLERANCE:.0e})")
    return worst


def measure_onnx_latency_ms(onnx_path: PathLike, x_single: np.ndarray, runs: int = 50) -> float:
    """Mean milliseconds of one ``session.run`` on a single input, after warm-up (the bare model)."""
    session = _session(onnx_path)
    feed = {INPUT_NAME: np.ascontiguousarray(x_single[:1], dtype=np.float32)}
    for _ in range(max(3, runs // 10)):
        session.run([OUTPUT_NAME], feed)
    started = time.perf_counter()
    for _ in range(runs):
        session.run([OUTPUT_NAME], feed)
    return (time.perf_counter() - started) * 1000.0 / runs
