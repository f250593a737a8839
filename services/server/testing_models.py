"""A tiny real ONNX classifier whose answer a test can predict, so the endpoint is testable without training.

The graph undoes the bundle's normalisation, takes each image's mean brightness b in [0, 1] and
scores class k by closeness of b to the centre of bin k: the predicted class is
``min(int(b * K), K - 1)``. A solid grey image of value v (0..255) is therefore classified as
``brightness_label(v / 255, classes)``. Built with ``onnx.helper`` so tests need no torch.
"""

from __future__ import annotations

import base64
import io
import json
import pathlib
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from services.common.preprocessing import ImagePreprocessing

OPSET = 17
# Large enough that softmax is confident away from bin edges, small enough to stay finite.
SHARPNESS = 50.0


def brightness_label(brightness: float, classes: Sequence[str]) -> str:
    """The class the test model predicts for mean brightness ``brightness`` on the 0..1 scale."""
    return classes[min(int(brightness * len(classes)), len(classes) - 1)]


def solid_image(value: int | tuple[int, ...], size: tuple[int, int] = (24, 24), mode: str = "L",
                fmt: str = "PNG") -> bytes:
    """Encoded bytes of a one-colour image: ``value`` is the grey level or the colour tuple."""
    buffer = io.BytesIO()
    Image.new(mode, size, value).save(buffer, format=fmt)
    return buffer.getvalue()


def build_brightness_model(classes: Sequence[str], spec: ImagePreprocessing) -> onnx.ModelProto:
    """The graph: pixels [N, C, H, W] -> scores [N, len(classes)] (softmax)."""
    channels, count = spec.channels, len(classes)
    per_channel = (1, channels, 1, 1)
    centres = (np.arange(count, dtype=np.float32) + 0.5) / count
    initializers = [
        numpy_helper.from_array(np.asarray(spec.std, np.float32).reshape(per_channel), "std"),
        numpy_helper.from_array(np.asarray(spec.mean, np.float32).reshape(per_channel), "mean"),
        numpy_helper.from_array(centres.reshape(1, count), "centres"),
        numpy_helper.from_array(np.asarray([-SHARPNESS], np.float32), "neg_sharpness"),
    ]
    nodes = [
        helper.make_node("Mul", ["pixels", "std"], ["scaled"]),
        helper.make_node("Add", ["scaled", "mean"], ["unit"]),  # back on the 0..1 scale
        helper.make_node("ReduceMean", ["unit"], ["brightness4d"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Flatten", ["brightness4d"], ["brightness"], axis=1),  # [N, 1]
        helper.make_node("Sub", ["brightness", "centres"], ["distance"]),  # [N, K]
        helper.make_node("Mul", ["distance", "distance"], ["squared"]),
        helper.make_node("Mul", ["squared", "neg_sharpness"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["scores"], axis=-1),
    ]
    shape = ["N", channels, spec.height, spec.width]
    pixels = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, shape)
    scores = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", count])
    graph = helper.make_graph(nodes, "brightness_classifier", [pixels], [scores], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="traineragent-tests")
    model.ir_version = 8  # readable by every onnxruntime this project accepts
    onnx.checker.check_model(model, full_check=True)
    return model


def make_test_bundle(directory: str | pathlib.Path, classes: Sequence[str],
                     spec: ImagePreprocessing) -> pathlib.Path:
    """Write model.onnx and bundle.json (docs/formats.md layout) for the brightness classifier."""
    root = pathlib.Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    onnx.save_model(build_brightness_model(classes, spec), str(root / "model.onnx"))
    samples = [solid_image(int(255 * (k + 0.5) / len(classes)), mode=spec.mode) for k in range(len(classes))]
    description = {
        "format_version": 1,
        "task_type": "image_classification",
        "classes": list(classes),
        "preprocessing": json.loads(spec.to_json()),
        "candidate": "test_brightness_bins",
        "metrics": {},
        "onnx_opset": OPSET,
        "sample_inputs": [base64.b64encode(data).decode("ascii") for data in samples],
    }
    (root / "bundle.json").write_text(json.dumps(description, indent=2, sort_keys=True), encoding="utf-8")
    return root
