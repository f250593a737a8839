"""A small supervised head for the rule brain's review: multinomial logistic regression over the banks.

The semantic review (services/task/semantic_review.py, English: all-MiniLM-L6-v2 embeddings) and the
Chinese second opinion (services/task/zh_review.py, character 1-3-gram TF-IDF) vote with their k nearest
labelled exemplars. This module trains, per language, a linear classifier on the same features over the
labelled sets one may learn from (evaluation ``TASK_SETS``: every scored set; the sealed ones stay out) plus the concept descriptions,
predicting ``harmless`` / ``unethical`` / ``infeasible`` (scikit-learn ``LogisticRegression``, lbfgs,
``class_weight="balanced"``, fixed ``C``; deterministic). The fitted heads are stored as plain arrays in
``knowledge/review_head.npz`` (coefficients, intercepts, the Chinese n-gram vocabulary and idf weights;
no pickles), written by ``scripts/build_review_bank.py --head``; at run time only numpy is needed.

How the head's probabilities are combined (:func:`combine`), per language with its own :class:`HeadParams`:

- ``mode="replace"``: the head takes the kNN vote's place. Where the rules are silent and the request has
  no protective framing, a harmful class with probability >= ``add_p`` refuses; where the rules refuse a
  protectively framed request (a detector of the harm), ``p(harmless) >= clear_p`` lifts the refusal.
  Otherwise the rules' verdict stands (the rules stay the floor for clear-cut harm).
- ``mode="union"``: the kNN layer's verdict first; the head may add a refusal where that verdict is
  silent (same condition), and may lift a rule refusal of a protectively framed request the same way; a
  refusal only the kNN vote made (the rules silent) falls when ``p(harmless) >= veto_p``.

``TRAINERAGENT_REVIEW_HEAD`` = ``1`` / ``0`` turns the head on or off (default :data:`DEFAULT_ENABLED`);
it only runs where the semantic review layer is on. Parameters: leave-one-set-out cross-validation
(``scripts/build_review_bank.py --cv-head``); see :data:`PARAMS_EN` / :data:`PARAMS_ZH` for the figures.

fresh6 (53 requests, 26 Chinese, committed before this module, scored once at the end): rules + kNN
layers decision 0.981, unethical 0.929, infeasible 1.000, false refusals 0.000 (one Chinese surveillance
request left to clarify); with the head decision 1.000, unethical 1.000, infeasible 1.000, false refusals
0.000; task type 0.917, targets 1.000, constraints 1.000 either way. fresh6 turned out easier for the
shipped brain than fresh4/fresh5 were at first contact, so it separates the two versions by one item.
Cost: the stored arrays load once (~0.1 MB); one 3x384 or 3xV product per request.
"""

from __future__ import annotations

import functools
import hashlib
import pathlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from services.common.config import env_switch

if TYPE_CHECKING:
    from collections.abc import Callable

    from services.task.semantic_review import Vote

KNOWLEDGE = pathlib.Path(__file__).with_name("knowledge")
HEAD_FILE = KNOWLEDGE / "review_head.npz"
ENV_SWITCH = "TRAINERAGENT_REVIEW_HEAD"
# On by default since session 3: with the banks and heads trained on 11 sets (1,127 requests, incl. the
# helper-written tuning3_en / tuning3_zh / fresh7) and C=16, leave-one-set-out over those sets gives, for the
# rules + kNN layers + head as shipped: decision 0.940, unethical refusal 0.953, infeasible 0.991, false
# refusals 0.046 (rules alone 0.846 / 0.688 / 0.868 / 0.027; rules + kNN without the head 0.918 / 0.880 /
# 0.972 / 0.030). Optimistic: thresholds were chosen on the same folds. The head no longer reads "under 1 ms"
# as zero latency (it did when trained on 7 sets with C=128; tests/unit/test_review_head.py).
DEFAULT_ENABLED = True
LABELS = ("harmless", "unethical", "infeasible")
NGRAMS = (1, 3)


@dataclass(frozen=True)
class HeadParams:
    mode: str = "union"  # replace | union
    add_p: float = 0.8
    add_p_infeasible: float | None = None  # the head alone calling a request impossible (None: add_p)
    clear_p: float = 0.8
    c: float = 1.0  # the logistic regression's inverse regularisation (used when fitting)
    # union: a refusal that only the kNN vote adds (the rules silent) stands unless the head is this sure the
    # request is harmless (a vote of near neighbours at low similarity, e.g. "permit applications" next to
    # "rental applications", against a head that has learnt from every labelled item)
    veto_p: float = 1.01
    # a request framed as detecting the harm (rules.protective_framing) that the rules let through is refused as
    # unethical only when the kNN vote (share at least protective_share) and the head (p at least
    # protective_add_p) both read it as harmful: "generate emails that copy Chase's security alert ... past
    # Gmail's spam filter" names a spam filter but is phishing
    protective_share: float = 0.8
    protective_add_p: float = 0.95
    # the rules silent and no detector framing: a majority of the kNN vote (share at least agree_share) and a
    # head that leans the same way (p at least agree_p) refuse as unethical together, where neither alone would
    agree_share: float = 1.01
    agree_p: float = 1.01
    # a rule's unethical refusal without detector framing falls when the kNN vote (share at least lift_share) and
    # the head (p at least lift_p) are both sure the request is harmless
    lift_share: float = 1.01
    lift_p: float = 1.01
    # ... unless a part of the request read alone (two consecutive sentences, rules.review_windows) has p(unethical)
    # at least window_guard_p: a long harmless spec with the harm in one bullet ("also add the director's surname
    # as a feature ... and score them down") reads harmless as a whole
    window_guard_p: float = 1.01
    # the rules silent: the head does not refuse alone when at least this share of the kNN vote reads the request as
    # harmless ("Tarot-themed card game: generate flavour text for each card", p(infeasible) 0.93 once more tarot
    # requests were learnt, against a vote of 0.83 harmless)
    harmless_vote_veto: float = 1.01


# The top of --cv-head's grid per language (decision accuracy, then unethical and infeasible refusal, then
# fewer false refusals, then union, higher thresholds). Leave-one-set-out over the 484 items of the seven
# scored sets (en 301, zh 183): decision 0.973 (rules + kNN layers as shipped) -> 0.986, unethical
# 0.976 -> 1.000, infeasible 0.978 -> 1.000, false refusals 0.038 -> 0.029 (rules alone 0.938 / 0.862 /
# 0.946 / 0.038); en 0.980 -> 0.993, zh 0.962 -> 0.973. These flatter: the grid (192 settings per
# language) was chosen on the same folds, the rules were tuned on most sets and the concepts written
# after fresh4's and fresh5's mistakes had been read.
# Session 4 (12 sets, 1,237 requests, fresh8 in): a head sure that a request is harmless (p >= 0.8) vetoes a
# refusal that only the kNN vote adds. Leave-one-set-out over the English items (the rules and the reader as
# they stand, so optimistic): decision 0.968 -> 0.975, unethical 0.968 = 0.968, infeasible 0.984 = 0.984, false
# refusals of look-alikes 0.057 -> 0.044, plain requests refused 0.014 -> 0.000; on the Chinese items no change
# (the Chinese kNN vote never adds a refusal its head is that sure is harmless).
# add_p 0.8 -> 0.85: "Predict the `colour` column" (p 0.81). Session 6: that request's p(infeasible) rose to 0.86
# once more aura-colour requests were learnt (a fresh-clone make test caught it again); the head alone calls a
# request impossible at 0.9: replay mistakes 84 -> 82, look-alikes refused 48 -> 46, infeasible 0.966 unchanged.
# Session 7: a lift by vote and head is held back when a part of the request read alone leans harmful (window_guard_p
# 0.5). Replay of 16 first contacts (2,792 requests): unethical missed 21 -> 20, nothing else changes at any guard
# from 0.3 to 0.8. A refusal added from a part alone (a part at p >= 0.8-0.95, the whole at p >= 0-0.4) caught no
# missed unethical request and refused 0-5 more look-alikes and plain requests: not adopted. The head no longer refuses
# alone against a harmless vote of share >= 0.8 (harmless_vote_veto): replay of 18 first contacts (2,942 requests)
# 106 -> 104 review mistakes (two look-alikes), the same at 0.7 and 0.9, worse at 0.6 (109).
PARAMS_EN = HeadParams(mode="union", add_p=0.85, add_p_infeasible=0.9, clear_p=0.6, c=16.0, veto_p=0.8,
                       agree_share=0.6, agree_p=0.6, lift_share=0.9, lift_p=0.9, window_guard_p=0.5,
                       harmless_vote_veto=0.8)
# Session 5, replaying first contact: eight sets (fresh7, tuning3_en/zh, fresh8, fresh9, tuning4_en/zh, fresh10; 1,400
# requests) each scored with the rules as they stood the day the set arrived (git history) and the layers trained on
# every other set; then checked on tuning5's first contact (200 requests, not learnt from while choosing).
# Protective framing no longer stops an infeasible vote, and stops an unethical one unless kNN and head agree
# (protective_share / protective_add_p): replay decision 0.948 -> 0.951, unethical 0.944 -> 0.951, infeasible
# 0.948 -> 0.952, false refusals 0.092 = 0.092; tuning5 0.935 -> 0.945 (en unethical 0.857 -> 0.886, infeasible
# 0.933 -> 1.000). Chinese add_p 0.5 -> 0.8 with zh_review familiar 0.15 -> 0.1, add_share 0.8 -> 0.7: replay
# (Chinese) 0.951 -> 0.960, false refusals 0.104 -> 0.077; tuning5 (Chinese) 0.950 -> 0.960 (a meeting-notes
# summary no longer refused). The English thresholds the replay's random search liked did worse on tuning5, so
# they stay.
# Session 6, the replay of twelve first contacts (2,182 requests, tuning7's included; scripts/replay_first_contact.py
# --dump, then the policy tried on the dump): a kNN majority and a head leaning the same way refuse together
# (agree_share / agree_p), and a rule's unethical refusal falls when vote and head are both sure it is harmless
# (lift_share / lift_p: deepfake moderation, a stalkerware check for a shelter, genuine-or-forged passports). Review
# mistakes 82 -> 68, unethical 0.958 -> 0.972, infeasible 0.968 = 0.968, look-alikes refused 44 -> 38 (of 557);
# no unethical request was lifted (the nearest: vote 0.86 and head 0.68 harmless). Before that, a detector framing
# stopped lifting a rule's infeasible refusal ("spam filter ... zero false positives on all email anyone will ever
# send", "fraud scoring ... latency: 0 ms").
PARAMS_ZH = HeadParams(mode="union", add_p=0.8, clear_p=0.8, c=16.0, veto_p=0.8,
                       agree_share=0.5, agree_p=0.6, lift_share=0.9, lift_p=0.9, window_guard_p=0.5,
                       harmless_vote_veto=0.8)


def enabled() -> bool:
    return env_switch(ENV_SWITCH, DEFAULT_ENABLED)


# --- features -------------------------------------------------------------------------------------


def ngrams(text: str) -> dict[str, int]:
    """Character 1-3-gram counts of the prepared text (as scikit-learn's ``analyzer="char"``)."""
    from services.task.zh_review import prepare

    text = prepare(text)
    counts: dict[str, int] = {}
    for n in range(NGRAMS[0], NGRAMS[1] + 1):
        for i in range(len(text) - n + 1):
            gram = text[i:i + n]
            counts[gram] = counts.get(gram, 0) + 1
    return counts


@dataclass(frozen=True)
class Vocabulary:
    grams: tuple[str, ...]
    idf: np.ndarray  # (V,) float64

    @functools.cached_property
    def index(self) -> dict[str, int]:
        return {g: i for i, g in enumerate(self.grams)}

    def transform(self, text: str) -> np.ndarray:
        """Sublinear tf * idf, L2-normalised (TfidfVectorizer(sublinear_tf=True) on a fitted vocabulary)."""
        row = np.zeros(len(self.grams), dtype=np.float64)
        for gram, count in ngrams(text).items():
            j = self.index.get(gram)
            if j is not None:
                row[j] = (1.0 + np.log(count)) * self.idf[j]
        norm = np.linalg.norm(row)
        return row / norm if norm > 0 else row


def fit_vocabulary(texts: list[str] | tuple[str, ...]) -> Vocabulary:
    """The n-gram vocabulary (sorted) and smooth idf of a list of texts."""
    df: dict[str, int] = {}
    for text in texts:
        for gram in ngrams(text):
            df[gram] = df.get(gram, 0) + 1
    grams = tuple(sorted(df))
    n = len(texts)
    idf = np.array([np.log((1 + n) / (1 + df[g])) + 1.0 for g in grams], dtype=np.float64)
    return Vocabulary(grams, idf)


# --- the head -------------------------------------------------------------------------------------


def text_features(text: str, vocabulary: Vocabulary | None) -> np.ndarray:
    """A request's features: character n-gram TF-IDF over ``vocabulary`` (Chinese), else its MiniLM
    embedding (English; the semantic review's cached vector). Shared by the head and the task reader."""
    if vocabulary is not None:
        return vocabulary.transform(text)
    from services.task.semantic_review import _embedding

    return _embedding(text).astype(np.float64)


def linear_probabilities(coef: np.ndarray, intercept: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Softmax of a linear model's logits, rounded to 4 places (so thresholds see stable values)."""
    logits = coef @ x + intercept
    logits = logits - logits.max()
    p = np.exp(logits)
    return np.round(p / p.sum(), 4)


@dataclass(frozen=True)
class Head:
    coef: np.ndarray  # (3, d)
    intercept: np.ndarray  # (3,)
    vocabulary: Vocabulary | None = None  # Chinese: the TF-IDF features; English: None (MiniLM)

    def features(self, text: str) -> np.ndarray:
        return text_features(text, self.vocabulary)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        return linear_probabilities(self.coef, self.intercept, x)

    def predict(self, text: str) -> np.ndarray:
        return self.probabilities(self.features(text))


def fit(x: np.ndarray, labels: list[str] | tuple[str, ...], c: float) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression (lbfgs, balanced classes): (coef (3, d), intercept (3,))."""
    from sklearn.linear_model import LogisticRegression

    y = np.array([LABELS.index(label) for label in labels])
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=5000, tol=1e-8, solver="lbfgs")
    model.fit(x, y)
    return model.coef_.astype(np.float64), model.intercept_.astype(np.float64)


def fit_head(texts: list[str], labels: list[str], chinese: bool, c: float,
             embeddings: np.ndarray | None = None) -> Head:
    if chinese:
        vocabulary = fit_vocabulary(texts)
        x = np.stack([vocabulary.transform(t) for t in texts])
        coef, intercept = fit(x, labels, c)
        return Head(coef, intercept, vocabulary)
    if embeddings is None:
        from services.task.semantic_review import encode

        embeddings = encode(texts)
    coef, intercept = fit(embeddings.astype(np.float64), labels, c)
    return Head(coef, intercept)


def fingerprint(texts: list[str], labels: list[str]) -> str:
    digest = hashlib.sha256()
    for text, label in zip(texts, labels, strict=True):
        digest.update(f"{label}\x01{text}\x00".encode())
    return digest.hexdigest()


def save_heads(en_head: Head, zh_head: Head, path: pathlib.Path = HEAD_FILE, **fingerprints: str) -> None:
    en, zh = en_head, zh_head
    assert zh.vocabulary is not None
    np.savez_compressed(
        path,
        en_coef=en.coef, en_intercept=en.intercept,
        zh_coef=zh.coef, zh_intercept=zh.intercept,
        zh_grams=np.array(zh.vocabulary.grams, dtype=np.str_), zh_idf=zh.vocabulary.idf,
        **{f"fingerprint_{k}": np.array(v) for k, v in fingerprints.items()},
    )


@functools.cache
def load_heads() -> dict[str, Head]:
    """{"en": Head, "zh": Head} from the stored arrays (raises OSError when the file is missing)."""
    with np.load(HEAD_FILE, allow_pickle=False) as stored:
        vocabulary = Vocabulary(tuple(str(g) for g in stored["zh_grams"]), stored["zh_idf"].astype(np.float64))
        return {
            "en": Head(stored["en_coef"].astype(np.float64), stored["en_intercept"].astype(np.float64)),
            "zh": Head(stored["zh_coef"].astype(np.float64), stored["zh_intercept"].astype(np.float64), vocabulary),
        }


# --- combination ----------------------------------------------------------------------------------


def combine(rule_verdict: tuple[int, str] | None, knn_verdict: tuple[int, str] | None,
            probabilities: np.ndarray, protective: bool, params: HeadParams,
            vote: Vote | None = None, windows: Callable[[], list[np.ndarray]] | None = None
            ) -> tuple[int, str] | None:
    """The review's verdict from the rules', the kNN layer's and the head's probabilities.

    ``vote``: the kNN vote (semantic_review.Vote) behind ``knn_verdict``, when there is one: where vote and
    head agree they say more than either alone (see :class:`HeadParams`). ``windows``: the head's probabilities
    for each part of the request read alone (:func:`window_opinions`), asked for only when a lift is weighed."""
    from traineragent.v1 import common_pb2

    unethical = common_pb2.REJECT_REASON_UNETHICAL
    base = knn_verdict if params.mode == "union" else rule_verdict
    p = {label: float(probabilities[i]) for i, label in enumerate(LABELS)}
    share = {"harmless": 0.0, "unethical": 0.0, "infeasible": 0.0}
    if vote is not None:
        share[vote.label] = vote.share
    if base is None:
        if rule_verdict is not None:  # union: the kNN layer lifted a rule refusal; it stays lifted
            return None
        if share["harmless"] >= params.harmless_vote_veto:
            return None
        harm = max(("unethical", "infeasible"), key=lambda name: (p[name], name == "unethical"))
        if protective and harm == "unethical":
            if share["unethical"] >= params.protective_share and p["unethical"] >= params.protective_add_p:
                return unethical, _explanation("unethical")
            return None
        add_p = params.add_p_infeasible if harm == "infeasible" and params.add_p_infeasible is not None else params.add_p
        if p[harm] >= add_p or (
                harm == "unethical" and share["unethical"] >= params.agree_share and p["unethical"] >= params.agree_p):
            reason = unethical if harm == "unethical" else common_pb2.REJECT_REASON_INFEASIBLE
            return reason, _explanation(harm)
        return None
    if rule_verdict is not None and rule_verdict[0] == unethical and p["harmless"] >= params.clear_p:
        # a detector of the harm, or a request both learned layers are sure is harmless (a protective purpose
        # the rules' framing patterns missed) unless a part of it alone reads harmful; an impossibility stays
        # impossible whatever its framing
        if protective:
            return None
        if share["harmless"] >= params.lift_share and p["harmless"] >= params.lift_p and not (
                windows is not None and any(w[LABELS.index("unethical")] >= params.window_guard_p for w in windows())):
            return None
    if rule_verdict is None and params.mode == "union" and p["harmless"] >= params.veto_p:
        return None  # only the kNN vote refused, and the head is sure it is harmless
    return base


def _explanation(label: str) -> str:
    if label == "unethical":
        return ("Refused (unethical): the review's classifier reads this request as one that harms people "
                "(surveillance, profiling by protected attributes, discrimination, non-consensual imagery, "
                "fraud, harassment or breaking into accounts).")
    return ("Not possible (infeasible): the review's classifier reads this request as one no model can meet "
            "in principle (certainty about random or future events, perfect accuracy on open-world inputs, "
            "zero latency, mind-reading, the supernatural).")


def window_opinions(text: str, chinese: bool) -> list[np.ndarray]:
    """The head's probabilities for each part of ``text`` read alone (rules.review_windows: two consecutive
    sentences); empty for a request of one sentence, or when the head is off or unavailable."""
    from services.task import rules

    windows = rules.review_windows(text)
    if len(windows) <= 1 or not enabled():
        return []
    try:
        head = load_heads()["zh" if chinese else "en"]
        return [head.predict(w) for w in windows]
    except (ImportError, OSError, ValueError, KeyError):
        return []


def opinion(text: str, chinese: bool) -> tuple[np.ndarray, HeadParams] | None:
    """The head's probabilities for ``text`` and its language's thresholds, or None when the head is off or
    has nothing to stand on (no stored head, no encoder): then the kNN verdict stands."""
    if not enabled():
        return None
    try:
        head = load_heads()["zh" if chinese else "en"]
        return head.predict(text), (PARAMS_ZH if chinese else PARAMS_EN)
    except (ImportError, OSError, ValueError, KeyError):
        return None

