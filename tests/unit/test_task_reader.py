"""The learned task-type reader (services/task/task_reader.py): stored arrays, determinism, fallback, examples."""

from __future__ import annotations

import pytest

from services.common.jsonfmt import message_to_json
from services.task import rules, semantic_review, task_reader
from traineragent.v1 import common_pb2

# Plain requests the rules alone leave without a task type (so they asked), read right with the reader.
PLAIN = [
    ("Language identification for the 40 languages our support desk handles, with at least 97% accuracy.",
     "text_classification"),
    ("Which website sessions end in a purchase? Use pages viewed, time on site, traffic source and device type.",
     "tabular_classification"),
    ("Score card transactions for fraud at checkout; the answer must come back in under 1 ms.",
     "tabular_classification"),
    ("How many bikes will be rented per hour at each docking station, given the weather and the time? R2 above "
     "0.75, model size at most 20 MB.", "tabular_regression"),
    ("工厂质检：产线相机会给每块瓷砖拍照，要判断有没有裂纹。单张推理时间不超过50毫秒，模型大小在20MB以内。",
     "image_classification"),
    ("根据登录日志判断是不是撞库、盗号之类的异常登录，精确率和召回率都要在0.9以上。", "tabular_classification"),
    ("平台上刷单水军太多了，帮我们训练一个识别虚假好评的分类器，方便审核同事下架。", "text_classification"),
]


@pytest.fixture()
def reader_on(monkeypatch):
    monkeypatch.setenv(task_reader.ENV_SWITCH, "1")


def _read(text: str) -> dict:
    return message_to_json(rules.read_request(text))


def test_stored_arrays_match_the_current_training_texts():
    examples = task_reader.training_examples()
    assert examples and {e.label for e in examples} == set(task_reader.CLASSES)
    assert task_reader.stored_fingerprint() == task_reader.fingerprint(examples), (
        "the labelled sets changed: re-run .venv/bin/python scripts/build_task_reader.py")


def test_the_sealed_set_is_never_learnt_from(monkeypatch):
    from services.task.evaluation import SEALED_TASK_SETS, TASK_SETS

    assert not set(SEALED_TASK_SETS) & set(TASK_SETS)
    for name in SEALED_TASK_SETS:
        with pytest.raises(ValueError):
            task_reader.training_examples(sets=(name,))
    # the guard itself, whichever sets are sealed at the moment
    monkeypatch.setattr(task_reader, "SEALED_TASK_SETS", ("heldout",))
    with pytest.raises(ValueError):
        task_reader.training_examples(sets=("heldout",))


def test_stored_readers_load_without_pickle():
    readers = task_reader.load_readers(task_reader.READER_FILE)
    assert readers["en"].coef.shape == (len(task_reader.CLASSES), 384) and readers["en"].vocabulary is None
    assert readers["zh"].vocabulary is not None
    assert readers["zh"].coef.shape == (len(task_reader.CLASSES), len(readers["zh"].vocabulary.grams))


@pytest.mark.parametrize("text", [PLAIN[0][0], PLAIN[4][0]])
def test_probabilities_are_deterministic(text, reader_on):
    first, again = task_reader.read(text), task_reader.read(text)
    assert first is not None and first.probabilities == again.probabilities
    assert abs(sum(first.probabilities) - 1.0) < 1e-3
    assert _read(text) == _read(text)


@pytest.mark.parametrize(("text", "task_type"), PLAIN)
def test_plain_requests_read_right(text, task_type, reader_on):
    spec = _read(text)
    assert spec["decision"] == "accept", spec
    assert spec["task_type"] == task_type


def test_the_rules_alone_when_switched_off(monkeypatch):
    monkeypatch.setenv(task_reader.ENV_SWITCH, "0")
    assert _read(PLAIN[2][0])["decision"] == "clarify"  # the rules find no task type here


def test_fallback_to_the_rules_without_the_stored_arrays(monkeypatch, tmp_path, reader_on):
    monkeypatch.setattr(task_reader, "READER_FILE", tmp_path / "missing.npz")
    assert task_reader.read(PLAIN[2][0]) is None
    assert _read(PLAIN[2][0])["decision"] == "clarify"
    spec = _read("Classify support tickets into billing, bugs or other, F1 at least 0.8.")
    assert spec["decision"] == "accept" and spec["task_type"] == "text_classification"


def test_fallback_to_the_rules_without_the_encoder(monkeypatch, reader_on):
    def missing(text):
        raise ImportError("no encoder")

    monkeypatch.setattr(semantic_review, "_embedding", missing)
    assert task_reader.read(PLAIN[2][0]) is None
    assert task_reader.read(PLAIN[4][0]) is not None  # Chinese needs no encoder


def test_explicit_vague_patterns_still_ask(reader_on):
    for text in ("Make me a model", "帮我训练一个模型"):
        assert _read(text)["decision"] == "clarify"


def test_decide_keeps_or_overrides_the_rules_type_by_policy():
    rule = task_reader.RuleReading(common_pb2.TASK_TYPE_TEXT_CLASSIFICATION, False, False, frozenset())
    confident_other = task_reader.Reading((0.0, 0.01, 0.97, 0.01, 0.0, 0.01))
    unsure_other = task_reader.Reading((0.1, 0.3, 0.4, 0.1, 0.0, 0.1))
    # Chinese: the reader only fills in; English: it also overrides when confident (POLICY_EN.override_p)
    assert task_reader.decide(rule, confident_other, task_reader.POLICY_ZH) == (
        common_pb2.TASK_TYPE_TEXT_CLASSIFICATION, False)
    assert task_reader.decide(rule, confident_other, task_reader.POLICY_EN) == (
        common_pb2.TASK_TYPE_TEXT_GENERATION, False)
    assert task_reader.decide(rule, unsure_other, task_reader.POLICY_EN) == (
        common_pb2.TASK_TYPE_TEXT_CLASSIFICATION, False)
    unspecified = task_reader.RuleReading(common_pb2.TASK_TYPE_UNSPECIFIED, False, False,
                                          frozenset({common_pb2.METRIC_MAE}))
    vague = task_reader.Reading((0.1, 0.1, 0.05, 0.05, 0.1, 0.6))
    assert task_reader.decide(unspecified, vague, task_reader.POLICY_EN)[1] is True
    table = task_reader.Reading((0.05, 0.05, 0.05, 0.7, 0.1, 0.05))  # a table, but the metric says regression
    assert task_reader.decide(unspecified, table, task_reader.POLICY_EN) == (
        common_pb2.TASK_TYPE_TABULAR_REGRESSION, False)
    explicit = task_reader.RuleReading(common_pb2.TASK_TYPE_UNSPECIFIED, True, False, frozenset())
    assert task_reader.decide(explicit, table, task_reader.POLICY_EN)[1] is True


def test_firm_writing_and_a_tables_read_kind_are_kept():
    """Session 9 (tuning18/19): the reader had turned "write a short explanation for staff of the warning signs" into
    text classification and "predict the average length of career gaps" into tabular classification."""
    gen, cls_ = common_pb2.TASK_TYPE_TEXT_GENERATION, common_pb2.TASK_TYPE_TEXT_CLASSIFICATION
    tab_c, tab_r = common_pb2.TASK_TYPE_TABULAR_CLASSIFICATION, common_pb2.TASK_TYPE_TABULAR_REGRESSION
    says_text = task_reader.Reading((0.0, 0.97, 0.01, 0.01, 0.0, 0.01))
    says_table = task_reader.Reading((0.0, 0.01, 0.01, 0.97, 0.0, 0.01))
    en = task_reader.POLICY_EN
    firm = task_reader.RuleReading(gen, False, False, frozenset(), firm_writing=True)
    loose = task_reader.RuleReading(gen, False, False, frozenset())
    assert task_reader.decide(firm, says_text, en) == (gen, False)
    assert task_reader.decide(loose, says_text, en) == (cls_, False)
    read_kind = task_reader.RuleReading(tab_r, False, False, frozenset(), kind_read=True)
    default_kind = task_reader.RuleReading(tab_r, False, False, frozenset())
    assert task_reader.decide(read_kind, says_table, en) == (tab_r, False)
    assert task_reader.decide(default_kind, says_table, en) == (tab_c, False)
    # a table the reader takes for text is still overridden: only the kind of a table is kept
    assert task_reader.decide(read_kind, says_text, en) == (cls_, False)


def test_a_classify_intent_is_never_overridden_into_generation():
    """The reader once read 'Route chat messages to a topic, each answer in under 1 ms' as generation (p 0.55)."""
    from services.task.evaluation import plan_with_rules

    assert plan_with_rules("Route chat messages to a topic, each answer in under 1 ms")["task_type"] == "text_classification"
