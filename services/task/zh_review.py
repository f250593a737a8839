"""A second opinion on Chinese (and mixed) requests for the rule brain's review: character n-grams.

The semantic review (services/task/semantic_review.py) embeds requests with an English encoder that
reads Chinese poorly, so Chinese requests were reviewed by the phrase rules alone. This layer is
language-agnostic and offline: character 1-3-gram TF-IDF (scikit-learn, sublinear tf, fitted on the
bank at first use; deterministic) and a similarity-weighted k-nearest vote over a labelled bank
(``knowledge/review_bank_zh.jsonl``, written by ``scripts/build_review_bank.py``): the Chinese items
of the learnable evaluation sets plus short Chinese concept descriptions of every harm and
infeasibility family of issue 4 and of their harmless look-alikes (``knowledge/review_concepts_zh.jsonl``).

It is combined with the rules exactly like the English layer (``semantic_review.combine``): rules kept
when the nearest exemplar is not similar enough (``familiar``); a refusal added where the rules are
silent on a strong harmful vote (not for protectively framed requests); a rule refusal lifted only for
a protectively framed request (a detector of the harm) with a strong harmless vote.

``TRAINERAGENT_ZH_REVIEW`` = ``1`` / ``0`` turns it on or off (default :data:`DEFAULT_ENABLED`); it only
runs where the semantic review layer is on (``TRAINERAGENT_SEMANTIC_REVIEW``). Thresholds: leave-one-set-
out cross-validation over the Chinese items (``scripts/build_review_bank.py --cv-zh``).

Measured. Leave-one-set-out over the 150 Chinese items of tuning, tuning2, heldout, heldout2, fresh3,
fresh4 (the rules were tuned on most of them, and the concept descriptions were written after
fresh4's mistakes had been read, so these figures flatter): decision 0.947 (rules + English layer,
which is silent on Chinese) -> 0.987, unethical 0.865 -> 1.000, infeasible 1.000 -> 1.000, false
refusals 0.074 -> 0.037. fresh5 (46 requests, 33 Chinese, written before this layer, scored once):
all decision 0.826 -> 0.870, unethical 0.750 -> 0.833, infeasible 0.750 -> 0.875, false refusals
0.083 -> 0.083; its Chinese items decision 0.788 -> 0.848, unethical 0.778 -> 0.889, infeasible
0.667 -> 0.833, false refusals 0.111 -> 0.111. Cost: scikit-learn's import and the fit on first use
(~0.6 s per process), well under 1 ms per Chinese request.
"""

from __future__ import annotations

import functools
import pathlib
import re
import unicodedata
from dataclasses import dataclass

import numpy as np

from services.common.config import env_switch
from services.task.semantic_review import LABELS, Params, Vote, combine, read_bank_entries

KNOWLEDGE = pathlib.Path(__file__).with_name("knowledge")
BANK_FILE = KNOWLEDGE / "review_bank_zh.jsonl"
CONCEPTS_FILE = KNOWLEDGE / "review_concepts_zh.jsonl"
ENV_SWITCH = "TRAINERAGENT_ZH_REVIEW"
DEFAULT_ENABLED = True  # adopted: better than the rules alone on leave-one-set-out and on fresh5

# Session 5: familiar 0.15 -> 0.1 and add_share 0.8 -> 0.7, chosen on a replay of eight sets' first contact (each
# scored with the rules as they stood the day it arrived, the layers trained without it) and checked on tuning5's
# first contact, see review_head.
PARAMS = Params(k=7, familiar=0.1, add_share=0.7, clear_share=0.8, chinese=True)

_DIGITS = re.compile(r"\d+(?:\.\d+)?")
_SPACE = re.compile(r"\s+")


def enabled() -> bool:
    return env_switch(ENV_SWITCH, DEFAULT_ENABLED)


def prepare(text: str) -> str:
    """Full-width forms folded, lower case, every number one token (targets' values carry no meaning here)."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = _DIGITS.sub("0", text)
    return _SPACE.sub(" ", text).strip()


@dataclass(frozen=True)
class Bank:
    texts: tuple[str, ...]
    labels: tuple[str, ...]
    sources: tuple[str, ...]

    def without(self, source: str) -> Bank:
        keep = [i for i, s in enumerate(self.sources) if s != source]
        return Bank(tuple(self.texts[i] for i in keep), tuple(self.labels[i] for i in keep),
                    tuple(self.sources[i] for i in keep))

    @functools.cached_property
    def _index(self):
        from sklearn.feature_extraction.text import TfidfVectorizer

        vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True,
                                     preprocessor=prepare, lowercase=False, dtype=np.float64)
        matrix = vectorizer.fit_transform(self.texts)
        return vectorizer, matrix

    def similarities(self, text: str) -> np.ndarray:
        vectorizer, matrix = self._index
        query = vectorizer.transform([text])
        return np.round((matrix @ query.T).toarray().ravel(), 4)


def read_entries(path: pathlib.Path = BANK_FILE) -> list[dict]:
    """The Chinese bank's entries (same JSONL form as the English bank's)."""
    return read_bank_entries(path)


@functools.cache
def load_bank() -> Bank:
    entries = read_entries()
    return Bank(tuple(e["text"] for e in entries), tuple(e["label"] for e in entries),
                tuple(e.get("source", "") for e in entries))


def vote(text: str, bank: Bank | None = None, k: int = PARAMS.k) -> Vote:
    bank = bank if bank is not None else load_bank()
    sims = bank.similarities(text)
    order = sorted(range(len(sims)), key=lambda i: (-float(sims[i]), i))[:k]
    weights = {label: 0.0 for label in LABELS}
    for i in order:
        weights[bank.labels[i]] += max(float(sims[i]), 0.0)
    total = sum(weights.values()) or 1.0
    label = max(LABELS, key=lambda name: (weights[name], -LABELS.index(name)))
    return Vote(label=label, share=round(weights[label] / total, 4),
                top_similarity=float(sims[order[0]]) if order else 0.0,
                neighbours=tuple((float(sims[i]), bank.labels[i], bank.texts[i]) for i in order))


def review(text: str, rule_verdict: tuple[int, str] | None, protective: bool,
           params: Params | None = None) -> tuple[int, str] | None:
    """The combined verdict for a Chinese request given the rules' verdict."""
    params = params or PARAMS
    try:
        the_vote = vote(text, k=params.k)
    except (ImportError, OSError, ValueError):  # no scikit-learn or no bank: the rules alone
        return rule_verdict
    return combine(text, rule_verdict, the_vote, protective, params)
