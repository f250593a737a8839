"""`trainer-agent predict`: send local files to a deployment over the Open Inference Protocol."""

from __future__ import annotations

import json
import pathlib
import struct

import grpc
import numpy as np

from inference import grpc_predict_v2_pb2 as oip
from inference import grpc_predict_v2_pb2_grpc as oip_grpc
from traineragent.v1 import common_pb2


def encode_bytes_tensor(items: list[bytes]) -> bytes:
    """BYTES elements as the protocol's raw form: a 4-byte little-endian length before each."""
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def predict_files(deployment: common_pb2.Deployment, files: list[pathlib.Path]) -> list[dict]:
    images = [f.read_bytes() for f in files]
    request = oip.ModelInferRequest(model_name=deployment.model_name)
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = "image", "BYTES"
    tensor.shape.append(len(images))
    request.raw_input_contents.append(encode_bytes_tensor(images))
    with grpc.insecure_channel(deployment.endpoint) as channel:
        response = oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)
    outputs = {o.name: (o, raw) for o, raw in zip(response.outputs, response.raw_output_contents, strict=False)}
    classes = json.loads(response.parameters["classes"].string_param) if "classes" in response.parameters \
        else list(deployment.classes)
    scores_meta, scores_raw = outputs["scores"]
    scores = np.frombuffer(scores_raw, dtype="<f4").reshape(tuple(scores_meta.shape))
    labels = decode_bytes_tensor(outputs["label"][1])
    results = []
    for f, label, row in zip(files, labels, scores, strict=True):
        order = np.argsort(-row)[:3]
        results.append({"file": str(f), "label": label.decode(), "top": [(classes[i], float(row[i])) for i in order]})
    return results


def decode_bytes_tensor(raw: bytes) -> list[bytes]:
    items, offset = [], 0
    while offset < len(raw):
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        items.append(raw[offset : offset + length])
        offset += length
    return items
