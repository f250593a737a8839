"""`trainer-agent predict`: send images, texts or table rows to a deployment over the Open Inference Protocol.

Everything sent is raw (encoded image files, strings, a row's values by column name): the endpoint
does all the preprocessing. A table row's column types come from the endpoint's ModelMetadata.
"""

from __future__ import annotations

import json
import math
import pathlib
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
import numpy as np

from inference import grpc_predict_v2_pb2 as oip
from inference import grpc_predict_v2_pb2_grpc as oip_grpc
from traineragent.v1 import common_pb2

TIMEOUT_S = 60
TOP = 3


class PredictError(ValueError):
    """Input the command cannot send as it is; the message says what to change."""


def encode_bytes_tensor(items: list[bytes]) -> bytes:
    """BYTES elements as the protocol's raw form: a 4-byte little-endian length before each."""
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def decode_bytes_tensor(raw: bytes) -> list[bytes]:
    items, offset = [], 0
    while offset < len(raw):
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        items.append(raw[offset : offset + length])
        offset += length
    return items


def predict_files(deployment: common_pb2.Deployment, files: list[pathlib.Path]) -> list[dict]:
    """Encoded image files -> [{"file", "label", "top": [(class, score), ...]}]."""
    request = oip.ModelInferRequest(model_name=deployment.model_name)
    _add_bytes(request, "image", [f.read_bytes() for f in files])
    outputs, classes = _infer(deployment, request)
    return [{"file": str(f), **answer} for f, answer in zip(files, _classified(outputs, classes), strict=True)]


def predict_texts(deployment: common_pb2.Deployment, texts: Sequence[str]) -> list[dict]:
    """Raw strings -> [{"text", "label", "top": [(class, score), ...]}]."""
    request = oip.ModelInferRequest(model_name=deployment.model_name)
    _add_bytes(request, "text", [t.encode("utf-8") for t in texts])
    outputs, classes = _infer(deployment, request)
    return [{"text": t, **answer} for t, answer in zip(texts, _classified(outputs, classes), strict=True)]


def predict_rows(deployment: common_pb2.Deployment, rows: Sequence[Mapping[str, Any]],
                 ignore_extra: bool = False) -> list[dict]:
    """Table rows by column name -> [{"row", "label", "top"}] or [{"row", "prediction"}].

    Each of the model's columns is sent as its own input (a column absent from a row, None or an
    empty string is a missing value). A column the model does not read is an error, unless
    ``ignore_extra`` (a CSV file usually holds the target and other columns too).
    """
    if not rows:
        raise PredictError("no rows to send")
    with grpc.insecure_channel(deployment.endpoint) as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        metadata = stub.ModelMetadata(oip.ModelMetadataRequest(name=deployment.model_name), timeout=TIMEOUT_S)
        datatypes = {t.name: t.datatype for t in metadata.inputs}
        if not ignore_extra:
            extra = sorted({str(k) for row in rows for k in row} - set(datatypes))
            if extra:
                raise PredictError(f"the model does not read the columns {extra}; its columns are "
                                   f"{list(datatypes)}")
        request = oip.ModelInferRequest(model_name=deployment.model_name)
        for name, datatype in datatypes.items():
            values = [row.get(name) for row in rows]
            if datatype == "BYTES":
                _add_bytes(request, name, [_category(v).encode("utf-8") for v in values])
            else:
                numbers = np.asarray([_number(v, name, i) for i, v in enumerate(values)], dtype="<f4")
                request.inputs.add(name=name, datatype="FP32", shape=[len(values)])
                request.raw_input_contents.append(numbers.tobytes())
        response = stub.ModelInfer(request, timeout=TIMEOUT_S)
    outputs, classes = _outputs(response, deployment)
    if "prediction" in outputs:
        return [{"row": i, "prediction": float(v)} for i, v in enumerate(np.asarray(outputs["prediction"]).reshape(-1))]
    return [{"row": i, **answer} for i, answer in enumerate(_classified(outputs, classes))]


def parse_rows(texts: Sequence[str]) -> list[dict[str, Any]]:
    """``--row`` values: each a JSON object of column -> value."""
    rows = []
    for text in texts:
        try:
            row = json.loads(text)
        except ValueError as exc:
            raise PredictError(f"--row {text!r} is not JSON ({exc}); write it as '{{\"column\": value, ...}}'") from None
        if not isinstance(row, dict):
            raise PredictError(f"--row {text!r} is not a JSON object; write it as '{{\"column\": value, ...}}'")
        rows.append(row)
    return rows


def read_csv_rows(path: pathlib.Path) -> list[dict[str, Any]]:
    """A CSV (or .tsv) file's rows by column name, values as text, as the Data agent reads such files."""
    import pandas as pd  # only this option needs it

    try:
        frame = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",", dtype=str)
    except (OSError, ValueError) as exc:
        raise PredictError(f"cannot read {path} as CSV: {exc}") from None
    frame = frame.astype(object).where(frame.notna(), None)
    return [dict(row) for row in frame.to_dict(orient="records")]


# --- helpers -------------------------------------------------------------------------------------------


def _add_bytes(request: oip.ModelInferRequest, name: str, items: list[bytes]) -> None:
    request.inputs.add(name=name, datatype="BYTES", shape=[len(items)])
    request.raw_input_contents.append(encode_bytes_tensor(items))


def _category(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = str(value)
    return "" if not text.strip() else text


def _number(value: Any, column: str, index: int) -> float:
    if value is None or (isinstance(value, str) and not value.strip()):
        return math.nan
    if isinstance(value, bool):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise PredictError(f"row {index}: column {column!r} is numeric and {value!r} is not a number") from None


def _infer(deployment: common_pb2.Deployment, request: oip.ModelInferRequest) -> tuple[dict[str, Any], list[str]]:
    with grpc.insecure_channel(deployment.endpoint) as channel:
        response = oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=TIMEOUT_S)
    return _outputs(response, deployment)


def _outputs(response: oip.ModelInferResponse, deployment: common_pb2.Deployment) -> tuple[dict[str, Any], list[str]]:
    outputs: dict[str, Any] = {}
    for meta, raw in zip(response.outputs, response.raw_output_contents, strict=False):
        if meta.datatype == "BYTES":
            outputs[meta.name] = [item.decode() for item in decode_bytes_tensor(raw)]
        else:
            outputs[meta.name] = np.frombuffer(raw, dtype="<f4").reshape(tuple(meta.shape))
    classes = json.loads(response.parameters["classes"].string_param) if "classes" in response.parameters \
        else list(deployment.classes)
    return outputs, classes


def _classified(outputs: Mapping[str, Any], classes: Sequence[str]) -> list[dict]:
    results = []
    for label, row in zip(outputs["label"], outputs["scores"], strict=True):
        order = np.argsort(-row)[:TOP]
        results.append({"label": label, "top": [(classes[i], float(row[i])) for i in order]})
    return results
