"""Text and table models served by the real endpoint on loopback, from REAL bundles trained here.

A tiny ngram_bag (hashed n-grams) and a tiny transformer_small (its own tokenizer.json) are trained
for a few epochs on generated sentences; gbdt table models are trained on a small churn frame
(a categorical column and missing values) and on scikit-learn's bundled diabetes table with a
categorical band added. Each bundle is written and read back by the training worker's own code,
served with the real Endpoint, and the endpoint's answers are compared with the trained model's
direct predictions on held-out inputs: raw strings in for text, one input per column for tables.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes

from cli.predict import PredictError, predict_rows, predict_texts, read_csv_rows
from inference import grpc_predict_v2_pb2 as pb
from inference import grpc_predict_v2_pb2_grpc as pb_grpc
from services.common.table_dataset import (
    FeatureSpec,
    TableSpec,
    TableSplits,
    load_table_dataset,
    table_feeds,
    write_table_dataset,
)
from services.common.text_dataset import TextSplits
from services.model import tabular, tabular_export, text_export, text_training
from services.server.bench import benchmark_endpoint
from services.server.endpoint import Endpoint
from services.server.oip import InferenceServicer
from services.server.runtime import Runtime, TableRuntime, TextRuntime, load_runtime
from traineragent.v1 import common_pb2

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
MAX_BATCH = 64
TEXT_CLASSES = ["billing", "shipping", "technical"]
WORDS = {
    "billing": ["invoice", "refund", "charge", "payment", "receipt", "bill"],
    "shipping": ["parcel", "delivery", "courier", "package", "tracking", "shipment"],
    "technical": ["app", "login", "crash", "error", "password", "screen"],
}
OPENERS = ["hello", "hi team", "urgent", "good morning", "please help", "question"]
PROBLEMS = ["is wrong", "never arrived", "keeps failing", "was doubled", "looks broken", "is missing"]
CHURN_CLASSES = ["no", "yes"]


# --- data and models ---------------------------------------------------------------------------------


def _sentences(count: int, seed: int) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(count):
        k = i % len(TEXT_CLASSES)
        words = WORDS[TEXT_CLASSES[k]]
        texts.append(f"{OPENERS[rng.integers(len(OPENERS))]}, my {words[rng.integers(len(words))]} "
                     f"{PROBLEMS[rng.integers(len(PROBLEMS))]} and the {words[rng.integers(len(words))]} too")
        labels.append(k)
    return texts, np.asarray(labels, dtype=np.int64)


def _text_splits() -> TextSplits:
    train, train_y = _sentences(48, 0)
    val, val_y = _sentences(12, 1)
    test, test_y = _sentences(12, 2)
    return TextSplits(classes=TEXT_CLASSES, source_columns={"text": "body", "label": "queue"},
                      train_texts=train, train_labels=train_y, validation_texts=val, validation_labels=val_y,
                      test_texts=test, test_labels=test_y)


# Held-out texts: the generator's, plus what clients really send (empty, Unicode, unknown words, long).
HELD_OUT_TEXTS = [*_sentences(9, 7)[0], "", "Ｉｎｖｏｉｃｅ refund ✉ — ünïcödé", "zzz qqq unseen words only",
                  "my parcel " * 200]


@dataclasses.dataclass
class TextModel:
    outcome: text_training.TextOutcome
    directory: pathlib.Path


def _train_text(candidate: str, hp: dict[str, Any], tmp: pathlib.Path) -> TextModel:
    splits = _text_splits()
    outcome = text_training.train_text_classifier(splits, candidate, hp, max_epochs=3, deadline_unix=time.time() + 60,
                                                  device="cpu", work_dir=tmp / "work")
    onnx_path = tmp / "model.onnx"
    text_export.export_text_onnx(outcome.model, outcome.preprocessing, onnx_path, len(TEXT_CLASSES))
    description = text_export.build_text_bundle_dict(TEXT_CLASSES, outcome.preprocessing, candidate,
                                                     outcome.test_metrics, splits.test_texts[:8], text_export.OPSET)
    text_export.build_text_bundle(tmp / "bundle.tar", onnx_path, description, outcome.tokenizer_path)
    _, _, tokenizer = text_export.read_text_bundle(tmp / "bundle.tar", tmp / "served")
    assert (tokenizer is not None) == (candidate != "ngram_bag")
    return TextModel(outcome, tmp / "served")


def _direct_text_scores(model: TextModel, texts: list[str]) -> np.ndarray:
    """What the trained PyTorch model says, encoded the way training encodes."""
    from services.common.text_preprocessing import load_tokenizer

    outcome = model.outcome
    tokenizer = load_tokenizer(outcome.tokenizer_path, outcome.preprocessing) if outcome.tokenizer_path else None
    feeds = text_training.encode_split(texts, outcome.preprocessing, tokenizer)
    logits = text_training.predict_text_logits(outcome.model, feeds)
    return np.exp(logits - logits.max(1, keepdims=True)) / np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)


def _churn_frame(n: int = 360, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    plan = rng.choice(["basic", "pro", "team"], n).astype(object)
    tenure = rng.integers(1, 60, n).astype(float)
    spend = rng.gamma(2.0, 30.0, n)
    risk = (plan == "basic") * 1.2 - tenure / 25 + spend / 80 + rng.normal(0, 0.4, n)
    churned = np.where(risk > 0.3, "yes", "no")
    plan[rng.random(n) < 0.1] = None
    tenure[rng.random(n) < 0.1] = np.nan
    return pd.DataFrame({"plan type": plan, "tenure months": tenure, "monthly.spend": spend, "churned": churned})


def _diabetes_frame() -> pd.DataFrame:
    frame = load_diabetes(as_frame=True, scaled=False).frame
    rng = np.random.default_rng(0)
    band = pd.cut(frame["bp"], [0, 85, 100, 1000], labels=["low", "mid", "high"]).astype(object)
    band[rng.random(len(frame)) < 0.15] = None
    frame["bp band"] = band
    frame.loc[rng.random(len(frame)) < 0.05, "bmi"] = np.nan
    return frame


@dataclasses.dataclass
class TableModel:
    splits: TableSplits
    outcome: tabular.TableOutcome
    directory: pathlib.Path

    @property
    def spec(self) -> TableSpec:
        return self.splits.spec


def _train_table(frame: pd.DataFrame, spec: TableSpec, tmp: pathlib.Path) -> TableModel:
    split = np.resize(np.asarray(["train", "train", "train", "validation", "test"], dtype=object), len(frame))
    write_table_dataset(tmp / "table.parquet", frame, list(split), spec)
    splits = load_table_dataset(tmp / "table.parquet")
    outcome = tabular.train_table_model(splits, "gbdt", {"search": [{}], "max_iter": 60},
                                        deadline_unix=time.time() + 60)
    onnx_path = tmp / "model.onnx"
    tabular_export.export_table_onnx(outcome.pipeline, spec, onnx_path)
    description = tabular_export.build_table_bundle_dict(spec, "gbdt", outcome.test_metrics, splits.X_test.iloc[:8],
                                                         tabular_export.OPSET)
    tabular_export.write_table_bundle(tmp / "bundle.tar", onnx_path, description)
    from services.common.bundle import read_bundle

    read_bundle(tmp / "bundle.tar", tmp / "served")
    return TableModel(splits, outcome, tmp / "served")


def _held_out_rows(model: TableModel) -> pd.DataFrame:
    """Test rows, a few with values missing and a category never seen in training."""
    rows = model.splits.X_test.iloc[:40].copy().reset_index(drop=True)
    categorical = model.spec.categorical_features[0]
    numeric = model.spec.numeric_features
    rows.loc[0, categorical] = "enterprise"  # unseen
    rows.loc[1, categorical] = None  # missing
    rows.loc[2, numeric[0]] = np.nan
    rows.loc[3, numeric] = np.nan  # every number missing
    return rows


# --- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ngram(tmp_path_factory: pytest.TempPathFactory) -> TextModel:
    return _train_text("ngram_bag", {"min_epochs": 1}, tmp_path_factory.mktemp("ngram"))


@pytest.fixture(scope="module")
def transformer(tmp_path_factory: pytest.TempPathFactory) -> TextModel:
    hp = {"vocab_size": 300, "min_frequency": 1, "max_length": 32, "d_model": 32, "num_heads": 2, "num_layers": 1,
          "ff_dim": 64, "min_epochs": 1}
    return _train_text("transformer_small", hp, tmp_path_factory.mktemp("transformer"))


@pytest.fixture(scope="module")
def churn(tmp_path_factory: pytest.TempPathFactory) -> TableModel:
    spec = TableSpec(task="classification", label_column="churned", classes=CHURN_CLASSES,
                     features=[FeatureSpec("plan type", "categorical"), FeatureSpec("tenure months", "numeric"),
                               FeatureSpec("monthly.spend", "numeric")])
    return _train_table(_churn_frame(), spec, tmp_path_factory.mktemp("churn"))


@pytest.fixture(scope="module")
def diabetes(tmp_path_factory: pytest.TempPathFactory) -> TableModel:
    frame = _diabetes_frame()
    numeric = [c for c in frame.columns if c not in ("target", "bp band")]
    spec = TableSpec(task="regression", label_column="target",
                     features=[*(FeatureSpec(c, "numeric") for c in numeric), FeatureSpec("bp band", "categorical")])
    return _train_table(frame, spec, tmp_path_factory.mktemp("diabetes"))


@pytest.fixture(scope="module")
def runtimes(ngram: TextModel, transformer: TextModel, churn: TableModel, diabetes: TableModel) -> dict[str, Runtime]:
    return {"ngram": load_runtime(ngram.directory), "transformer": load_runtime(transformer.directory),
            "churn": load_runtime(churn.directory), "diabetes": load_runtime(diabetes.directory)}


@pytest.fixture(scope="module")
def address(runtimes: dict[str, Runtime]) -> Iterator[str]:
    servicer = InferenceServicer(max_batch=MAX_BATCH)
    for name, runtime in runtimes.items():
        servicer.add_model(name, runtime)
    endpoint = Endpoint(servicer)
    port = endpoint.start("127.0.0.1", 0)
    yield f"127.0.0.1:{port}"
    endpoint.stop(0.5)


@pytest.fixture(scope="module")
def stub(address: str) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        yield pb_grpc.GRPCInferenceServiceStub(channel)


# --- requests and answers ------------------------------------------------------------------------------


def _bytes(items: list[bytes]) -> bytes:
    return b"".join(len(i).to_bytes(4, "little") + i for i in items)


def text_request(model: str, texts: list[str], raw: bool = True, shape: list[int] | None = None) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, id="t-1")
    items = [t.encode() for t in texts]
    tensor = request.inputs.add(name="text", datatype="BYTES", shape=shape or [len(texts)])
    if raw:
        request.raw_input_contents.append(_bytes(items))
    else:
        tensor.contents.bytes_contents.extend(items)
    return request


def row_request(model: str, spec: TableSpec, rows: pd.DataFrame, raw: bool = True,
                column_shape: bool = False) -> pb.ModelInferRequest:
    """One input per column, each [N] (or [N, 1]); NaN and "" for missing values, as a client sends them."""
    request = pb.ModelInferRequest(model_name=model)
    for feature in spec.features:
        values = rows[feature.name].tolist()
        shape = [len(values), 1] if column_shape else [len(values)]
        if feature.kind == "numeric":
            numbers = np.asarray([math.nan if v is None else v for v in values], dtype="<f4")
            tensor = request.inputs.add(name=feature.name, datatype="FP32", shape=shape)
            if raw:
                request.raw_input_contents.append(numbers.tobytes())
            else:
                tensor.contents.fp32_contents.extend(numbers.tolist())
        else:
            items = [b"" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v).encode() for v in values]
            tensor = request.inputs.add(name=feature.name, datatype="BYTES", shape=shape)
            if raw:
                request.raw_input_contents.append(_bytes(items))
            else:
                tensor.contents.bytes_contents.extend(items)
    return request


def decode(response: pb.ModelInferResponse) -> dict[str, Any]:
    answer: dict[str, Any] = {}
    for tensor, raw in zip(response.outputs, response.raw_output_contents, strict=True):
        if tensor.datatype == "BYTES":
            items, offset = [], 0
            while offset < len(raw):
                length = int.from_bytes(raw[offset:offset + 4], "little")
                items.append(raw[offset + 4:offset + 4 + length].decode())
                offset += 4 + length
            answer[tensor.name] = items
        else:
            answer[tensor.name] = np.frombuffer(raw, "<f4").reshape(list(tensor.shape))
    return answer


# --- runtimes --------------------------------------------------------------------------------------------


def test_loader_picks_the_runtime_by_task_type(runtimes: dict[str, Runtime]) -> None:
    assert isinstance(runtimes["ngram"], TextRuntime) and isinstance(runtimes["transformer"], TextRuntime)
    assert isinstance(runtimes["churn"], TableRuntime) and isinstance(runtimes["diabetes"], TableRuntime)
    assert runtimes["ngram"].classes == tuple(TEXT_CLASSES) and runtimes["churn"].classes == tuple(CHURN_CLASSES)
    assert runtimes["diabetes"].classes == () and runtimes["diabetes"].task_type == "tabular_regression"
    assert runtimes["transformer"].spec.kind == "tokenizer" and runtimes["ngram"].spec.kind == "hashed_ngrams"
    for runtime in runtimes.values():
        assert runtime.size_bytes > 0 and runtime.sample_inputs
    assert isinstance(runtimes["ngram"].sample_inputs[0], str)
    assert set(runtimes["churn"].sample_inputs[0]) == {"plan type", "tenure months", "monthly.spend"}
    # The label column comes back from the model's metadata, so the endpoint can name it.
    assert runtimes["churn"].spec.label_column == "churned"  # type: ignore[attr-defined]


def test_server_modules_import_without_torch() -> None:
    code = ("import sys; import services.server.runtime, services.server.oip, services.server.bench, "
            "services.server.endpoint, services.server.agent; "
            "assert 'torch' not in sys.modules, 'the Server agent imported torch'")
    completed = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                               timeout=60, check=False)
    assert completed.returncode == 0, completed.stderr


# --- metadata --------------------------------------------------------------------------------------------


def test_metadata_lists_each_runtimes_tensors(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    def tensors(name: str) -> tuple[dict, dict]:
        meta = stub.ModelMetadata(pb.ModelMetadataRequest(name=name), timeout=5)
        return ({t.name: (t.datatype, list(t.shape)) for t in meta.inputs},
                {t.name: (t.datatype, list(t.shape)) for t in meta.outputs})

    classifier = {"label": ("BYTES", [-1]), "scores": ("FP32", [-1, 3])}
    assert tensors("ngram") == ({"text": ("BYTES", [-1])}, classifier)
    assert tensors("transformer") == ({"text": ("BYTES", [-1])}, classifier)
    assert tensors("churn") == ({"plan type": ("BYTES", [-1]), "tenure months": ("FP32", [-1]),
                                 "monthly.spend": ("FP32", [-1])},
                                {"label": ("BYTES", [-1]), "scores": ("FP32", [-1, 2])})
    inputs, outputs = tensors("diabetes")
    assert inputs["bp band"] == ("BYTES", [-1]) and inputs["bmi"] == ("FP32", [-1]) and len(inputs) == 11
    assert outputs == {"prediction": ("FP32", [-1])}


# --- text ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ngram", "transformer"])
def test_text_endpoint_answers_as_the_trained_model(stub: pb_grpc.GRPCInferenceServiceStub, name: str,
                                                    ngram: TextModel, transformer: TextModel) -> None:
    model = {"ngram": ngram, "transformer": transformer}[name]
    expected = _direct_text_scores(model, HELD_OUT_TEXTS)
    response = stub.ModelInfer(text_request(name, HELD_OUT_TEXTS), timeout=10)
    answer = decode(response)
    assert answer["label"] == [TEXT_CLASSES[i] for i in expected.argmax(1)]
    np.testing.assert_allclose(answer["scores"], expected, atol=1e-4)
    assert json.loads(response.parameters["classes"].string_param) == TEXT_CLASSES
    assert response.id == "t-1"
    # One at a time, in contents and with shape [N, 1]: the same answers.
    for i in (0, len(HELD_OUT_TEXTS) - 4, len(HELD_OUT_TEXTS) - 1):
        one = decode(stub.ModelInfer(text_request(name, [HELD_OUT_TEXTS[i]], raw=False, shape=[1, 1]), timeout=10))
        assert one["label"] == [answer["label"][i]]
        np.testing.assert_allclose(one["scores"][0], answer["scores"][i], atol=1e-5)


def test_trained_text_model_is_not_trivial(ngram: TextModel) -> None:
    """The comparison above means something only if the model tells the classes apart."""
    texts, labels = _sentences(30, 11)
    assert float(np.mean(_direct_text_scores(ngram, texts).argmax(1) == labels)) >= 0.8


# --- tables ----------------------------------------------------------------------------------------------


def test_table_classification_answers_as_the_trained_model(stub: pb_grpc.GRPCInferenceServiceStub,
                                                           churn: TableModel) -> None:
    rows = _held_out_rows(churn)
    expected = tabular.predict_table(churn.outcome.pipeline, churn.spec, rows)
    answer = decode(stub.ModelInfer(row_request("churn", churn.spec, rows), timeout=10))
    assert answer["label"] == [CHURN_CLASSES[i] for i in expected.argmax(1)]
    np.testing.assert_allclose(answer["scores"], expected, atol=1e-4)
    # contents instead of raw, [N, 1] columns, and one row at a time: the same answers.
    again = decode(stub.ModelInfer(row_request("churn", churn.spec, rows, raw=False, column_shape=True), timeout=10))
    assert again["label"] == answer["label"]
    for i in range(5):
        one = decode(stub.ModelInfer(row_request("churn", churn.spec, rows.iloc[[i]]), timeout=10))
        assert one["label"] == [answer["label"][i]]
    accuracy = float(np.mean(np.asarray(answer["label"][4:]) ==
                             churn.splits.y_test.iloc[4:40].to_numpy()))
    assert accuracy >= 0.7  # a model that learned something, so equal answers mean something


def test_table_regression_answers_as_the_trained_model(stub: pb_grpc.GRPCInferenceServiceStub,
                                                       diabetes: TableModel) -> None:
    rows = _held_out_rows(diabetes)
    expected = tabular.predict_table(diabetes.outcome.pipeline, diabetes.spec, rows)
    response = stub.ModelInfer(row_request("diabetes", diabetes.spec, rows), timeout=10)
    answer = decode(response)
    assert list(answer) == ["prediction"] and answer["prediction"].shape == (len(rows),)
    np.testing.assert_allclose(answer["prediction"], expected, rtol=1e-4)
    assert "classes" not in response.parameters
    assert len(set(np.round(answer["prediction"], 3))) > 10  # not a constant


def _status(stub: pb_grpc.GRPCInferenceServiceStub, request: pb.ModelInferRequest) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, timeout=10)
    return caught.value.code(), caught.value.details()


def _bad_requests(churn: TableModel) -> list[tuple[str, pb.ModelInferRequest, list[str]]]:
    spec = churn.spec
    rows = churn.splits.X_test.iloc[:2].reset_index(drop=True)
    cases: list[tuple[str, pb.ModelInferRequest, list[str]]] = []
    bad_utf8 = text_request("ngram", ["fine", "also fine"])
    bad_utf8.raw_input_contents[0] = _bytes([b"fine", b"\xff\xfe broken"])
    cases.append(("text not utf-8", bad_utf8, ["element 1", "UTF-8"]))
    wrong = text_request("ngram", ["x"])
    wrong.inputs[0].datatype = "FP32"
    cases.append(("text datatype", wrong, ["'text'", "BYTES", "'FP32'"]))
    renamed = text_request("ngram", ["x"])
    renamed.inputs[0].name = "texts"
    cases.append(("text unknown input", renamed, ["'texts'", "'text' BYTES"]))
    cases.append(("text shape", text_request("ngram", ["a", "b"], shape=[1, 2]), ["[N] or [N, 1]"]))
    cases.append(("text no inputs", pb.ModelInferRequest(model_name="ngram"), ["'text'"]))
    cases.append(("text too many", text_request("ngram", ["a"] * (MAX_BATCH + 1)), [f"at most {MAX_BATCH}"]))
    truncated = text_request("ngram", ["abc"])
    truncated.raw_input_contents[0] = truncated.raw_input_contents[0][:-1]
    cases.append(("text truncated", truncated, ["'text'", "malformed"]))
    missing = row_request("churn", spec, rows)
    del missing.inputs[1]
    del missing.raw_input_contents[1]
    cases.append(("missing column", missing, ["lacks the column 'tenure months'",
                                              "'plan type', 'tenure months', 'monthly.spend'"]))
    extra = row_request("churn", spec, rows)
    extra.inputs.add(name="churned", datatype="BYTES", shape=[2])
    extra.raw_input_contents.append(_bytes([b"no", b"yes"]))
    cases.append(("target column sent", extra, ["unknown input 'churned'", "'tenure months' FP32"]))
    typed = row_request("churn", spec, rows)
    typed.inputs[1].datatype = "BYTES"
    cases.append(("numeric as bytes", typed, ["'tenure months'", "FP32", "'BYTES'"]))
    category = row_request("churn", spec, rows)
    category.inputs[0].datatype = "FP32"
    cases.append(("category as number", category, ["'plan type'", "BYTES"]))
    lengths = row_request("churn", spec, rows)
    lengths.inputs[2].shape[:] = [1]
    lengths.raw_input_contents[2] = lengths.raw_input_contents[2][:4]
    cases.append(("different lengths", lengths, ["different lengths", "'monthly.spend' has 1"]))
    short = row_request("churn", spec, rows)
    short.raw_input_contents[1] = short.raw_input_contents[1][:6]
    cases.append(("numeric raw bytes", short, ["'tenure months'", "8 raw bytes"]))
    category_utf8 = row_request("churn", spec, rows)
    category_utf8.raw_input_contents[0] = _bytes([b"pro", b"\xc3("])
    cases.append(("category not utf-8", category_utf8, ["'plan type' element 1", "UTF-8"]))
    twice = row_request("churn", spec, rows)
    twice.inputs[1].name = "plan type"
    cases.append(("column twice", twice, ["'plan type' appears twice"]))
    regression_label = row_request("diabetes", TableSpec(
        task="regression", label_column="target",
        features=[FeatureSpec(n, "numeric") for n in ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6")]
        + [FeatureSpec("bp band", "categorical")]), pd.DataFrame({**{n: [1.0] for n in (
            "age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6")}, "bp band": ["low"]}))
    regression_label.outputs.add(name="label")
    cases.append(("regressor has no label", regression_label, ["unknown output 'label'", "'prediction' FP32 [N]"]))
    return cases


def test_bad_requests_are_refused_and_the_endpoint_keeps_serving(stub: pb_grpc.GRPCInferenceServiceStub,
                                                                 churn: TableModel) -> None:
    rows = churn.splits.X_test.iloc[:3].reset_index(drop=True)
    for name, request, fragments in _bad_requests(churn):
        code, details = _status(stub, request)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (name, code, details)
        for fragment in fragments:
            assert fragment in details, (name, fragment, details)
        assert len(decode(stub.ModelInfer(text_request("ngram", ["my refund"]), timeout=10))["label"]) == 1
        assert len(decode(stub.ModelInfer(row_request("churn", churn.spec, rows), timeout=10))["label"]) == 3


# --- the benchmark -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ngram", "churn", "diabetes"])
async def test_benchmark_with_the_bundles_first_sample(address: str, runtimes: dict[str, Runtime], name: str,
                                                       ngram: TextModel, churn: TableModel,
                                                       diabetes: TableModel) -> None:
    runtime = runtimes[name]
    sample = runtime.sample_inputs[0]
    if name == "churn":
        sample = {**sample, "tenure months": None, "plan type": None}  # missing values travel as NaN and ""
    directory = {"ngram": ngram, "churn": churn, "diabetes": diabetes}[name].directory
    result = await benchmark_endpoint(address, name, sample, directory, 20, 200, 60.0)
    for key in ("latency_ms", "raw_onnx_latency_ms"):
        stats = result[key]
        assert 0 < stats["p50"] <= stats["p95"] <= stats["p99"] and stats["requests"] == 200
    assert result["raw_onnx_latency_ms"]["p50"] < result["latency_ms"]["p50"]
    print(f"\n{name}: endpoint p50 {result['latency_ms']['p50']:.3f} ms, p95 {result['latency_ms']['p95']:.3f} ms; "
          f"bare ONNX p50 {result['raw_onnx_latency_ms']['p50']:.4f} ms")


# --- the CLI's client --------------------------------------------------------------------------------------


def _deployment(address: str, name: str) -> common_pb2.Deployment:
    return common_pb2.Deployment(name=name, model_name=name, endpoint=address)


def test_cli_predict_texts_and_rows(address: str, ngram: TextModel, churn: TableModel, diabetes: TableModel,
                                    tmp_path: pathlib.Path) -> None:
    texts = HELD_OUT_TEXTS[:4]
    answers = predict_texts(_deployment(address, "ngram"), texts)
    assert [a["label"] for a in answers] == [TEXT_CLASSES[i] for i in _direct_text_scores(ngram, texts).argmax(1)]
    assert all(len(a["top"]) == 3 for a in answers)

    rows = _held_out_rows(churn).iloc[:6]
    json_rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
                 for r in rows.to_dict(orient="records")]
    answers = predict_rows(_deployment(address, "churn"), json_rows)
    expected = tabular.predict_table(churn.outcome.pipeline, churn.spec, rows).argmax(1)
    assert [a["label"] for a in answers] == [CHURN_CLASSES[i] for i in expected]
    with pytest.raises(PredictError, match="does not read the columns"):
        predict_rows(_deployment(address, "churn"), [{**json_rows[0], "customer id": 7}])

    # A CSV as a user has it: the target and other columns too, missing cells empty.
    frame = _held_out_rows(diabetes).iloc[:5].copy()
    frame.insert(0, "patient", [f"p{i}" for i in range(len(frame))])
    frame["target"] = 100.0
    path = tmp_path / "patients.csv"
    frame.to_csv(path, index=False)
    answers = predict_rows(_deployment(address, "diabetes"), read_csv_rows(path), ignore_extra=True)
    expected = tabular.predict_table(diabetes.outcome.pipeline, diabetes.spec, frame)
    np.testing.assert_allclose([a["prediction"] for a in answers], expected, rtol=1e-4)


# --- the stock tritonclient, in its own process -------------------------------------------------------------


STOCK_CLIENT = textwrap.dedent('''
    import json, sys
    import numpy as np
    import tritonclient.grpc as triton

    address, texts, row, kinds = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
    client = triton.InferenceServerClient(url=address)
    report = {}
    text_input = triton.InferInput("text", [len(texts)], "BYTES")
    text_input.set_data_from_numpy(np.array(texts, dtype=np.object_))
    result = client.infer("ngram", inputs=[text_input])
    report["text_labels"] = [x.decode() for x in result.as_numpy("label").tolist()]
    report["text_scores_shape"] = list(result.as_numpy("scores").shape)
    inputs = []
    for name, value in row.items():
        if kinds[name] == "numeric":
            tensor = triton.InferInput(name, [1, 1], "FP32")
            tensor.set_data_from_numpy(np.array([[np.nan if value is None else value]], dtype=np.float32))
        else:
            tensor = triton.InferInput(name, [1, 1], "BYTES")
            tensor.set_data_from_numpy(np.array([["" if value is None else value]], dtype=np.object_))
        inputs.append(tensor)
    result = client.infer("diabetes", inputs=inputs, outputs=[triton.InferRequestedOutput("prediction")])
    report["prediction"] = result.as_numpy("prediction").tolist()
    report["metadata_inputs"] = [t["name"] for t in client.get_model_metadata("diabetes", as_json=True)["inputs"]]
    client.close()
    print(json.dumps(report))
''')


def test_stock_tritonclient_sends_text_and_a_row(address: str, ngram: TextModel, diabetes: TableModel) -> None:
    texts = HELD_OUT_TEXTS[:3]
    row = {k: (None if isinstance(v, float) and math.isnan(v) else v)
           for k, v in _held_out_rows(diabetes).iloc[1].to_dict().items()}  # its category is missing
    kinds = {f.name: f.kind for f in diabetes.spec.features}
    completed = subprocess.run([sys.executable, "-c", STOCK_CLIENT, address, json.dumps(texts), json.dumps(row),
                                json.dumps(kinds)], capture_output=True, text=True, timeout=60, check=False)
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert report["text_labels"] == [TEXT_CLASSES[i] for i in _direct_text_scores(ngram, texts).argmax(1)]
    assert report["text_scores_shape"] == [3, 3]
    expected = tabular.predict_table(diabetes.outcome.pipeline, diabetes.spec, row)
    np.testing.assert_allclose(report["prediction"], expected, rtol=1e-4)
    assert report["metadata_inputs"] == diabetes.spec.feature_names


# --- the table latency path builds exactly table_feeds' feeds ------------------------------------------------


def test_decoded_feeds_equal_table_feeds(churn: TableModel, runtimes: dict[str, Runtime]) -> None:
    runtime = runtimes["churn"]
    assert isinstance(runtime, TableRuntime)
    tenure = np.asarray([1.5, np.nan, np.inf, -np.inf, 1e300, -1e-50, 3.4e38, 123456789.123, 0.1, -0.0])
    spend = np.asarray([3, 0, -7, 2**40, 2**62, 1, 2, 3, 4, 5], dtype=np.int64)
    plans = ["pro", "", "enterprise", "ünïcödé", " ", "basic", "team", "PRO", "pro ", "0"]
    decoded = {"plan type": [p.encode() for p in plans], "tenure months": tenure, "monthly.spend": spend}
    fast = runtime.decoded_feeds(decoded)
    reference = table_feeds(pd.DataFrame({"plan type": plans, "tenure months": tenure, "monthly.spend": spend}),
                            churn.spec)
    assert set(fast) == set(reference)
    for name, values in reference.items():
        assert fast[name].dtype == values.dtype and fast[name].shape == values.shape, name
        if values.dtype == object:
            assert fast[name].tolist() == values.tolist(), name
        else:
            np.testing.assert_array_equal(fast[name], values, err_msg=name)
    with np.errstate(over="ignore"):
        as_fp32 = tenure.astype(np.float32)  # what an FP32 client sends: 1e300 is already inf
    fp32 = runtime.decoded_feeds({**decoded, "tenure months": as_fp32})
    np.testing.assert_array_equal(fp32["tenure months"], reference["tenure months"])


def test_concurrent_text_requests_get_their_own_answers(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    """The endpoint's worker threads share one tokenizer and one session."""
    from concurrent.futures import ThreadPoolExecutor

    texts = HELD_OUT_TEXTS * 3
    sequential = [decode(stub.ModelInfer(text_request("transformer", [t]), timeout=10))["label"][0] for t in texts]
    with ThreadPoolExecutor(max_workers=6) as pool:
        concurrent = list(pool.map(
            lambda t: decode(stub.ModelInfer(text_request("transformer", [t]), timeout=10))["label"][0], texts))
    assert concurrent == sequential


def test_cli_predict_wants_exactly_one_kind_of_input(capsys: pytest.CaptureFixture[str]) -> None:
    from cli.main import main

    assert main(["predict", "some-deployment"]) == 2
    assert main(["predict", "some-deployment", "image.png", "--text", "hello"]) == 2
    assert "--text" in capsys.readouterr().err
