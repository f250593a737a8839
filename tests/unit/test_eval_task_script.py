"""scripts/eval_task.py (make eval-task): scoring a labelled file that is not one of the project's sets."""

from __future__ import annotations

import importlib.util
import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
EMPTY = {"max_latency_ms": None, "max_model_size_mb": None, "max_train_minutes": None}


def _script():
    spec = importlib.util.spec_from_file_location("eval_task_script", ROOT / "scripts" / "eval_task.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _item(i, category, text, decision, reason=None, task_type=None, targets=()):
    return {"id": f"u{i}", "lang": "en", "category": category, "text": text,
            "expected": {"decision": decision, "reject_reason": reason, "task_type": task_type,
                         "targets": list(targets), "constraints": dict(EMPTY), "labels": [],
                         "label_column": None, "input_columns": []}}


def test_a_users_own_file_is_scored(tmp_path, capsys, monkeypatch):
    from services.task import semantic_review

    monkeypatch.setenv(semantic_review.ENV_SWITCH, "0")  # the script sets it; restored after the test
    items = [
        _item(1, "accept", "Sort support tickets into four queues, F1 at least 0.85", "accept",
              task_type="text_classification", targets=[{"metric": "f1", "op": ">=", "value": 0.85}]),
        _item(2, "infeasible", "Predict this week's winning lottery numbers", "reject", "infeasible"),
        # labelled wrongly on purpose: the brain accepts it, so the file scores 2 of 3
        _item(3, "clarify", "Classify product photos into five defect types", "clarify"),
    ]
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps(item) for item in items) + "\n", encoding="utf-8")
    assert _script().main(["--file", str(path), "--json", "--semantic", "off"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"mine", "all"}
    assert out["mine"]["decision_accuracy"] == pytest.approx(2 / 3)
    assert out["mine"]["infeasible_refusal_rate"] == 1.0
    assert [error["id"] for error in out["mine"]["errors"]] == ["u3"]


def test_a_missing_file_is_named(tmp_path, capsys):
    assert _script().main(["--file", str(tmp_path / "nope.jsonl")]) == 2
    assert "nope.jsonl" in capsys.readouterr().err
