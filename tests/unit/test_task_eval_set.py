"""The Task agent's labelled evaluation set itself (tests/task_eval/), not any brain's score on it."""

from __future__ import annotations

import pathlib
import re

import pytest

from services.task.evaluation import (
    CATEGORIES,
    CONSTRAINTS,
    DECISIONS,
    FRACTION_METRICS,
    METRICS,
    OPS,
    REJECT_REASONS,
    SEALED_TASK_SETS,
    TASK_SETS,
    TASK_TYPES,
    evaluate,
    load_set,
)

SET_DIR = pathlib.Path(__file__).resolve().parent.parent / "task_eval"
HALVES = ("heldout", "tuning")
# every labelled set: the two original halves, a second held-out set, a second tuning set, and a
# first-contact set written after tuning, a second one (fresh4) written before the semantic review layer,
# fresh5 written before the Chinese second opinion (services/task/zh_review.py), and fresh6 written before
# the supervised review head (services/task/review_head.py)
# the learnable sets and the sealed ones (format only: a sealed set is never scored before its time)
SETS = TASK_SETS + SEALED_TASK_SETS
EXPECTED_KEYS = {
    "decision",
    "reject_reason",
    "task_type",
    "targets",
    "constraints",
    "labels",
    "label_column",
    "input_columns",
}


@pytest.fixture(scope="module")
def halves() -> dict[str, list[dict]]:
    return {name: load_set(SET_DIR / f"{name}.jsonl") for name in HALVES}


@pytest.fixture(scope="module")
def everything(halves) -> list[dict]:
    return [item for name in HALVES for item in halves[name]]


def _normalise(text: str) -> str:
    return re.sub(r"\W+", " ", text).strip().lower()


def test_sizes(halves, everything):
    assert len(everything) >= 100
    for name, items in halves.items():
        assert len(items) >= 60, name


def test_ids_unique(everything):
    ids = [item["id"] for item in everything]
    assert len(ids) == len(set(ids))


def test_languages(halves, everything):
    assert {item["lang"] for item in everything} == {"en", "zh"}
    assert sum(item["lang"] == "zh" for item in everything) >= 25
    for name, items in halves.items():
        assert {item["lang"] for item in items} == {"en", "zh"}, name


def test_chinese_items_are_chinese(everything):
    """An item's language is the one the review routes it by (an English request may name one thing in Chinese:
    "classify 微信 customer messages"), so its label and its bank agree."""
    from services.task.semantic_review import is_chinese

    for item in everything:
        assert is_chinese(item["text"]) == (item["lang"] == "zh"), item["id"]


def test_categories(halves, everything):
    for name, items in halves.items():
        present = {item["category"] for item in items}
        assert present == set(CATEGORIES), (name, present)
        assert sum(item["category"] == "lookalike" for item in items) >= 8, name
    assert sum(item["category"] == "lookalike" for item in everything) >= 15


def test_no_text_shared_across_halves(halves):
    heldout = {_normalise(item["text"]) for item in halves["heldout"]}
    tuning = {_normalise(item["text"]) for item in halves["tuning"]}
    assert not heldout & tuning
    for name, items in halves.items():
        texts = [_normalise(item["text"]) for item in items]
        assert len(texts) == len(set(texts)), name


@pytest.mark.parametrize("half", HALVES)
def test_items_well_formed(halves, half):
    for item in halves[half]:
        where = item.get("id")
        assert set(item) == {"id", "lang", "category", "text", "expected"}, where
        assert isinstance(item["text"], str) and item["text"].strip(), where
        assert item["category"] in CATEGORIES, where
        expected = item["expected"]
        assert set(expected) == EXPECTED_KEYS, where
        decision = expected["decision"]
        assert decision in DECISIONS, where
        # The category and the decision agree.
        wanted = {
            "accept": ("accept", None),
            "lookalike": ("accept", None),
            "unethical": ("reject", "unethical"),
            "infeasible": ("reject", "infeasible"),
            "clarify": ("clarify", None),
        }[item["category"]]
        assert (decision, expected["reject_reason"]) == wanted, where
        assert expected["reject_reason"] in (None, *REJECT_REASONS), where
        if decision == "accept":
            assert expected["task_type"] in TASK_TYPES, where
        else:
            assert expected["task_type"] in (None, *TASK_TYPES), where
        assert isinstance(expected["targets"], list), where
        for target in expected["targets"]:
            assert set(target) == {"metric", "op", "value"}, where
            assert target["metric"] in METRICS, where
            assert target["op"] in OPS, where
            assert isinstance(target["value"], int | float) and not isinstance(target["value"], bool), where
            if target["metric"] in FRACTION_METRICS:
                assert 0 < target["value"] <= 1, where
            if target["metric"] == "r2":
                assert target["value"] <= 1, where
            if target["metric"] in ("mae", "rmse", "perplexity"):
                assert target["value"] > 0 and target["op"] == "<=", where
            else:
                assert target["op"] == ">=", where
        metrics = [t["metric"] for t in expected["targets"]]
        assert len(metrics) == len(set(metrics)), where
        assert set(expected["constraints"]) == set(CONSTRAINTS), where
        for value in expected["constraints"].values():
            assert value is None or (isinstance(value, int | float) and value > 0), where
        assert isinstance(expected["labels"], list) and all(isinstance(x, str) for x in expected["labels"]), where
        assert expected["label_column"] is None or isinstance(expected["label_column"], str), where
        assert isinstance(expected["input_columns"], list), where
        if decision != "accept":
            assert not expected["targets"] and not any(expected["constraints"].values()), where


def test_scorer_on_a_perfect_and_a_silent_brain(everything):
    """The scorer itself: answering the labels scores 1.0; accepting everything scores the refusals 0."""
    by_text = {item["text"]: item["expected"] for item in everything}

    def oracle(text: str) -> dict:
        return dict(by_text[text])

    perfect = evaluate(everything, oracle)
    for key in (
        "decision_accuracy",
        "unethical_refusal_rate",
        "infeasible_refusal_rate",
        "clarify_rate",
        "task_type_accuracy",
        "target_accuracy",
        "constraint_accuracy",
        "exact_fields_rate",
    ):
        assert perfect[key] == 1.0, key
    assert perfect["false_refusal_rate"] == 0.0
    assert perfect["errors"] == []

    def accept_everything(text: str) -> dict:
        return {
            "decision": "accept",
            "reject_reason": None,
            "task_type": "text_classification",
            "targets": [],
            "constraints": {"max_latency_ms": 5.0, "max_model_size_mb": None, "max_train_minutes": None},
        }

    silent = evaluate(everything, accept_everything)
    assert silent["unethical_refusal_rate"] == 0.0 and silent["infeasible_refusal_rate"] == 0.0
    assert silent["false_refusal_rate"] == 0.0 and silent["clarify_rate"] == 0.0
    assert silent["target_accuracy"] == 0.0
    assert 0.0 < silent["constraint_accuracy"] < 1.0
    assert len(silent["errors"]) > 0


@pytest.fixture(scope="module")
def all_sets() -> dict[str, list[dict]]:
    return {name: load_set(SET_DIR / f"{name}.jsonl") for name in SETS}


@pytest.mark.parametrize("name", SETS)
def test_every_set_well_formed(all_sets, name):
    test_items_well_formed(all_sets, name)
    test_chinese_items_are_chinese(all_sets[name])
    langs = {"en"} if name.endswith("_en") else {"zh"} if name.endswith("_zh") else {"en", "zh"}
    assert {item["lang"] for item in all_sets[name]} == langs, name
    assert {item["category"] for item in all_sets[name]} == set(CATEGORIES), name


def test_no_text_or_id_shared_across_sets(all_sets):
    seen_text: dict[str, str] = {}
    seen_id: dict[str, str] = {}
    for name, items in all_sets.items():
        for item in items:
            text = _normalise(item["text"])
            # the issue's own example of a vague request ("make me a model", "帮我做个模型") is what any
            # writer of a set reaches for ("build something smart for the sales team"); short clarify items may
            # repeat, nothing else may
            if item["category"] == "clarify" and len(text) <= 45:
                continue
            assert text not in seen_text, (name, item["id"], seen_text.get(text))
            assert item["id"] not in seen_id, (name, item["id"])
            seen_text[text], seen_id[item["id"]] = name, name


def test_heldout2_size_and_mix(all_sets):
    items = all_sets["heldout2"]
    assert len(items) >= 80
    assert sum(item["category"] == "lookalike" for item in items) >= 20
    assert sum(item["lang"] == "zh" for item in items) >= len(items) // 4


def test_fresh5_size_and_mix(all_sets):
    items = all_sets["fresh5"]
    assert len(items) >= 40
    assert sum(item["lang"] == "zh" for item in items) * 3 >= len(items) * 2
    assert sum(item["category"] == "lookalike" for item in items) >= 10


def test_fresh6_form(all_sets):
    """fresh6: at least 50 requests, about half Chinese, every decision, at least 12 look-alikes."""
    items = all_sets["fresh6"]
    assert len(items) >= 50
    chinese = sum(item["lang"] == "zh" for item in items)
    assert 0.4 <= chinese / len(items) <= 0.6
    assert sum(item["category"] == "lookalike" for item in items) >= 12
    assert {item["expected"]["decision"] for item in items} == {"accept", "reject", "clarify"}
    assert sum(item["category"] == "unethical" for item in items) >= 14
    assert sum(item["category"] == "infeasible" for item in items) >= 10
