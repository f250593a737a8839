"""Table models on real tables: the dataset artifact, training against a plain scikit-learn baseline,
ONNX export with parity on rows with missing values and unseen categories, and the bundle.

Palmer penguins (species from island, bill and flipper measures, body mass and sex: categorical
columns and missing values) and scikit-learn's bundled diabetes table (regression), the latter
once more with a categorical column with missing values and column names with a space and a dot.
"""

from __future__ import annotations

import json
import math
import pathlib
import time

import numpy as np
import onnx
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import OrdinalEncoder

from services.common.bundle import read_bundle
from services.common.errors import DataError, InvalidArgument
from services.common.table_dataset import (
    MISSING_CATEGORY,
    FeatureSpec,
    TableSpec,
    TableSplits,
    canonical_table_frame,
    load_table_dataset,
    table_feeds,
    write_table_dataset,
)
from services.model.export import ParityError
from services.model.tabular import TableOutcome, build_pipeline, predict_table, train_table_model
from services.model.tabular_export import (
    OPSET,
    PARITY_TOLERANCE,
    build_table_bundle_dict,
    check_table_parity,
    export_table_onnx,
    measure_table_latency_ms,
    onnx_opset,
    run_table_onnx,
    write_table_bundle,
)

palmerpenguins = pytest.importorskip("palmerpenguins", reason="the penguins table ships with palmerpenguins")

SEED = 0
PENGUIN_NUMERIC = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]


def _split_names(n: int, stratify: np.ndarray | None, seed: int = SEED) -> np.ndarray:
    """60/20/20 train/validation/test, stratified when labels are given."""
    index = np.arange(n)
    train, rest = train_test_split(index, test_size=0.4, random_state=seed, stratify=stratify)
    validation, test = train_test_split(rest, test_size=0.5, random_state=seed,
                                        stratify=None if stratify is None else stratify[rest])
    names = np.empty(n, dtype=object)
    names[train], names[validation], names[test] = "train", "validation", "test"
    return names


def _write_and_load(tmp: pathlib.Path, frame: pd.DataFrame, spec: TableSpec, stratify: bool) -> TableSplits:
    labels = frame[spec.label_column].astype(str).to_numpy() if stratify else None
    path = tmp / "table.parquet"
    assert write_table_dataset(path, frame, list(_split_names(len(frame), labels)), spec) == len(frame)
    return load_table_dataset(path)


def _baseline(splits: TableSplits) -> float:
    """A plain HistGradientBoosting model with its own simple preprocessing (ordinal-encoded
    categories, native NaN handling, default hyper-parameters): test accuracy or MAE."""
    spec = splits.spec
    categorical = spec.categorical_features
    encoder = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan)

    def encode(frame: pd.DataFrame, fit: bool = False) -> pd.DataFrame:
        frame = frame.copy()
        if categorical:
            values = frame[categorical].astype(object).where(frame[categorical].notna(), np.nan)
            frame[categorical] = encoder.fit_transform(values) if fit else encoder.transform(values)
        return frame.astype(np.float64)

    mask = [name in categorical for name in spec.feature_names] if categorical else None
    if spec.task == "classification":
        model = HistGradientBoostingClassifier(categorical_features=mask, random_state=SEED)
        model.fit(encode(splits.X_train, fit=True), splits.label_indices("train"))
        return float(np.mean(model.predict(encode(splits.X_test)) == splits.label_indices("test")))
    model = HistGradientBoostingRegressor(categorical_features=mask, random_state=SEED)
    model.fit(encode(splits.X_train, fit=True), splits.y_train.to_numpy())
    return float(np.mean(np.abs(model.predict(encode(splits.X_test)) - splits.y_test.to_numpy())))


def _train_both(splits: TableSplits) -> dict[str, TableOutcome]:
    return {c: train_table_model(splits, c, deadline_unix=time.time() + 600, seed=SEED) for c in ("gbdt", "mlp")}


# --- penguins: classification with categorical columns and missing values -------------------------


def _penguins() -> tuple[pd.DataFrame, TableSpec]:
    frame = palmerpenguins.load_penguins()
    features = [FeatureSpec("island", "categorical"), *(FeatureSpec(c, "numeric") for c in PENGUIN_NUMERIC),
                FeatureSpec("sex", "categorical")]
    spec = TableSpec(task="classification", label_column="species", features=features,
                     classes=sorted(frame["species"].unique()), dropped=[{"name": "year", "why": "not a trait"}])
    return frame, spec


@pytest.fixture(scope="module")
def penguins(tmp_path_factory: pytest.TempPathFactory) -> tuple[TableSplits, pd.DataFrame, dict[str, TableOutcome]]:
    frame, spec = _penguins()
    splits = _write_and_load(tmp_path_factory.mktemp("penguins"), frame, spec, stratify=True)
    return splits, frame, _train_both(splits)


def _hard_penguin_rows(splits: TableSplits) -> pd.DataFrame:
    """Test rows plus the awkward ones: every numeric missing, sex missing, an island never seen."""
    frame, _ = _penguins()
    all_missing = frame[frame["bill_length_mm"].isna()][splits.spec.feature_names]
    odd = splits.X_test.iloc[:3].copy()
    odd["island"] = ["Atlantis", None, "Biscoe"]
    odd["sex"] = [None, "female", "unknown"]
    odd.iloc[2, odd.columns.get_loc("body_mass_g")] = np.nan
    return pd.concat([splits.X_test, all_missing, odd], ignore_index=True)


def test_table_dataset_round_trip(tmp_path: pathlib.Path) -> None:
    frame, spec = _penguins()
    splits = _write_and_load(tmp_path, frame, spec, stratify=True)
    assert splits.spec == spec and splits.spec.dropped == [{"name": "year", "why": "not a trait"}]
    assert TableSpec.from_json(spec.to_json()) == spec
    assert len(splits.X_train) + len(splits.X_validation) + len(splits.X_test) == len(frame)
    assert list(splits.X_train.columns) == spec.feature_names  # only the spec's columns, in its order
    assert splits.X_train["body_mass_g"].dtype == np.float64
    # Nulls survive as nulls, in both kinds of column.
    loaded = pd.concat([splits.X_train, splits.X_validation, splits.X_test])
    assert loaded["sex"].isna().sum() == frame["sex"].isna().sum() == 11
    assert loaded["bill_length_mm"].isna().sum() == frame["bill_length_mm"].isna().sum() == 2
    assert set(splits.y_train) == set(spec.classes)
    # What the model sees: float32 values (the endpoint's tensors), the null marker for a category.
    canonical = canonical_table_frame(splits.X_train, spec)
    assert (canonical["sex"] == MISSING_CATEGORY).sum() == splits.X_train["sex"].isna().sum()
    lengths = canonical["bill_length_mm"].to_numpy()
    np.testing.assert_array_equal(lengths, lengths.astype(np.float32).astype(np.float64))
    assert splits.label_indices("test").max() < len(spec.classes)

    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "table.parquet")
    assert table.column_names == [*spec.feature_names, "species", "__split__"]
    assert json.loads(table.schema.metadata[b"traineragent.format"]) == "table"

    plain = tmp_path / "plain.parquet"
    frame.to_parquet(plain)
    with pytest.raises(DataError, match="not a table dataset artifact"):
        load_table_dataset(plain)
    with pytest.raises(DataError, match="not among the classes"):
        write_table_dataset(tmp_path / "bad.parquet", frame.assign(species="Emperor"), ["train"] * len(frame), spec)


def test_penguins_accuracy_matches_the_baseline(penguins) -> None:
    splits, _, outcomes = penguins
    baseline = _baseline(splits)
    accuracies = {c: o.test_metrics["accuracy"] for c, o in outcomes.items()}
    print(f"penguins test accuracy: baseline {baseline:.4f}, {accuracies}")
    assert max(accuracies.values()) >= baseline - 0.02
    for outcome in outcomes.values():
        assert set(outcome.test_metrics) == {"accuracy", "f1", "precision", "recall"}
        assert outcome.stop_reason == "completed" and outcome.trials
        assert outcome.validation_metrics["accuracy"] >= 0.9


@pytest.mark.parametrize("candidate", ["gbdt", "mlp"])
def test_penguins_onnx_parity_and_graph(penguins, candidate: str, tmp_path: pathlib.Path) -> None:
    splits, _, outcomes = penguins
    spec, pipeline = splits.spec, outcomes[candidate].pipeline
    path = tmp_path / "model.onnx"
    assert export_table_onnx(pipeline, spec, path) == "skl2onnx"
    rows = _hard_penguin_rows(splits)
    worst = check_table_parity(pipeline, spec, path, rows)
    assert worst < PARITY_TOLERANCE

    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == spec.feature_names
    kinds = {i.name: i.type.tensor_type.elem_type for i in proto.graph.input}
    assert kinds["island"] == onnx.TensorProto.STRING and kinds["body_mass_g"] == onnx.TensorProto.FLOAT
    assert [o.name for o in proto.graph.output] == ["scores"]
    assert [d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim][1:] == [len(spec.classes)]
    assert onnx_opset(path) == OPSET

    scores = run_table_onnx(path, spec, rows)
    assert scores.dtype == np.float32 and scores.shape == (len(rows), 3)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)
    accuracy = np.mean(scores[:len(splits.X_test)].argmax(axis=1) == splits.label_indices("test"))
    assert accuracy == pytest.approx(outcomes[candidate].test_metrics["accuracy"])


def test_missing_category_is_imputed_the_same_in_onnx(penguins, tmp_path: pathlib.Path) -> None:
    """A null category reaches ONNX as MISSING_CATEGORY and must land in the model's own "missing"
    category, exactly as scikit-learn's imputer put the training nulls there. The MLP reads every
    one-hot column, so a null taken for an unseen category (all zeros) would show in its scores."""
    splits, _, outcomes = penguins
    spec, pipeline = splits.spec, outcomes["mlp"].pipeline
    onehot = pipeline.named_steps["preprocess"].named_transformers_["categorical"].named_steps["onehot"]
    assert "missing" in list(onehot.categories_[1])  # sex: training nulls became their own category
    path = tmp_path / "model.onnx"
    export_table_onnx(pipeline, spec, path)

    base = {c: splits.X_test.iloc[0][c] for c in spec.feature_names}
    without_sex = {k: v for k, v in base.items() if k != "sex"}
    variants = [dict(base, sex=None), dict(base, sex=float("nan")), dict(base, sex=""), without_sex]
    feeds = table_feeds(variants, spec)
    assert list(feeds) == spec.feature_names
    assert feeds["sex"].dtype == object and feeds["sex"].shape == (4, 1)
    assert set(feeds["sex"].ravel()) == {MISSING_CATEGORY}
    assert feeds["body_mass_g"].dtype == np.float32 and feeds["body_mass_g"].shape == (4, 1)
    onnx_scores = run_table_onnx(path, spec, variants)
    np.testing.assert_array_equal(onnx_scores, onnx_scores[[0, 0, 0, 0]])
    # scikit-learn on the user's own null (pandas NaN in the loaded frame), not on our marker:
    raw = splits.X_test.iloc[[0]].copy()
    raw["sex"] = np.nan
    np.testing.assert_allclose(onnx_scores[0], predict_table(pipeline, spec, raw)[0], atol=1e-5)
    # ... and it is the "missing" category, not the unknown-category encoding:
    explicit = run_table_onnx(path, spec, [dict(base, sex="missing")])
    unseen = run_table_onnx(path, spec, [dict(base, sex="not a sex")])
    np.testing.assert_allclose(onnx_scores[0], explicit[0], atol=1e-6)
    log_ratio = np.log(np.maximum(onnx_scores[0], 1e-30)) - np.log(np.maximum(unseen[0], 1e-30))
    assert np.max(np.abs(log_ratio)) > 0.01  # a confident row saturates: compare log-probabilities
    np.testing.assert_allclose(unseen[0], predict_table(pipeline, spec, [dict(base, sex="not a sex")])[0], atol=1e-5)

    missing_numbers = table_feeds([{"island": "Dream"}], spec)
    assert all(np.isnan(missing_numbers[c][0, 0]) for c in PENGUIN_NUMERIC)
    assert table_feeds([{"island": b"Dream", "body_mass_g": "4100"}], spec)["island"][0, 0] == "Dream"
    with pytest.raises(InvalidArgument, match="not a number"):
        table_feeds([{"island": "Dream", "body_mass_g": "heavy"}], spec)
    with pytest.raises(InvalidArgument, match="does not read"):
        table_feeds([{"island": "Dream", "colour": "blue"}], spec)


def test_penguins_bundle_and_latency(penguins, tmp_path: pathlib.Path) -> None:
    splits, _, outcomes = penguins
    spec, outcome = splits.spec, outcomes["mlp"]
    path = tmp_path / "model.onnx"
    export_table_onnx(outcome.pipeline, spec, path)
    bundle = build_table_bundle_dict(spec, "mlp", outcome.test_metrics, _hard_penguin_rows(splits).tail(10),
                                     onnx_opset(path))
    assert bundle["task_type"] == "tabular_classification" and bundle["classes"] == spec.classes
    assert bundle["features"][0] == {"name": "island", "kind": "categorical"}
    assert len(bundle["sample_inputs"]) == 8
    assert any(row["sex"] is None for row in bundle["sample_inputs"])  # missing stays missing in JSON
    json.dumps(bundle, allow_nan=False)
    write_table_bundle(tmp_path / "bundle.tar", path, bundle)
    model_path, description = read_bundle(tmp_path / "bundle.tar", tmp_path / "out")
    assert description == bundle
    # The sample rows alone drive the model: no client-side preprocessing.
    scores = run_table_onnx(model_path, spec, description["sample_inputs"])
    assert scores.shape == (8, len(spec.classes))
    latency = measure_table_latency_ms(model_path, table_feeds(description["sample_inputs"][:1], spec), runs=50)
    print(f"penguins mlp ONNX latency: {latency:.3f} ms/row")
    assert 0 < latency < 50


def test_binary_classification_exports_two_columns(tmp_path: pathlib.Path) -> None:
    frame, _ = _penguins()
    frame = frame[frame["sex"].notna()]
    features = [FeatureSpec("species", "categorical"), FeatureSpec("island", "categorical"),
                *(FeatureSpec(c, "numeric") for c in PENGUIN_NUMERIC)]
    spec = TableSpec(task="classification", label_column="sex", features=features, classes=["female", "male"])
    splits = _write_and_load(tmp_path, frame, spec, stratify=True)
    for candidate in ("gbdt", "mlp"):
        outcome = train_table_model(splits, candidate, {"search": [{}]}, deadline_unix=time.time() + 600)
        assert outcome.test_metrics["accuracy"] > 0.8
        path = tmp_path / f"{candidate}.onnx"
        export_table_onnx(outcome.pipeline, spec, path)
        assert check_table_parity(outcome.pipeline, spec, path, splits.X_test) < PARITY_TOLERANCE
        assert run_table_onnx(path, spec, splits.X_test).shape == (len(splits.X_test), 2)


def test_column_names_are_kept_exactly(tmp_path: pathlib.Path) -> None:
    """ONNX names are any strings: spaces, dots, non-ASCII, and the names skl2onnx keeps for itself."""
    frame, _ = _penguins()
    renames = {"island": "probabilities", "bill_length_mm": "label", "bill_depth_mm": "a b",
               "flipper_length_mm": "a_b", "body_mass_g": "体重 (g).1"}
    frame = frame.rename(columns=renames)
    features = [FeatureSpec("probabilities", "categorical"), *(FeatureSpec(renames[c], "numeric")
                                                               for c in PENGUIN_NUMERIC)]
    spec = TableSpec(task="classification", label_column="species", features=features,
                     classes=sorted(frame["species"].unique()))
    splits = _write_and_load(tmp_path, frame, spec, stratify=True)
    for candidate in ("gbdt", "mlp"):
        outcome = train_table_model(splits, candidate, {"search": [{}]}, deadline_unix=time.time() + 600)
        path = tmp_path / f"{candidate}.onnx"
        export_table_onnx(outcome.pipeline, spec, path)
        proto = onnx.load(str(path))
        assert [i.name for i in proto.graph.input] == spec.feature_names
        assert [o.name for o in proto.graph.output] == ["scores"]
        assert check_table_parity(outcome.pipeline, spec, path, splits.X_test) < PARITY_TOLERANCE
    clash = TableSpec(task="classification", label_column="species", features=[FeatureSpec("scores", "numeric")],
                      classes=spec.classes)
    with pytest.raises(DataError, match="output name"):
        export_table_onnx(outcome.pipeline, clash, tmp_path / "clash.onnx")


# --- diabetes: regression ---------------------------------------------------------------------------


def _diabetes(mixed: bool) -> tuple[pd.DataFrame, TableSpec]:
    frame = load_diabetes(as_frame=True, scaled=False).frame
    numeric = [c for c in frame.columns if c != "target"]
    if not mixed:
        return frame, TableSpec(task="regression", label_column="target",
                                features=[FeatureSpec(c, "numeric") for c in numeric])
    # Names with a space and a dot; a categorical band of blood pressure, 15% missing.
    frame = frame.rename(columns={"bmi": "body mass.index"})
    rng = np.random.default_rng(SEED)
    band = pd.cut(frame["bp"], [0, 85, 100, 1000], labels=["low", "mid", "high"]).astype(object)
    band[rng.random(len(frame)) < 0.15] = None
    frame["bp band.cat"] = band
    frame.loc[rng.random(len(frame)) < 0.05, "body mass.index"] = np.nan
    features = [FeatureSpec("body mass.index" if c == "bmi" else c, "numeric") for c in numeric]
    features.append(FeatureSpec("bp band.cat", "categorical"))
    return frame, TableSpec(task="regression", label_column="target", features=features)


@pytest.fixture(scope="module")
def diabetes(tmp_path_factory: pytest.TempPathFactory) -> tuple[TableSplits, dict[str, TableOutcome]]:
    frame, spec = _diabetes(mixed=False)
    splits = _write_and_load(tmp_path_factory.mktemp("diabetes"), frame, spec, stratify=False)
    return splits, _train_both(splits)


def test_diabetes_mae_matches_the_baseline(diabetes) -> None:
    splits, outcomes = diabetes
    baseline = _baseline(splits)
    maes = {c: o.test_metrics["mae"] for c, o in outcomes.items()}
    print(f"diabetes test MAE: baseline {baseline:.2f}, {maes}")
    assert min(maes.values()) <= 1.05 * baseline
    for outcome in outcomes.values():
        assert set(outcome.test_metrics) == {"mae", "rmse", "r2"}
        assert outcome.test_metrics["rmse"] >= outcome.test_metrics["mae"] > 0
        assert 0.2 < outcome.test_metrics["r2"] < 1


@pytest.mark.parametrize("candidate", ["gbdt", "mlp"])
def test_diabetes_onnx_parity(diabetes, candidate: str, tmp_path: pathlib.Path) -> None:
    splits, outcomes = diabetes
    spec, pipeline = splits.spec, outcomes[candidate].pipeline
    path = tmp_path / "model.onnx"
    export_table_onnx(pipeline, spec, path)
    rows = pd.concat([splits.X_test, splits.X_validation], ignore_index=True)
    rows.loc[0, "bmi"] = np.nan  # never missing in training: the median fills it in both
    assert check_table_parity(pipeline, spec, path, rows) < PARITY_TOLERANCE
    proto = onnx.load(str(path))
    assert [o.name for o in proto.graph.output] == ["prediction"]
    prediction = run_table_onnx(path, spec, rows)
    assert prediction.dtype == np.float32 and prediction.shape == (len(rows),)
    bundle = build_table_bundle_dict(spec, candidate, outcomes[candidate].test_metrics, rows, onnx_opset(path))
    assert bundle["task_type"] == "tabular_regression" and bundle["classes"] == []


def test_mixed_types_regression(tmp_path: pathlib.Path) -> None:
    frame, spec = _diabetes(mixed=True)
    splits = _write_and_load(tmp_path, frame, spec, stratify=False)
    assert splits.X_train["bp band.cat"].isna().any() and splits.X_train["body mass.index"].isna().any()
    baseline = _baseline(splits)
    outcomes = _train_both(splits)
    maes = {c: o.test_metrics["mae"] for c, o in outcomes.items()}
    print(f"diabetes + categorical test MAE: baseline {baseline:.2f}, {maes}")
    assert min(maes.values()) <= 1.05 * baseline
    rows = splits.X_test.copy()
    rows.loc[rows.index[:3], "bp band.cat"] = ["extreme", None, ""]  # unseen, null, and the null marker
    for candidate, outcome in outcomes.items():
        path = tmp_path / f"{candidate}.onnx"
        export_table_onnx(outcome.pipeline, spec, path)
        assert [i.name for i in onnx.load(str(path)).graph.input] == spec.feature_names
        assert check_table_parity(outcome.pipeline, spec, path, rows) < PARITY_TOLERANCE
        one = run_table_onnx(path, spec, {"age": 50, "sex": 1, "body mass.index": None, "bp": 90, "s1": 180,
                                          "s2": 100, "s3": 50, "s4": 4, "s5": 4.6, "s6": 90})
        assert one.shape == (1,) and math.isfinite(float(one[0]))
    # Only the most frequent categories get a column; the rest are encoded as unseen, in ONNX too.
    capped = train_table_model(splits, "mlp", {"max_categories": 2, "search": [{}]}, deadline_unix=time.time() + 600)
    onehot = capped.pipeline.named_steps["preprocess"].named_transformers_["categorical"].named_steps["onehot"]
    counts = splits.X_train["bp band.cat"].fillna("missing").value_counts()
    assert list(onehot.categories_[0]) == sorted(counts.index[:2])
    export_table_onnx(capped.pipeline, spec, tmp_path / "capped.onnx")
    assert check_table_parity(capped.pipeline, spec, tmp_path / "capped.onnx", rows) < PARITY_TOLERANCE


# --- guards ------------------------------------------------------------------------------------------


def test_parity_check_catches_a_different_model(penguins, tmp_path: pathlib.Path) -> None:
    splits, _, outcomes = penguins
    path = tmp_path / "model.onnx"
    export_table_onnx(outcomes["gbdt"].pipeline, splits.spec, path)
    with pytest.raises(ParityError):
        check_table_parity(outcomes["mlp"].pipeline, splits.spec, path, splits.X_test)


def test_spec_and_search_guards(penguins) -> None:
    splits, _, _ = penguins
    with pytest.raises(ValueError, match="also a feature"):
        TableSpec(task="regression", label_column="x", features=[FeatureSpec("x", "numeric")])
    with pytest.raises(ValueError, match="kind"):
        FeatureSpec("x", "text")
    with pytest.raises(ValueError, match="selection_metric"):
        train_table_model(splits, "gbdt", {"selection_metric": "mae"}, deadline_unix=time.time() + 10)
    with pytest.raises(ValueError, match="unknown table model"):
        build_pipeline("svm", splits.spec, {})
    # A deadline already past still trains the first setting, and says the search was cut short.
    outcome = train_table_model(splits, "gbdt", {"max_iter": 20}, deadline_unix=time.time() - 1)
    assert len(outcome.trials) == 1 and outcome.stop_reason == "deadline"
    assert predict_table(outcome.pipeline, splits.spec, splits.X_test).shape == (len(splits.X_test), 3)
