"""The committed generated code matches protos/ (make protos regenerates it)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_generated_code_is_fresh(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--out", str(tmp_path)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert generated, "protoc generated nothing"
    stale = [str(rel) for rel in generated if (ROOT / rel).read_bytes() != (tmp_path / rel).read_bytes()]
    assert not stale, f"generated code is stale, run `make protos`: {stale}"
    committed = sorted(
        p.relative_to(ROOT) for d in ("traineragent", "inference") for p in (ROOT / d).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    assert committed == generated, "generated files differ from the committed set; run `make protos`"


def test_oip_proto_keeps_tritons_field_numbers():
    from inference import grpc_predict_v2_pb2 as oip

    request = oip.ModelInferRequest.DESCRIPTOR
    assert request.fields_by_name["raw_input_contents"].number == 7
    assert request.fields_by_name["inputs"].number == 5
    response = oip.ModelInferResponse.DESCRIPTOR
    assert response.fields_by_name["raw_output_contents"].number == 6
    assert oip.InferTensorContents.DESCRIPTOR.fields_by_name["bytes_contents"].number == 8
    assert oip.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name == "inference.GRPCInferenceService"
