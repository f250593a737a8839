"""The one text encoding used by training, evaluation, parity checks and the endpoint.

A model bundle records a :class:`TextPreprocessing`; the training worker and the endpoint both call
:func:`encode_texts` with it, so a client sends raw strings and never tokenises. Two kinds:

- ``hashed_ngrams``: the text is normalised (Unicode NFKC, optionally lower case), split into words,
  and its word n-grams (and optionally character n-grams of each word) are hashed into
  ``[1, num_buckets)`` with a stable hash (BLAKE2b, the same in every process and on every host;
  never Python's salted ``hash()``). Id 0 is padding.
- ``tokenizer``: a Hugging Face ``tokenizers`` file (``tokenizer.json`` in the bundle) with its own
  normaliser, special tokens and vocabulary; id 0 is padding (``[PAD]``), masked out anyway.

Both give ``input_ids`` and ``attention_mask`` int64 [N, L], right-padded, L the longest text in the
batch capped at ``max_length`` (and at least 1). Only numpy and ``tokenizers`` here: the Server agent
imports this module without the training stack.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
import unicodedata
from collections.abc import Sequence
from typing import Any

import numpy as np

KINDS = ("hashed_ngrams", "tokenizer")
PAD_ID = 0
TOKENIZER_FILE = "tokenizer.json"
# Words are runs of letters/digits/underscore; each other visible character is a word of its own.
_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)

PathLike = str | os.PathLike[str]
TextLike = str | bytes


@dataclasses.dataclass(frozen=True)
class TextPreprocessing:
    """How raw strings become the model's ``input_ids`` / ``attention_mask`` int64 [N, L]."""

    kind: str  # hashed_ngrams | tokenizer
    max_length: int = 256  # ids per text (hashed: n-gram features; tokenizer: tokens incl. specials)
    lowercase: bool = True  # hashed: applied here; tokenizer: what the tokenizer's normaliser does
    ngram_range: tuple[int, int] = (1, 2)  # word n-grams (hashed only)
    char_ngram_range: tuple[int, int] = (0, 0)  # character n-grams within words; (0, 0) = none
    num_buckets: int = 0  # hashed only: ids lie in [1, num_buckets)
    tokenizer_file: str | None = None  # tokenizer only: the file's name inside the bundle
    vocab_size: int = 0  # the size of the id space the model embeds (num_buckets when hashed)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"text preprocessing kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.max_length < 1:
            raise ValueError(f"max_length must be at least 1, not {self.max_length}")
        if self.kind == "hashed_ngrams":
            low, high = self.ngram_range
            if not 1 <= low <= high:
                raise ValueError(f"ngram_range {self.ngram_range} must be (low, high) with 1 <= low <= high")
            c_low, c_high = self.char_ngram_range
            if (c_low, c_high) != (0, 0) and not 1 <= c_low <= c_high:
                raise ValueError(f"char_ngram_range {self.char_ngram_range} must be (0, 0) or 1 <= low <= high")
            if self.num_buckets < 2:
                raise ValueError(f"hashed n-grams need num_buckets >= 2, not {self.num_buckets}")
            if self.vocab_size not in (0, self.num_buckets):
                raise ValueError("for hashed n-grams vocab_size is num_buckets")
            object.__setattr__(self, "vocab_size", self.num_buckets)
        elif not self.tokenizer_file:
            raise ValueError("a tokenizer preprocessing names its tokenizer_file")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> TextPreprocessing:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TextPreprocessing:
        if raw.get("kind") not in KINDS:
            raise ValueError(f"not a text preprocessing: kind={raw.get('kind')!r}")
        return cls(
            kind=str(raw["kind"]),
            max_length=int(raw.get("max_length", 256)),
            lowercase=bool(raw.get("lowercase", True)),
            ngram_range=_pair(raw.get("ngram_range", (1, 2))),
            char_ngram_range=_pair(raw.get("char_ngram_range", (0, 0))),
            num_buckets=int(raw.get("num_buckets", 0)),
            tokenizer_file=raw.get("tokenizer_file"),
            vocab_size=int(raw.get("vocab_size", 0)),
        )


def _pair(value: Any) -> tuple[int, int]:
    low, high = value
    return int(low), int(high)


def _as_text(text: TextLike) -> str:
    # Endpoint inputs arrive as BYTES; a stray invalid byte must not fail the whole request.
    return text.decode("utf-8", errors="replace") if isinstance(text, bytes | bytearray) else str(text)


# --- hashed n-grams -------------------------------------------------------------------------------


def normalize_text(text: TextLike, lowercase: bool = True) -> str:
    """NFKC (full-width forms, ligatures, compatibility characters folded) and optionally lower case."""
    text = unicodedata.normalize("NFKC", _as_text(text))
    return text.lower() if lowercase else text


def words(text: TextLike, lowercase: bool = True) -> list[str]:
    return _WORD.findall(normalize_text(text, lowercase))


@functools.lru_cache(maxsize=1 << 18)
def _bucket(feature: str, num_buckets: int) -> int:
    digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
    return 1 + int.from_bytes(digest, "little") % (num_buckets - 1)


def ngram_features(text: TextLike, spec: TextPreprocessing) -> list[str]:
    """The text's features in reading order: at each word, its n-grams ending there, then its char n-grams.

    Reading order makes truncation at ``max_length`` keep the start of a long text with all of its
    features, rather than all unigrams of the text and none of its bigrams. The prefixes keep a
    word, a bigram and a character n-gram that spell the same apart.
    """
    tokens = words(text, spec.lowercase)
    low, high = spec.ngram_range
    c_low, c_high = spec.char_ngram_range
    features: list[str] = []
    for i, token in enumerate(tokens):
        for n in range(low, high + 1):
            if i + 1 >= n:
                features.append(f"w{n}:" + " ".join(tokens[i + 1 - n:i + 1]))
        if c_high and token.isalnum() and len(token) > 1:
            marked = f"<{token}>"
            for n in range(c_low, c_high + 1):
                features.extend("c:" + marked[j:j + n] for j in range(len(marked) - n + 1))
    return features


def hashed_ids(text: TextLike, spec: TextPreprocessing) -> list[int]:
    """One text's ids in [1, num_buckets), at most ``max_length`` of them."""
    features = ngram_features(text, spec)[:spec.max_length]
    return [_bucket(f, spec.num_buckets) for f in features]


# --- tokenizers -----------------------------------------------------------------------------------


def load_tokenizer(path: PathLike, spec: TextPreprocessing | None = None) -> Any:
    """A ``tokenizers.Tokenizer`` from a tokenizer.json, set to truncate at the spec's max_length, unpadded."""
    from tokenizers import Tokenizer  # imported here: hashed models need no tokenizers at all

    tokenizer = Tokenizer.from_file(str(path))
    if spec is not None:
        _configure(tokenizer, spec)
    return tokenizer


def _configure(tokenizer: Any, spec: TextPreprocessing) -> None:
    """Truncation the spec's way, padding ours (to the batch's longest, with PAD_ID); idempotent."""
    truncation = tokenizer.truncation
    if truncation is None or truncation.get("max_length") != spec.max_length:
        tokenizer.enable_truncation(max_length=spec.max_length)
    if tokenizer.padding is not None:
        tokenizer.no_padding()


def tokenizer_ids(texts: Sequence[TextLike], spec: TextPreprocessing, tokenizer: Any) -> list[list[int]]:
    _configure(tokenizer, spec)
    encodings = tokenizer.encode_batch([_as_text(t) for t in texts], add_special_tokens=True)
    return [list(e.ids) for e in encodings]


# --- both -----------------------------------------------------------------------------------------


def encode_texts(texts: Sequence[TextLike], spec: TextPreprocessing, tokenizer: Any = None) -> dict[str, np.ndarray]:
    """Raw strings (or UTF-8 bytes) -> {"input_ids", "attention_mask"} int64 [N, L], right-padded with 0."""
    if spec.kind == "hashed_ngrams":
        rows = [hashed_ids(t, spec) for t in texts]
    else:
        if tokenizer is None:
            raise ValueError("a tokenizer preprocessing needs the tokenizer (load_tokenizer on the bundle's "
                             f"{spec.tokenizer_file})")
        rows = tokenizer_ids(texts, spec, tokenizer)
    return pad_rows(rows, spec.max_length)


def pad_rows(rows: Sequence[Sequence[int]], max_length: int) -> dict[str, np.ndarray]:
    length = max(1, min(max_length, max((len(r) for r in rows), default=1)))
    input_ids = np.full((len(rows), length), PAD_ID, dtype=np.int64)
    attention_mask = np.zeros((len(rows), length), dtype=np.int64)
    for i, row in enumerate(rows):
        row = row[:length]
        input_ids[i, :len(row)] = row
        attention_mask[i, :len(row)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}
