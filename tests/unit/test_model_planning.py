"""The Model agent's planning and choice for every task, and one real trial per dataset format.

Planning: which candidates are trained for a task, data size and set of limits (and why the others
are not); choice: the best on validation in the metric's own direction, limits respected, the
reasoning and the rejected candidates in the report. Trials: the worker's trial runner trains,
exports and bundles a text and a table model from real artifacts.
"""

from __future__ import annotations

import json
import pathlib
import tarfile
import time

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes

from services.common.config import Settings
from services.common.errors import DataError, InvalidArgument
from services.common.table_dataset import FeatureSpec, TableSpec, table_feeds, write_table_dataset
from services.common.text_dataset import write_text_dataset
from services.model import trials
from services.model.agent import ModelAgent, choose, select_candidates, selection_metric
from traineragent.v1 import common_pb2, model_pb2


def _spec(task_type: int, *, latency: float | None = None, size: float | None = None,
          targets: list[tuple[int, str, float]] = ()) -> common_pb2.TaskSpec:
    spec = common_pb2.TaskSpec(decision=common_pb2.DECISION_ACCEPT, task_type=task_type)
    if latency is not None:
        spec.constraints.max_latency_ms = latency
    if size is not None:
        spec.constraints.max_model_size_mb = size
    for metric, op, value in targets:
        spec.targets.add(metric=metric, op=op, value=value)
    return spec


def _data(task_type: int, n_train: int) -> common_pb2.DataReport:
    report = common_pb2.DataReport(dataset_artifact="sha256-x", task_type=task_type, num_examples=n_train * 2)
    report.split_sizes.train = n_train
    return report


TEXT = common_pb2.TASK_TYPE_TEXT_CLASSIFICATION


def test_text_without_limits_trains_every_family_cheapest_first():
    chosen, rejected, notes = select_candidates("text_classification", _spec(TEXT), _data(TEXT, 1000), 600)
    assert [c.name for c in chosen] == ["ngram_bag", "transformer_small", "minilm"]
    assert rejected == []
    assert "1000 training examples" in notes[0]


def test_a_one_ms_latency_limit_leaves_only_the_fast_model():
    chosen, rejected, _ = select_candidates("text_classification", _spec(TEXT, latency=1.0), _data(TEXT, 1000), 600)
    assert [c.name for c in chosen] == ["ngram_bag"]
    reasons = " ".join(rejected)
    assert "minilm:" in reasons and "transformer_small:" in reasons and "1 ms limit" in reasons and "headroom" in reasons


def test_a_size_limit_rejects_the_encoder():
    chosen, rejected, _ = select_candidates("text_classification", _spec(TEXT, size=20), _data(TEXT, 1000), 600)
    assert "minilm" not in [c.name for c in chosen]
    assert any(r.startswith("minilm:") and "20 MB limit" in r for r in rejected)


def test_too_little_data_or_budget_leaves_out_what_cannot_learn_in_time():
    chosen, rejected, _ = select_candidates("text_classification", _spec(TEXT), _data(TEXT, 60), 600)
    assert "transformer_small" not in [c.name for c in chosen]
    assert any("fewer than" in r for r in rejected)
    chosen, rejected, _ = select_candidates("text_classification", _spec(TEXT), _data(TEXT, 200_000), 60)
    assert "minilm" not in [c.name for c in chosen]
    assert any(r.startswith("minilm:") and "share of the budget" in r for r in rejected)


def test_when_nothing_fits_the_fastest_is_still_trained():
    chosen, _, notes = select_candidates("text_classification", _spec(TEXT, latency=0.001), _data(TEXT, 1000), 600)
    assert [c.name for c in chosen] == ["ngram_bag"]
    assert any("no candidate suits every limit" in n for n in notes)


def test_tables_and_images_get_their_own_candidates():
    reg = common_pb2.TASK_TYPE_TABULAR_REGRESSION
    chosen, _, _ = select_candidates("tabular_regression", _spec(reg), _data(reg, 300), 120)
    assert sorted(c.name for c in chosen) == ["gbdt", "mlp"]
    chosen, _, _ = select_candidates("image_classification", _spec(common_pb2.TASK_TYPE_IMAGE_CLASSIFICATION),
                                     _data(0, 1000), 120)
    assert sorted(c.name for c in chosen) == ["cnn_small", "resnet_mini"]


def test_selection_metric_follows_the_task_and_its_direction():
    reg = common_pb2.TASK_TYPE_TABULAR_REGRESSION
    assert selection_metric(_spec(reg), "tabular_regression") == ("mae", False)
    assert selection_metric(_spec(reg, targets=[(common_pb2.METRIC_R2, ">=", 0.8)]), "tabular_regression") == ("r2", True)
    assert selection_metric(_spec(TEXT, targets=[(common_pb2.METRIC_F1, ">=", 0.8)]), "text_classification") == ("f1", True)
    # A regression metric named for a classification task is not what validation can choose by.
    assert selection_metric(_spec(TEXT, targets=[(common_pb2.METRIC_MAE, "<=", 3)]), "text_classification") == (
        "accuracy", True)


def _trial(trial_id: str, candidate: str, metrics: dict[str, float], *, latency: float = 0.1, size: float = 1.0,
           params: int = 1000) -> common_pb2.TrialResult:
    return common_pb2.TrialResult(trial_id=trial_id, candidate=candidate, validation_metrics=metrics,
                                  test_metrics=metrics, bundle_artifact=f"sha256-{trial_id}", onnx_latency_ms=latency,
                                  model_size_mb=size, num_parameters=params)


def test_choose_regression_prefers_the_lower_error():
    spec = _spec(common_pb2.TASK_TYPE_TABULAR_REGRESSION)
    report = choose(spec, [_trial("t1-gbdt", "gbdt", {"mae": 45.0, "r2": 0.4}),
                           _trial("t2-mlp", "mlp", {"mae": 41.0, "r2": 0.45})], task="tabular_regression")
    assert report.candidate == "mlp"
    assert report.selection_metric == "mae"
    assert "lower is better" in report.reasoning
    assert [t.trial_id for t in report.leaderboard] == ["t2-mlp", "t1-gbdt"]
    assert any("t1-gbdt" in r and "45.0000" in r for r in report.rejected)


def test_choose_reports_planned_rejections_and_respects_measured_limits():
    spec = _spec(TEXT, latency=1.0)
    agent = ModelAgent(bus=None, store=None, settings=Settings.from_env())  # type: ignore[arg-type]
    plan = agent.plan(spec, _data(TEXT, 1000), 600)
    assert [t.candidate for t in plan.trials] == ["ngram_bag"]
    assert plan.trials[0].task_type == TEXT and plan.trials[0].selection_metric == "accuracy"
    results = [_trial("t1-ngram_bag", "ngram_bag", {"accuracy": 0.80}, latency=0.01),
               _trial("x-slow", "transformer_small", {"accuracy": 0.90}, latency=3.0)]
    report = choose(spec, results, task="text_classification", planned=plan)
    assert report.candidate == "ngram_bag"
    assert any(r.startswith("minilm:") for r in report.rejected)
    assert any("bare model latency 3.00 ms > 1 ms" in r for r in report.rejected)
    assert "training ngram_bag" in report.reasoning and "chose ngram_bag" in report.reasoning


def test_a_refinement_round_keeps_the_best_candidate():
    spec = _spec(common_pb2.TASK_TYPE_TABULAR_REGRESSION)
    agent = ModelAgent(bus=None, store=None, settings=Settings.from_env())  # type: ignore[arg-type]
    previous = [_trial("t1-gbdt", "gbdt", {"mae": 40.0}), _trial("t2-mlp", "mlp", {"mae": 50.0})]
    previous[0].hyperparameters_json = json.dumps({"learning_rate": 0.05, "max_iter": 400})
    plan = agent.plan(spec, _data(common_pb2.TASK_TYPE_TABULAR_REGRESSION, 300), 100, round_number=2,
                      previous=previous)
    assert [t.candidate for t in plan.trials] == ["gbdt", "gbdt"]
    assert [json.loads(t.hyperparameters_json)["learning_rate"] for t in plan.trials] == [0.025, 0.0125]
    assert all(t.trial_id.startswith("r2-") for t in plan.trials)


# --- real trials ----------------------------------------------------------------------------------------

_TOPICS = {
    "billing": ["my invoice is wrong", "I was charged twice this month", "refund the extra payment please",
                "why is my bill so high", "update the card on my account", "the payment failed again"],
    "shipping": ["where is my parcel", "the package has not arrived", "tracking number does not work",
                 "delivery is late by a week", "the courier left it at the wrong door", "ship it faster please"],
    "login": ["I cannot sign in", "password reset email never came", "my account is locked",
              "two factor code is not accepted", "login page keeps reloading", "forgot my username"],
}


@pytest.fixture(scope="module")
def text_artifact(tmp_path_factory) -> pathlib.Path:
    rows = []
    rng = np.random.default_rng(0)
    for label, phrases in _TOPICS.items():
        for i in range(30):
            text = f"{phrases[i % len(phrases)]} {['', 'today', 'again', 'thanks'][rng.integers(4)]}".strip()
            split = "train" if i < 20 else ("validation" if i < 25 else "test")
            rows.append((text, label, split))
    path = tmp_path_factory.mktemp("text") / "text.parquet"
    write_text_dataset(path, rows, sorted(_TOPICS), {"text": "message", "label": "queue"})
    return path


@pytest.fixture(scope="module")
def table_artifact(tmp_path_factory) -> pathlib.Path:
    data = load_diabetes(as_frame=True)
    frame = data.frame.rename(columns={"target": "progression"}).iloc[:300].copy()
    frame["sex"] = np.where(frame["sex"] > 0, "m", "f")
    frame.loc[frame.index[::17], "bmi"] = np.nan
    spec = TableSpec(task="regression", label_column="progression",
                     features=[FeatureSpec(c, "categorical" if c == "sex" else "numeric")
                               for c in frame.columns if c != "progression"])
    split = ["train"] * 200 + ["validation"] * 50 + ["test"] * 50
    path = tmp_path_factory.mktemp("table") / "table.parquet"
    write_table_dataset(path, frame, split, spec)
    return path


def _trial_spec(candidate: str, task_type: int, **fields) -> model_pb2.TrialSpec:
    return model_pb2.TrialSpec(trial_id=f"t1-{candidate}", candidate=candidate, task_type=task_type,
                               hyperparameters_json=json.dumps(fields), max_epochs=6)


def test_dataset_format_is_read_from_the_artifact(text_artifact, table_artifact, tmp_path):
    assert trials.dataset_format(text_artifact) == "text"
    assert trials.dataset_format(table_artifact) == "table"
    frame = pd.DataFrame({"a": [1, 2]})
    frame.to_parquet(tmp_path / "plain.parquet")
    with pytest.raises(DataError, match="not a dataset artifact"):
        trials.dataset_format(tmp_path / "plain.parquet")


def test_a_text_trial_leaves_a_served_bundle(text_artifact, tmp_path):
    seen = []
    hooks = trials.TrialHooks(on_epoch=seen.append)
    result = trials.run_trial(_trial_spec("ngram_bag", TEXT), text_artifact, tmp_path, device="cpu", worker="w1",
                              deadline_unix=time.time() + 120, hooks=hooks)
    assert result.trial_id == "t1-ngram_bag" and result.worker == "w1"
    assert result.validation_metrics["accuracy"] >= 0.9
    assert 0 < result.epochs <= 6 and len(seen) >= result.epochs
    assert result.parity_max_abs_diff < 1e-4 and result.onnx_latency_ms > 0 and result.model_size_mb > 0
    with tarfile.open(tmp_path / "bundle.tar") as tar:
        assert sorted(tar.getnames()) == ["bundle.json", "model.onnx"]
        description = json.loads(tar.extractfile("bundle.json").read())
    assert description["task_type"] == "text_classification"
    assert description["classes"] == sorted(_TOPICS)
    assert all(isinstance(t, str) for t in description["sample_inputs"])


def test_a_table_trial_leaves_a_served_bundle(table_artifact, tmp_path):
    settings = []
    spec = _trial_spec("gbdt", common_pb2.TASK_TYPE_TABULAR_REGRESSION, search=[{}, {"max_leaf_nodes": 7}])
    spec.selection_metric = "mae"
    result = trials.run_trial(spec, table_artifact, tmp_path, device="cpu", deadline_unix=time.time() + 120,
                              hooks=trials.TrialHooks(on_setting=settings.append))
    assert len(settings) == 2 and result.epochs == 2 and result.best_epoch in (1, 2)
    assert result.validation_metrics["mae"] < 60  # the mean predictor's MAE on diabetes is about 65
    assert set(result.test_metrics) >= {"mae", "rmse", "r2"}
    assert result.parity_max_abs_diff < 1e-4 and result.num_parameters > 0
    with tarfile.open(tmp_path / "bundle.tar") as tar:
        description = json.loads(tar.extractfile("bundle.json").read())
        onnx_bytes = tar.extractfile("model.onnx").read()
    assert description["task_type"] == "tabular_regression"
    row = description["sample_inputs"][0]
    table_spec = TableSpec(task="regression", label_column="progression",
                           features=[FeatureSpec(**f) for f in description["features"]])
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    (prediction,) = session.run(None, table_feeds(row, table_spec))
    assert prediction.shape == (1, 1) and np.isfinite(prediction).all()


def test_a_candidate_that_cannot_learn_the_format_is_refused(table_artifact, tmp_path):
    with pytest.raises(InvalidArgument, match="cannot learn a table dataset; candidates that can: gbdt, mlp"):
        trials.run_trial(_trial_spec("ngram_bag", TEXT), table_artifact, tmp_path, device="cpu",
                         deadline_unix=time.time() + 10)


def test_a_tie_keeps_the_smaller_model_and_says_so():
    spec = _spec(common_pb2.TASK_TYPE_TABULAR_CLASSIFICATION)
    report = choose(spec, [_trial("t1-gbdt", "gbdt", {"accuracy": 1.0}, params=2000),
                           _trial("t2-mlp", "mlp", {"accuracy": 1.0}, params=9000)], task="tabular_classification")
    assert report.candidate == "gbdt"
    assert report.rejected == ["t2-mlp (mlp): tied at validation accuracy 1.0000; the smaller model was kept"]
