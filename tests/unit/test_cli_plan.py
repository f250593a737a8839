"""`trainer-agent plan` without a stack: the Task agent's own code in-process, one JSON line per request."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
KEYS = {"id", "decision", "reject_reason", "task_type", "targets", "constraints", "labels", "label_column",
        "input_columns", "questions", "explanation", "brain", "fallback_reason"}


def _plan(tmp_path: pathlib.Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINERAGENT_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "cli", "--state-dir", str(tmp_path / "state"), "plan", *args],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60, check=False)


def test_plan_file_prints_one_line_per_request(tmp_path):
    requests = tmp_path / "requests.jsonl"
    lines = [
        {"id": "digits", "text": "Recognise handwritten digits, at least 97% accuracy, under 5 ms per image"},
        {"id": 2, "text": "predict next week's lottery numbers"},
        {"id": "vague", "text": "make me a model"},
    ]
    requests.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    result = _plan(tmp_path, "--file", str(requests), "--json")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["id"] for r in rows] == ["digits", 2, "vague"]
    assert all(set(r) == KEYS for r in rows)
    assert rows[0]["decision"] == "accept" and rows[0]["constraints"]["max_latency_ms"] == 5.0
    assert rows[0]["constraints"]["max_model_size_mb"] is None
    assert (rows[1]["decision"], rows[1]["reject_reason"]) == ("reject", "infeasible")
    assert rows[2]["decision"] == "clarify" and rows[2]["questions"]
    assert all(r["brain"] == "rules" for r in rows)


def test_plan_rejects_a_malformed_line_with_its_number(tmp_path):
    requests = tmp_path / "bad.jsonl"
    requests.write_text('{"id": 1, "text": "classify photos"}\nnot json\n')
    result = _plan(tmp_path, "--file", str(requests), "--json")
    assert result.returncode == 2
    assert "line 2" in result.stderr


def test_plan_llm_without_an_endpoint_says_why_it_used_the_rules(tmp_path):
    result = _plan(tmp_path, "classify photos of cats, accuracy at least 0.9", "--brain", "llm", "--json")
    assert result.returncode == 0, result.stderr
    spec = json.loads(result.stdout)
    assert spec["brain"] == "rules" and spec["fallback_reason"]
