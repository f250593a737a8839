"""`trainer-agent run --json` on a mixed folder (sizes, RGB and grayscale, PNG and JPEG), then predict/export."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from tests.integration.helpers import write_mixed_folder

pytestmark = pytest.mark.integration
ROOT = pathlib.Path(__file__).resolve().parents[2]


def _cli(stack, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:  # noqa: ANN001
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "cli", "--gateway", stack.gateway, *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=ROOT, check=False)


@pytest.fixture(scope="module")
def mixed_run(stack, tmp_path_factory):
    folder = write_mixed_folder(tmp_path_factory.mktemp("mixed") / "mixed")
    result = _cli(stack, "run", "Tell these handwritten digits apart, accuracy at least 90%", "--data", str(folder),
                  "--json", "--name", "mixed-digits", "--max-train-minutes", "1")
    return folder, result


def test_run_json_prints_one_object_with_the_promised_keys(mixed_run):
    _, result = mixed_run
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["state"] == "SUCCEEDED"
    for key in ("job_id", "targets_met", "task_spec", "data_report"):
        assert key in report
    assert report["model_report"]["test_metrics"]["accuracy"] >= 0.8
    assert report["deployment"]["endpoint"].count(":") == 1
    assert report["deployment"]["model_name"] == "mixed-digits"
    assert report["deployment"]["latency_ms"]["p50"] > 0 and report["deployment"]["latency_ms"]["p95"] > 0
    profile = report["data_report"]["image_profile"]
    assert set(profile["formats"]) == {"PNG", "JPEG"}
    assert set(profile["modes"]) >= {"RGB", "L"}
    assert profile["min_width"] < profile["max_width"]
    # progress went to stderr, so stdout is the JSON alone
    assert "epoch" in result.stderr


def test_predict_and_export_and_undeploy(stack, mixed_run, tmp_path):
    folder, result = mixed_run
    assert result.returncode == 0, result.stderr[-3000:]
    files = sorted((folder / "digit-7").iterdir())[:3]
    predicted = _cli(stack, "predict", "mixed-digits", *map(str, files), "--json")
    assert predicted.returncode == 0, predicted.stderr
    answers = json.loads(predicted.stdout)
    assert [a["label"] for a in answers].count("digit-7") >= 2
    job_id = json.loads(result.stdout)["job_id"]
    exported = _cli(stack, "export", job_id, "--out", str(tmp_path / "out"))
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "out" / "model.onnx").stat().st_size > 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["job_id"] == job_id
    listed = _cli(stack, "deployments", "--json")
    assert "mixed-digits" in {d["name"] for d in json.loads(listed.stdout)}
    assert _cli(stack, "undeploy", "mixed-digits").returncode == 0
    listed = _cli(stack, "deployments", "--json")
    assert "mixed-digits" not in {d["name"] for d in json.loads(listed.stdout)}
    missing = _cli(stack, "predict", "mixed-digits", str(files[0]))
    assert missing.returncode == 1 and "no deployment named" in missing.stderr


def test_bad_cli_input_says_what_to_change(stack, tmp_path):
    result = _cli(stack, "run", "digits please", "--data", str(tmp_path / "nope"))
    assert result.returncode == 2 and "no such file or folder" in result.stderr
    result = _cli(stack, "status", "0000000000000000")
    assert result.returncode == 1 and "NOT_FOUND" in result.stderr
