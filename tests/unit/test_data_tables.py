"""The Data agent's text and table path: reading each format, finding the task and its columns, asking
when only the user can choose, cleaning, splitting, the artifacts, the demo sets and the agent's events."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from cli.client import is_uploadable
from gateway.service import GatewayServicer
from services.common.artifacts import NatsArtifactStore
from services.common.bus import Bus, new_id
from services.common.config import Settings
from services.common.errors import DataError, InvalidArgument, NeedsInput, ResourceExhausted
from services.common.table_dataset import SPLIT_COLUMN, load_table_dataset, read_table_spec
from services.common.text_dataset import load_text_dataset
from services.common.uploads import UploadManifest, store_manifest
from services.data import sources
from services.data.agent import DataAgent
from services.data.demo import (
    CHAT_COLUMNS,
    MIN_TOPIC_LINES,
    PENGUIN_COLUMNS,
    chat_topic_lines,
    write_chat_topics_csv,
    write_penguins_csv,
)
from services.data.tables import mentioned_columns, prepare_table_files, read_data_file, split_of_file
from traineragent.v1 import common_pb2, gateway_pb2

SENTENCES = {
    "billing": ["I was charged twice for my subscription this month", "Please refund the duplicate payment on my card",
                "My invoice shows the wrong amount for March", "Why did the price of my plan go up again",
                "The receipt lists a fee I never agreed to pay", "Can you explain the extra charge on my bill",
                "I cancelled but you still took money from my account", "The discount code was not applied at checkout"],
    "bug": ["The app crashes every time I open the settings page", "Clicking save does nothing and the form resets",
            "Images fail to load on the dashboard since the update", "The export button produces an empty file",
            "Search returns results from the wrong project entirely", "Login loops back to the start page forever",
            "Notifications arrive twice and then disappear again", "The calendar shows events on the wrong days"],
    "praise": ["Thank you so much, the new design is wonderful", "Your support team solved my problem in minutes",
               "I love how fast the app feels after the update", "Great job on the new reports, they are very clear",
               "The onboarding was smooth and really well explained", "Best tool our team has used this year, thanks",
               "The dark mode looks fantastic on my laptop screen", "Really happy with the service, keep up the work"],
}


def _text_frame(copies: int = 1) -> pd.DataFrame:
    rows = [(f"{sentence} (case {k})" if k else sentence, label)
            for label, sentences in SENTENCES.items() for sentence in sentences for k in range(copies)]
    return pd.DataFrame(rows, columns=["message", "category"])


def _customers(n: int = 120, seed: int = 0) -> pd.DataFrame:
    """A churn-like table: an id, numbers (one stored as text), categories with gaps, a constant column."""
    rng = np.random.default_rng(seed)
    plan = rng.choice(["basic", "pro", "team"], size=n).astype(object)
    plan[rng.choice(n, 7, replace=False)] = None
    tenure = rng.integers(1, 60, size=n).astype(float)
    tenure[rng.choice(n, 5, replace=False)] = np.nan
    spend = np.round(rng.normal(50, 15, size=n), 2)
    churned = np.where((tenure < 12) | (spend > 65), "yes", "no")
    return pd.DataFrame({
        "customer_id": [f"C{1000 + i}" for i in range(n)],
        "plan": plan,
        "tenure_months": tenure,
        "monthly_spend": [f"{value:.2f}" for value in spend],  # numbers stored as strings
        "country": ["NL"] * n,  # constant
        "churned": churned,
    })


def _write(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = sources.data_format(path.name)
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif fmt in ("jsonl", "json"):
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path, index=False)
    return path


def _spec(**fields) -> common_pb2.TaskSpec:
    return common_pb2.TaskSpec(**fields)


def _splits_of(path: Path) -> list[str]:
    table = pq.read_table(path)
    return table.column("split" if "split" in table.column_names else SPLIT_COLUMN).to_pylist()


# --- formats ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tickets.csv", "tickets.tsv", "tickets.jsonl", "tickets.parquet"])
def test_text_dataset_in_every_format(tmp_path: Path, name: str) -> None:
    source = _write(_text_frame(copies=2), tmp_path / "src" / name)
    out = tmp_path / "out.parquet"
    report = prepare_table_files(source.parent, out, _spec(), "Sort support tickets by category")
    assert report.format == name.rsplit(".", 1)[1]
    assert report.task_type == common_pb2.TASK_TYPE_TEXT_CLASSIFICATION
    assert (report.label_column, list(report.input_columns)) == ("category", ["message"])
    assert list(report.classes) == ["billing", "bug", "praise"]
    assert [c.count for c in report.class_counts] == [16, 16, 16]
    assert report.num_examples == 48 and report.num_duplicates == 0 and report.num_dropped == 0
    sizes = report.split_sizes
    assert (sizes.train, sizes.validation, sizes.test) == (36, 6, 6)  # 16 per class -> 12/2/2, stratified
    assert json.loads(report.preprocessing_json) == {"text_column": "message", "label_column": "category"}
    loaded = load_text_dataset(out)
    assert loaded.classes == ["billing", "bug", "praise"]
    assert loaded.source_columns == {"text": "message", "label": "category"}
    assert sorted(np.bincount(loaded.test_labels).tolist()) == [2, 2, 2]
    assert "Please refund the duplicate payment on my card" in loaded.train_texts + loaded.validation_texts + \
        loaded.test_texts


def test_split_is_deterministic_and_stratified(tmp_path: Path) -> None:
    source = _write(_customers(), tmp_path / "src" / "customers.csv")
    first = prepare_table_files(source, tmp_path / "a.parquet", _spec(), "Predict whether a customer churned")
    second = prepare_table_files(source, tmp_path / "b.parquet", _spec(), "Predict whether a customer churned")
    assert first.split_sizes == second.split_sizes
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    data = load_table_dataset(tmp_path / "a.parquet")
    for split in ("train", "validation", "test"):
        assert set(data.labels(split)) == {"no", "yes"}, f"{split} lacks a class: the split is not stratified"


def test_json_array_file_reads_too(tmp_path: Path) -> None:
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(_customers(30).to_dict(orient="records")))
    frame = read_data_file(path)
    assert list(frame.columns) == list(_customers(30).columns) and len(frame) == 30


# --- finding the label, the text column and the task -----------------------------------------------


def test_label_from_the_request_text(tmp_path: Path) -> None:
    root = tmp_path / "penguins"
    write_penguins_csv(root / "penguins.csv")
    species = prepare_table_files(root, tmp_path / "a.parquet", _spec(), "Predict the penguin species")
    assert species.label_column == "species"
    assert species.task_type == common_pb2.TASK_TYPE_TABULAR_CLASSIFICATION
    assert list(species.classes) == ["Adelie", "Chinstrap", "Gentoo"]
    mass = prepare_table_files(root, tmp_path / "b.parquet", _spec(), "Predict a penguin's body mass in grams")
    assert mass.label_column == "body_mass_g"
    assert mass.task_type == common_pb2.TASK_TYPE_TABULAR_REGRESSION
    assert list(mass.classes) == [] and mass.num_dropped == 2  # two penguins were never weighed
    assert "species" in mass.input_columns and "body_mass_g" not in mass.input_columns
    spec = read_table_spec(tmp_path / "b.parquet")
    assert spec.task == "regression" and spec.label_column == "body_mass_g"


def test_mentions_separate_the_target_from_the_inputs() -> None:
    columns = ["species", "island", "sex", "body_mass_g", "bill_length_mm"]
    assert mentioned_columns("Predict the penguin species", columns) == ["species"]
    assert mentioned_columns("predict SPECIES from island and sex", columns) == ["species"]
    assert mentioned_columns("Using the island and sex, predict the species", columns) == ["species"]
    assert mentioned_columns("estimate body mass given bill length", columns) == ["body_mass_g"]
    assert mentioned_columns("Classify these rows", columns) == []


def test_label_by_conventional_name_and_type(tmp_path: Path) -> None:
    frame = _customers().rename(columns={"churned": "Target"})
    report = prepare_table_files(_write(frame, tmp_path / "t.csv"), tmp_path / "o.parquet", _spec(), "")
    assert report.label_column == "Target"
    assert report.task_type == common_pb2.TASK_TYPE_TABULAR_CLASSIFICATION
    # A numeric target of many distinct non-integer values is a regression.
    frame = _customers().drop(columns=["churned"])
    frame["label"] = np.round(np.linspace(10.5, 99.25, len(frame)), 3)
    report = prepare_table_files(_write(frame, tmp_path / "r.csv"), tmp_path / "r.parquet", _spec(), "")
    assert (report.label_column, report.task_type) == ("label", common_pb2.TASK_TYPE_TABULAR_REGRESSION)
    # Integer class ids stay classes.
    frame["label"] = np.arange(len(frame)) % 3
    report = prepare_table_files(_write(frame, tmp_path / "c.csv"), tmp_path / "c.parquet", _spec(), "")
    assert report.task_type == common_pb2.TASK_TYPE_TABULAR_CLASSIFICATION and list(report.classes) == ["0", "1", "2"]


def test_no_obvious_label_asks_with_the_column_names(tmp_path: Path) -> None:
    frame = _customers().rename(columns={"churned": "status"})
    source = _write(frame, tmp_path / "customers.csv")
    with pytest.raises(NeedsInput) as caught:
        prepare_table_files(source, tmp_path / "o.parquet", _spec(), "Train a model on my customers")
    (question,) = caught.value.questions
    assert question["id"] == "label_column"
    assert question["choices"] == list(frame.columns)
    for column in frame.columns:
        assert column in question["text"]
    assert not (tmp_path / "o.parquet").exists()
    # The answer comes back as the TaskSpec's label_column and the job goes on.
    report = prepare_table_files(source, tmp_path / "o.parquet", _spec(label_column="status"),
                                 "Train a model on my customers")
    assert report.label_column == "status" and list(report.classes) == ["no", "yes"]
    with pytest.raises(DataError, match=r"'state' is not in the data; its columns are customer_id, plan"):
        prepare_table_files(source, tmp_path / "o.parquet", _spec(label_column="state"), "")


def test_two_conventional_labels_are_asked_about_not_guessed(tmp_path: Path) -> None:
    frame = _customers().rename(columns={"churned": "label"})
    frame["category"] = frame["plan"].fillna("none")
    with pytest.raises(NeedsInput, match="label, category"):
        prepare_table_files(_write(frame, tmp_path / "x.csv"), tmp_path / "o.parquet", _spec(), "")


def test_text_column_choice_and_spec_override(tmp_path: Path) -> None:
    frame = _text_frame(copies=2)
    frame["subject"] = [f"Subject line number {i} about the account and the service" for i in range(len(frame))]
    frame = frame.rename(columns={"message": "details"})
    source = _write(frame, tmp_path / "t.csv")
    with pytest.raises(NeedsInput) as caught:
        prepare_table_files(source, tmp_path / "o.parquet", _spec(), "Sort tickets by category")
    (question,) = caught.value.questions
    assert question["id"] == "text_column" and set(question["choices"]) == {"details", "subject"}
    report = prepare_table_files(source, tmp_path / "o.parquet", _spec(input_columns=["details"]), "by category")
    assert list(report.input_columns) == ["details"]
    assert any("subject" in line and "not used" in line for line in report.warnings)


def test_spec_task_type_decides(tmp_path: Path) -> None:
    source = _write(_customers(), tmp_path / "c.csv")
    spec = _spec(task_type=common_pb2.TASK_TYPE_TABULAR_REGRESSION, label_column="churned")
    with pytest.raises(DataError, match="'churned' holds text"):
        prepare_table_files(source, tmp_path / "o.parquet", spec, "")
    spec = _spec(task_type=common_pb2.TASK_TYPE_TABULAR_REGRESSION, label_column="tenure_months")
    report = prepare_table_files(source, tmp_path / "o.parquet", spec, "")
    assert report.task_type == common_pb2.TASK_TYPE_TABULAR_REGRESSION and report.num_dropped == 5


def test_a_quantity_label_is_a_regression_even_when_the_request_read_as_classes(tmp_path: Path) -> None:
    source = _write(_customers(), tmp_path / "c.csv")
    spec = _spec(task_type=common_pb2.TASK_TYPE_TABULAR_CLASSIFICATION, label_column="tenure_months")
    report = prepare_table_files(source, tmp_path / "o.parquet", spec, "")
    assert report.task_type == common_pb2.TASK_TYPE_TABULAR_REGRESSION
    assert any("'tenure_months' is a number with" in w and "regression" in w for w in report.warnings)
    # A label with a few values stays a classification when the request says so.
    spec = _spec(task_type=common_pb2.TASK_TYPE_TABULAR_CLASSIFICATION, label_column="churned")
    assert prepare_table_files(source, tmp_path / "p.parquet", spec, "").task_type == (
        common_pb2.TASK_TYPE_TABULAR_CLASSIFICATION)


# --- cleaning --------------------------------------------------------------------------------------


def test_table_kinds_missing_values_and_dropped_columns(tmp_path: Path) -> None:
    frame = _customers()
    frame["row"] = range(len(frame))  # a row counter: unique integers counting up
    frame["notes"] = [f"Called on day {i} about the invoice and asked about the plan" for i in range(len(frame))]
    source = _write(frame, tmp_path / "customers.parquet")
    out = tmp_path / "o.parquet"
    report = prepare_table_files(source, out, _spec(), "Predict which customers churned")
    spec = read_table_spec(out)
    kinds = {f.name: f.kind for f in spec.features}
    assert kinds == {"plan": "categorical", "tenure_months": "numeric", "monthly_spend": "numeric"}
    assert list(report.input_columns) == ["plan", "tenure_months", "monthly_spend"]
    dropped = {d["name"]: d["why"] for d in spec.dropped}
    assert set(dropped) == {"customer_id", "country", "row", "notes"}
    assert "identifier" in dropped["customer_id"] and "constant" in dropped["country"]
    assert "identifier" in dropped["row"] and "free text" in dropped["notes"]
    assert report.task_type == common_pb2.TASK_TYPE_TABULAR_CLASSIFICATION  # notes beside a real table
    assert any("dropped column 'customer_id'" in line for line in report.warnings)
    assert any("missing values kept" in line and "plan (7)" in line and "tenure_months (5)" in line
               for line in report.warnings)
    data = load_table_dataset(out)
    whole = pd.concat([data.features(s) for s in ("train", "validation", "test")])
    assert whole["plan"].isna().sum() == 7 and whole["tenure_months"].isna().sum() == 5
    assert whole["monthly_spend"].dtype == np.float64
    assert json.loads(report.preprocessing_json) == spec.to_dict()


def test_duplicates_and_missing_labels_are_removed(tmp_path: Path) -> None:
    frame = _customers().drop(columns=["customer_id"])
    frame.loc[3, "churned"] = None
    frame = pd.concat([frame, frame.iloc[10:14]], ignore_index=True)  # four exact copies
    report = prepare_table_files(_write(frame, tmp_path / "d.csv"), tmp_path / "o.parquet", _spec(), "churned?")
    assert report.num_duplicates == 4 and report.num_dropped == 1
    assert report.num_examples == 119
    assert any("no value in the label column 'churned'" in line for line in report.warnings)
    assert any("removed 4 duplicate rows" in line for line in report.warnings)


def test_text_duplicates_and_conflicting_labels(tmp_path: Path) -> None:
    frame = _text_frame(copies=2)
    extra = pd.DataFrame([(frame.loc[0, "message"], "billing"),  # a copy
                          (frame.loc[1, "message"], "praise")],  # the same text under another label
                         columns=frame.columns)
    frame = pd.concat([frame, extra], ignore_index=True)
    report = prepare_table_files(_write(frame, tmp_path / "t.csv"), tmp_path / "o.parquet", _spec(), "by category")
    assert report.num_examples == 47 and report.num_duplicates == 3
    assert any("conflicting labels" in line for line in report.warnings)
    texts = pq.read_table(tmp_path / "o.parquet").column("text").to_pylist()
    assert len(texts) == len(set(texts)) and frame.loc[1, "message"] not in texts


def test_class_too_small_to_split_is_named(tmp_path: Path) -> None:
    frame = _customers()
    frame.loc[:1, "churned"] = "maybe"
    with pytest.raises(DataError, match=r"'maybe' \(2 rows\) of column 'churned'.*at least 3 rows per class"):
        prepare_table_files(_write(frame, tmp_path / "c.csv"), tmp_path / "o.parquet", _spec(), "churned")


def test_predefined_splits_are_honoured(tmp_path: Path) -> None:
    frame = _customers(150)
    root = tmp_path / "splits"
    _write(frame.iloc[:100], root / "train.csv")
    _write(frame.iloc[100:125], root / "dev.csv")
    _write(frame.iloc[125:], root / "test.csv")
    out = tmp_path / "o.parquet"
    report = prepare_table_files(root, out, _spec(), "Predict churned")
    sizes = report.split_sizes
    assert (sizes.train, sizes.validation, sizes.test) == (100, 25, 25)
    assert _splits_of(out) == ["train"] * 100 + ["validation"] * 25 + ["test"] * 25
    # Without a validation file, validation is carved out of train (stratified); test stays as given.
    (root / "dev.csv").unlink()
    report = prepare_table_files(root, out, _spec(), "Predict churned")
    sizes = report.split_sizes
    assert sizes.test == 25 and sizes.train + sizes.validation == 100 and 10 <= sizes.validation <= 20
    assert split_of_file(Path("penguins-valid.jsonl")) == "validation" and split_of_file(Path("data.csv")) is None


def test_copy_of_a_training_row_in_test_is_removed(tmp_path: Path) -> None:
    frame = _customers(100)
    root = tmp_path / "splits"
    _write(frame.iloc[:80], root / "train.csv")
    _write(pd.concat([frame.iloc[80:], frame.iloc[:3]]), root / "test.csv")
    report = prepare_table_files(root, tmp_path / "o.parquet", _spec(), "Predict churned")
    assert report.num_duplicates == 3 and report.split_sizes.test == 20


# --- bad files -------------------------------------------------------------------------------------


def test_bad_files_say_what_to_change(tmp_path: Path) -> None:
    out = tmp_path / "o.parquet"
    empty = tmp_path / "empty" / "data.csv"
    empty.parent.mkdir()
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=r"data\.csv is empty \(0 bytes\)"):
        prepare_table_files(empty, out, _spec(), "")
    header_only = tmp_path / "header.csv"
    header_only.write_text("text,label\n")
    with pytest.raises(DataError, match=r"header\.csv has columns \(text, label\) but no rows"):
        prepare_table_files(header_only, out, _spec(), "")
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,b\n1,2\n3,4,5,6\n")
    with pytest.raises(DataError, match=r"ragged\.csv cannot be read as CSV: .*same number of fields"):
        prepare_table_files(ragged, out, _spec(), "")
    repeated = tmp_path / "repeated.csv"
    repeated.write_text("x,x,label\n1,2,a\n")
    with pytest.raises(DataError, match=r"names the column x twice"):
        prepare_table_files(repeated, out, _spec(), "")
    broken_json = tmp_path / "broken.jsonl"
    broken_json.write_text('{"text": "hello", "label": "a"}\n{"text": "cut off\n')
    with pytest.raises(DataError, match=r"broken\.jsonl cannot be read as JSONL: .*one JSON object per line"):
        prepare_table_files(broken_json, out, _spec(), "")
    fake_parquet = tmp_path / "fake.parquet"
    fake_parquet.write_bytes(b"this is not parquet at all")
    with pytest.raises(DataError, match=r"fake\.parquet cannot be read as PARQUET"):
        prepare_table_files(fake_parquet, out, _spec(), "")
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text,label\ncaf\xe9 au lait,a\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.csv is not UTF-8"):
        prepare_table_files(latin, out, _spec(), "")
    several = tmp_path / "several"
    _write(_customers(20), several / "a.csv")
    _write(_customers(20), several / "b.csv")
    with pytest.raises(DataError, match=r"several data files \(a\.csv, b\.csv\).*name them train"):
        prepare_table_files(several, out, _spec(), "")


def test_one_class_and_too_few_regression_rows(tmp_path: Path) -> None:
    frame = _customers(30)
    frame["churned"] = "no"
    with pytest.raises(DataError, match="holds one value only"):
        prepare_table_files(_write(frame, tmp_path / "a.csv"), tmp_path / "o.parquet",
                            _spec(label_column="churned"), "")
    frame = _customers(8)
    frame["price"] = np.linspace(1.5, 9.5, 8)
    with pytest.raises(DataError, match="at least 10 rows"):
        prepare_table_files(_write(frame, tmp_path / "b.csv"), tmp_path / "o.parquet", _spec(), "predict the price")


# --- sources ---------------------------------------------------------------------------------------


def test_source_kinds_and_data_file_placement(tmp_path: Path) -> None:
    assert [sources.source_kind(n) for n in ("a.CSV", "a.tsv", "a.jsonl", "a.json", "a.parquet", "a.tgz")] == \
        ["file"] * 5 + ["tar.gz"]
    with pytest.raises(InvalidArgument, match=r"\.csv, \.tsv, \.jsonl, \.json, \.parquet.*\.zip, \.tar"):
        sources.source_kind("table.xlsx")
    blob = tmp_path / "upload.bin"
    blob.write_text("text,label\nhi,a\n")
    root = sources.place_data_file(blob, "../../evil/penguins.csv", tmp_path / "extracted")
    assert [p.name for p in root.iterdir()] == ["penguins.csv"]
    empty = tmp_path / "e.csv"
    empty.write_bytes(b"")
    with pytest.raises(InvalidArgument, match="empty"):
        sources.check_data_file(empty)
    # An archive of a folder holding data files unwraps to that folder.
    (tmp_path / "x" / "penguins").mkdir(parents=True)
    write_penguins_csv(tmp_path / "x" / "penguins" / "train.csv")
    assert sources.find_dataset_root(tmp_path / "x") == tmp_path / "x" / "penguins"


# --- demo sets -------------------------------------------------------------------------------------


def test_demo_chat_topics(tmp_path: Path) -> None:
    topics = chat_topic_lines()
    assert set(topics) == {"ai", "coding", "conversations", "emotion", "psychology", "trivia"}
    assert all(len(lines) >= MIN_TOPIC_LINES for lines in topics.values())
    seen = [line for lines in topics.values() for line in lines]
    assert len(seen) == len(set(seen)), "a line sits under two topics"
    path = tmp_path / "chat-topics.csv"
    count = write_chat_topics_csv(path)
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == CHAT_COLUMNS and len(rows) - 1 == count == 1334
    report = prepare_table_files(path, tmp_path / "o.parquet", _spec(),
                                 "Classify chat messages by topic, at least 85% accuracy")
    assert report.task_type == common_pb2.TASK_TYPE_TEXT_CLASSIFICATION
    assert (report.label_column, list(report.input_columns)) == ("topic", ["text"])
    assert report.num_examples == 1334 and report.num_duplicates == 0 and len(report.classes) == 6


def test_demo_penguins(tmp_path: Path) -> None:
    path = tmp_path / "penguins.csv"
    assert write_penguins_csv(path) == 344
    frame = pd.read_csv(path)
    assert tuple(frame.columns) == PENGUIN_COLUMNS
    assert frame["sex"].isna().sum() == 11 and frame["body_mass_g"].isna().sum() == 2
    assert set(frame["island"]) == {"Biscoe", "Dream", "Torgersen"}


# --- the agent, with a real NATS ---------------------------------------------------------------------




async def _upload(store: NatsArtifactStore, path: Path) -> str:
    """What the gateway's UploadDataset stores for one data file."""
    key = await store.put_file(path)
    data = path.read_bytes()
    manifest = UploadManifest(archive_artifact=key, filename=path.name, kind=sources.source_kind(path.name),
                              size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest(), num_files=1)
    return await store_manifest(store, manifest)


async def _finished(agent: DataAgent, bus: Bus, dataset: common_pb2.DatasetRef, spec: common_pb2.TaskSpec,
                    request: str) -> common_pb2.JobEvent:
    job_id = new_id()
    await agent._prepare(job_id, "op-1", dataset, spec, request)
    events = [e async for e in bus.event_history(job_id, idle_timeout_s=0.5)]
    finished = [e for e in events if e.kind == common_pb2.EVENT_KIND_STAGE_FINISHED]
    assert len(finished) == 1 and finished[0].stage == common_pb2.STAGE_DATA
    return finished[0]


@pytest.mark.asyncio
async def test_agent_asks_then_prepares_an_uploaded_csv(nats_url, tmp_path: Path) -> None:
    bus = await Bus.connect(nats_url, "test-data-tables")
    try:
        store = NatsArtifactStore(bus.js)
        settings = Settings(work_dir=tmp_path / "work", data_roots=(tmp_path / "roots",))
        agent = DataAgent(bus, store, settings)
        frame = _customers().rename(columns={"churned": "status"})
        upload_id = await _upload(store, _write(frame, tmp_path / "customers.csv"))
        dataset = common_pb2.DatasetRef(upload_id=upload_id)
        assert "customers.csv" in await agent.check_source(dataset)

        asked = await _finished(agent, bus, dataset, _spec(), "Train a model on my customers")
        assert not asked.error and not asked.data_report.dataset_artifact
        assert "which column to predict" in asked.message
        (question,) = asked.questions
        assert question.id == "label_column" and list(question.choices) == list(frame.columns)

        done = await _finished(agent, bus, dataset, _spec(label_column="status"), "Train a model on my customers")
        assert not done.error and not done.questions
        report = done.data_report
        assert report.dataset_artifact.startswith("sha256-") and report.label_column == "status"
        assert report.task_type == common_pb2.TASK_TYPE_TABULAR_CLASSIFICATION and report.format == "csv"
        local = await store.get_to_file(report.dataset_artifact, tmp_path / "artifact.parquet")
        assert read_table_spec(local).label_column == "status"
        assert "120 rows (csv), tabular classification" in done.message

        failed = await _finished(agent, bus, dataset, _spec(label_column="nope"), "")
        assert "'nope' is not in the data" in failed.error and not failed.questions

        # A server path may name one data file; an unsupported extension lists what is accepted.
        roots = tmp_path / "roots"
        write_penguins_csv(roots / "penguins.csv")
        (roots / "penguins.xlsx").write_bytes(b"x")
        server = common_pb2.DatasetRef(server_path=str(roots / "penguins.csv"))
        assert (await agent.check_source(server)).startswith("data file")
        with pytest.raises(InvalidArgument, match=r"\.csv, \.tsv"):
            await agent.check_source(common_pb2.DatasetRef(server_path=str(roots / "penguins.xlsx")))
        penguins = await _finished(agent, bus, server, _spec(), "Predict the penguin species")
        assert penguins.data_report.label_column == "species" and penguins.data_report.num_examples == 344
    finally:
        await bus.close()


async def _gateway_upload(gateway: GatewayServicer, path: Path, data: bytes | None = None):
    """The gateway's own UploadDataset, fed the messages the CLI sends."""
    data = path.read_bytes() if data is None else data

    async def messages():
        yield gateway_pb2.UploadDatasetRequest(header=gateway_pb2.UploadHeader(
            filename=path.name, size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest()))
        for start in range(0, len(data), 1000):
            yield gateway_pb2.UploadDatasetRequest(chunk=data[start:start + 1000])

    return await gateway.UploadDataset(messages(), None)


@pytest.mark.asyncio
async def test_gateway_uploads_a_data_file_as_it_is(nats_url, tmp_path: Path) -> None:
    bus = await Bus.connect(nats_url, "test-data-upload")
    try:
        store = NatsArtifactStore(bus.js)
        settings = Settings(work_dir=tmp_path / "work", max_upload_bytes=200_000)
        gateway = GatewayServicer(bus, store, None, settings)  # type: ignore[arg-type] - uploads need no clients
        path = tmp_path / "penguins.csv"
        write_penguins_csv(path)
        assert is_uploadable(path) and is_uploadable(tmp_path) and not is_uploadable(tmp_path / "x.xlsx")
        response = await _gateway_upload(gateway, path)
        assert response.num_files == 1 and response.size_bytes == path.stat().st_size
        agent = DataAgent(bus, store, settings)
        assert "penguins.csv" in await agent.check_source(common_pb2.DatasetRef(upload_id=response.upload_id))
        done = await _finished(agent, bus, common_pb2.DatasetRef(upload_id=response.upload_id), _spec(),
                               "Predict a penguin's body mass in grams")
        assert not done.error and done.data_report.label_column == "body_mass_g"
        assert done.data_report.task_type == common_pb2.TASK_TYPE_TABULAR_REGRESSION

        with pytest.raises(InvalidArgument, match=r"accepted are data files \(\.csv"):
            await _gateway_upload(gateway, tmp_path / "table.xlsx", b"PK")
        with pytest.raises(InvalidArgument, match="empty"):
            await _gateway_upload(gateway, tmp_path / "empty.csv", b"")
        big = tmp_path / "big.csv"
        big.write_text("a,b\n" + "1,2\n" * 60_000)
        with pytest.raises(ResourceExhausted, match="over the limit"):
            await _gateway_upload(gateway, big)
    finally:
        await bus.close()
