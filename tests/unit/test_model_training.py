"""The Model agent's domain code on real data: sklearn's digits through dataset, training, ONNX, bundle."""

from __future__ import annotations

import io
import json
import pathlib
import tarfile
import time

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from services.common import bundle, image_dataset
from services.common.errors import DataError
from services.common.preprocessing import ImagePreprocessing, preprocess_images
from services.model import export, training, zoo

SPEC = ImagePreprocessing(mode="L", height=32, width=32, mean=(0.5,), std=(0.5,))
CLASSES = [str(d) for d in range(10)]


def _png(array: np.ndarray) -> bytes:
    image = Image.fromarray(array, "L").resize((32, 32), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _reencode(data: bytes, size: int) -> bytes:
    """What a client might send instead: RGB JPEG at another size."""
    image = Image.open(io.BytesIO(data)).convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def digits_rows() -> list[tuple[bytes, str, str, str]]:
    """Digits as 32x32 grayscale PNGs, split 70/15/15 stratified."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    index = np.arange(len(digits.target))
    train, rest = train_test_split(index, test_size=0.3, stratify=digits.target, random_state=0)
    validation, test = train_test_split(rest, test_size=0.5, stratify=digits.target[rest], random_state=0)
    split_of = {**dict.fromkeys(train, "train"), **dict.fromkeys(validation, "validation"),
                **dict.fromkeys(test, "test")}
    return [
        (_png((image / 16.0 * 255.0).astype(np.uint8)), str(label), split_of[i], f"{label}/{i:04d}.png")
        for i, (image, label) in enumerate(zip(digits.images, digits.target, strict=True))
    ]


@pytest.fixture(scope="module")
def dataset_path(digits_rows, tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("dataset") / "digits.parquet"
    assert training.write_image_dataset(path, iter(digits_rows), CLASSES, SPEC) == len(digits_rows)
    return path


@pytest.fixture(scope="module")
def splits(dataset_path) -> training.ImageSplits:
    return training.load_image_dataset(dataset_path)


@pytest.fixture(scope="module")
def trained(splits):
    reports: list[training.EpochReport] = []
    outcome = training.train_image_classifier(splits, "cnn_small", {}, max_epochs=10,
                                              deadline_unix=time.time() + 45, on_epoch=reports.append)
    return outcome, reports


@pytest.fixture(scope="module")
def onnx_path(trained, tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export.export_onnx(trained[0].model, SPEC, path, len(CLASSES))
    return path


# --- dataset artifact -----------------------------------------------------------------------------


def test_dataset_round_trip(digits_rows, dataset_path, splits):
    assert splits.classes == CLASSES
    assert splits.spec == SPEC
    for split in image_dataset.SPLITS:
        rows = [r for r in digits_rows if r[2] == split]
        assert splits.images(split) == [r[0] for r in rows]
        assert splits.labels(split).dtype == np.int64
        assert splits.labels(split).tolist() == [int(r[1]) for r in rows]
    sizes = (len(splits.train_images), len(splits.validation_images), len(splits.test_images))
    assert sizes == (1257, 270, 270)
    assert set(np.unique(splits.test_labels)) == set(range(10))  # stratified
    schema = pq.read_schema(dataset_path)
    assert schema.names == ["image", "label", "split", "path"]
    assert json.loads(schema.metadata[b"traineragent.format"]) == "image_folder"
    assert json.loads(schema.metadata[b"traineragent.classes"]) == CLASSES


def test_load_rejects_a_parquet_without_metadata(tmp_path):
    path = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"image": [b"x"], "label": ["a"], "split": ["train"], "path": ["a/x.png"]}), path)
    with pytest.raises(DataError, match="traineragent.classes"):
        training.load_image_dataset(path)


def test_writer_rejects_unknown_labels_and_splits(tmp_path):
    with pytest.raises(ValueError, match="label"):
        training.write_image_dataset(tmp_path / "a.parquet", [(b"x", "cat", "train", "x.png")], ["dog"], SPEC)
    with pytest.raises(ValueError, match="split"):
        training.write_image_dataset(tmp_path / "b.parquet", [(b"x", "dog", "dev", "x.png")], ["dog"], SPEC)


# --- training -------------------------------------------------------------------------------------


def test_training_reaches_accuracy_and_reports_every_epoch(trained):
    outcome, reports = trained
    assert outcome.validation_metrics["accuracy"] >= 0.9, outcome.validation_metrics
    assert outcome.test_metrics["accuracy"] >= 0.9, outcome.test_metrics
    assert set(outcome.test_metrics) == {"accuracy", "f1", "precision", "recall"}
    assert [r.epoch for r in reports] == list(range(1, outcome.epochs + 1))
    assert all(r.max_epochs == 10 and r.seconds > 0 and r.lr > 0 for r in reports)
    assert outcome.stop_reason in {"max_epochs", "early_stopping"}
    assert 1 <= outcome.best_epoch <= outcome.epochs
    assert outcome.device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert outcome.num_parameters == zoo.count_parameters(outcome.model)
    assert not outcome.model.training
    assert next(outcome.model.parameters()).device.type == "cpu"
    # The restored model is the best epoch's: its validation accuracy is the best reported.
    assert outcome.validation_metrics["accuracy"] == pytest.approx(max(r.val_accuracy for r in reports))


def test_should_stop_cancels(splits):
    reports: list[training.EpochReport] = []
    outcome = training.train_image_classifier(splits, "cnn_small", {}, max_epochs=10,
                                              deadline_unix=time.time() + 60, on_epoch=reports.append,
                                              should_stop=lambda: len(reports) >= 1)
    assert outcome.stop_reason == "cancelled"
    assert outcome.epochs == 1 and len(reports) == 1


def test_a_passed_deadline_stops_before_training(splits):
    outcome = training.train_image_classifier(splits, "cnn_small", {}, max_epochs=10,
                                              deadline_unix=time.time() - 1)
    assert outcome.stop_reason == "deadline"
    assert outcome.epochs == 0
    assert set(outcome.validation_metrics) == {"accuracy", "f1", "precision", "recall"}


def test_training_is_deterministic_on_cpu(splits):
    small = training.ImageSplits(
        classes=splits.classes, spec=splits.spec,
        train_images=splits.train_images[:256], train_labels=splits.train_labels[:256],
        validation_images=splits.validation_images[:64], validation_labels=splits.validation_labels[:64],
        test_images=splits.test_images[:64], test_labels=splits.test_labels[:64],
    )
    runs = [training.train_image_classifier(small, "cnn_small", {}, max_epochs=2,
                                            deadline_unix=time.time() + 60, seed=3, device="cpu")
            for _ in range(2)]
    first, second = (r.model.state_dict() for r in runs)
    assert all(torch.equal(first[k], second[k]) for k in first)


# --- export ---------------------------------------------------------------------------------------


def test_onnx_export_is_one_file_with_parity(trained, onnx_path, splits):
    assert sorted(p.name for p in onnx_path.parent.iterdir()) == ["model.onnx"]
    x = preprocess_images(splits.test_images[:32], SPEC)
    assert export.check_parity(trained[0].model, onnx_path, x) < 1e-4
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["pixels"]
    assert [o.name for o in session.get_outputs()] == ["scores"]
    (scores,) = session.run(["scores"], {"pixels": x[:5]})
    assert scores.shape == (5, 10)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)
    assert export.measure_onnx_latency_ms(onnx_path, x[:1], runs=10) > 0


def test_parity_error_when_the_model_differs(trained, onnx_path, splits):
    import copy

    other = copy.deepcopy(trained[0].model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.5)
    with pytest.raises(export.ParityError):
        export.check_parity(other, onnx_path, preprocess_images(splits.test_images[:4], SPEC))


@pytest.mark.parametrize("size", [24, 40])
def test_onnx_model_reads_rgb_jpegs_of_other_sizes(onnx_path, splits, size):
    images = [_reencode(data, size) for data in splits.test_images]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (scores,) = session.run(["scores"], {"pixels": preprocess_images(images, SPEC)})
    accuracy = float(np.mean(scores.argmax(axis=1) == splits.test_labels))
    assert accuracy >= 0.9, f"accuracy on RGB JPEG at {size}x{size}: {accuracy:.4f}"


# --- bundle ---------------------------------------------------------------------------------------


def test_bundle_round_trip(trained, onnx_path, splits, tmp_path):
    description = bundle.build_bundle_dict("image_classification", CLASSES, SPEC, "cnn_small",
                                           trained[0].test_metrics, splits.test_images[:20],
                                           opset=export.OPSET)
    assert len(description["sample_inputs"]) == 8
    tar_path = tmp_path / "bundle.tar"
    bundle.write_bundle(tar_path, onnx_path, description)
    with tarfile.open(tar_path) as tar:
        assert sorted(tar.getnames()) == ["bundle.json", "model.onnx"]
    model_path, read_back = bundle.read_bundle(tar_path, tmp_path / "out")
    assert model_path.read_bytes() == onnx_path.read_bytes()
    assert read_back == json.loads(json.dumps(description))
    assert read_back["format_version"] == 1 and read_back["onnx_opset"] == export.OPSET
    assert ImagePreprocessing.from_json(json.dumps(read_back["preprocessing"])) == SPEC
    assert bundle.sample_inputs(read_back) == list(splits.test_images[:8])


def test_read_bundle_refuses_unexpected_members(onnx_path, tmp_path):
    tar_path = tmp_path / "evil.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(onnx_path, arcname="model.onnx")
        tar.add(onnx_path, arcname="../escape.onnx")
    with pytest.raises(bundle.BundleError, match="unexpected member"):
        bundle.read_bundle(tar_path, tmp_path / "out")
    assert not (tmp_path / "escape.onnx").exists()


# --- metrics and the zoo --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_sklearn(seed):
    from sklearn import metrics

    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 6, size=200)
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, 8, size=200))
    y_pred[y_pred == 2] = 3  # class 2 only in y_true; 6 and 7 only in y_pred; 8 and 9 nowhere
    ours = training.classification_metrics(y_true, y_pred, num_classes=10)
    assert ours["accuracy"] == pytest.approx(metrics.accuracy_score(y_true, y_pred))
    scorers = {"f1": metrics.f1_score, "precision": metrics.precision_score, "recall": metrics.recall_score}
    for name, fn in scorers.items():
        assert ours[name] == pytest.approx(fn(y_true, y_pred, average="macro", zero_division=0)), name


def test_catalogue_offers_two_sizes_of_image_model():
    candidates = {c.name: c for c in zoo.candidates_for("image_classification")}
    assert {"cnn_small", "resnet_mini"} <= set(candidates)
    assert candidates["resnet_mini"].relative_cost > candidates["cnn_small"].relative_cost
    defaults = candidates["cnn_small"].default_hyperparameters
    assert {"lr", "batch_size", "weight_decay", "width"} <= set(defaults)
    assert zoo.candidates_for("text_generation") == []


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(("height", "width"), [(16, 16), (48, 40)])
def test_resnet_mini_shapes(channels, height, width):
    model = zoo.build_image_model("resnet_mini", channels, 7, height, width, {}).eval()
    with torch.no_grad():
        assert model(torch.zeros(3, channels, height, width)).shape == (3, 7)


def test_resnet_mini_is_clearly_larger_than_cnn_small():
    small = zoo.count_parameters(zoo.build_image_model("cnn_small", 1, 10, 32, 32, {}))
    big = zoo.count_parameters(zoo.build_image_model("resnet_mini", 1, 10, 32, 32, {}))
    assert 20_000 <= small <= 50_000
    assert big >= 5 * small


def test_build_refuses_what_it_cannot_build():
    with pytest.raises(ValueError, match="unknown"):
        zoo.build_image_model("vgg", 1, 10, 32, 32, {})
    with pytest.raises(ValueError, match="too small"):
        zoo.build_image_model("cnn_small", 1, 10, 8, 8, {})
