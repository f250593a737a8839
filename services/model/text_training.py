"""Training a text classifier on a text dataset artifact: fit the preprocessing, encode once, train, evaluate.

The loop is the image path's (services/model/training.py): one loop for CPU and GPU, a cosine
schedule with warm-up, early stopping on the validation split with the best weights kept, the
deadline and cancellation checked between batches, and the test split judged once at the end. The
preprocessing (hashed n-grams or a tokenizer) is fitted on the train split only and every split is
encoded through :func:`services.common.text_preprocessing.encode_texts`, the endpoint's own path.
Batches are cut to their longest text, so a batch of short tickets costs what short tickets cost.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from services.common.errors import DataError
from services.common.text_dataset import TEXT_FORMAT, TextSplits, load_text_dataset, write_text_dataset
from services.common.text_preprocessing import TextPreprocessing, encode_texts, load_tokenizer
from services.model.text_models import build_text_model, make_text_preprocessing, text_hyperparameters
from services.model.training import (
    EpochReport,
    TrainOutcome,
    classification_metrics,
    fit_epochs,
    limit_cpu_threads,
    pick_device,
)
from services.model.zoo import count_parameters

__all__ = [
    "TEXT_FORMAT", "TextSplits", "TextOutcome", "EpochReport", "load_text_dataset", "write_text_dataset",
    "train_text_classifier", "encode_split", "predict_text_logits",
]

EVAL_BATCH = 128
MIN_STEPS_PER_EPOCH = 8
PathLike = str | os.PathLike[str]


@dataclasses.dataclass
class TextOutcome(TrainOutcome):
    preprocessing: TextPreprocessing  # the encoding the bundle records
    tokenizer_path: pathlib.Path | None  # tokenizer.json for tokenizer models (in work_dir), else None
    seconds_per_epoch: float  # mean wall time of the completed epochs (training and validation)


def encode_split(texts: Sequence[str], spec: TextPreprocessing, tokenizer: Any = None) -> dict[str, torch.Tensor]:
    """A whole split through the endpoint's encoding, as tensors padded to the split's longest text."""
    return {k: torch.from_numpy(v) for k, v in encode_texts(texts, spec, tokenizer).items()}


def length_grouped_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                           pool_batches: int = 32) -> list[np.ndarray]:
    """One epoch's batches of row indices: shuffled, then sorted by length within pools of
    ``pool_batches`` batches, and the batches shuffled again.

    Every row comes once; a batch holds texts of similar length, so the padding each batch is cut
    to (:func:`_batch`) stays short and an epoch costs what the texts cost, not what the longest
    text in every random batch costs. Deterministic for the generator's state.
    """
    order = rng.permutation(len(lengths))
    pool = batch_size * pool_batches
    grouped = []
    for start in range(0, len(order), pool):
        chunk = order[start:start + pool]
        grouped.append(chunk[np.argsort(lengths[chunk], kind="stable")])
    flat = np.concatenate(grouped) if grouped else order
    batches = [flat[i:i + batch_size] for i in range(0, len(flat), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _batch(feeds: Mapping[str, torch.Tensor], idx: Any, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``idx``, cut to their own longest text (padding is on the right)."""
    ids, mask = feeds["input_ids"][idx], feeds["attention_mask"][idx]
    length = max(1, int(mask.sum(1).max().item())) if len(mask) else 1
    return (ids[:, :length].to(device, non_blocking=True), mask[:, :length].to(device, non_blocking=True))


@torch.no_grad()
def predict_text_logits(model: nn.Module, feeds: Mapping[str, torch.Tensor], batch_size: int = EVAL_BATCH) -> np.ndarray:
    """Encoded split -> logits float32 [N, C], in batches sorted by length (fast, same result)."""
    model.eval()
    device = next(model.parameters()).device.type
    n = len(feeds["input_ids"])
    order = np.argsort(feeds["attention_mask"].sum(1).numpy(), kind="stable")
    outputs: list[torch.Tensor] = []
    for i in range(0, n, batch_size):
        ids, mask = _batch(feeds, torch.from_numpy(order[i:i + batch_size]), device)
        outputs.append(model(ids, mask).float().cpu())
    if not outputs:
        return np.zeros((0, 0), np.float32)
    logits = torch.cat(outputs).numpy()
    restored = np.empty_like(logits)
    restored[order] = logits
    return restored


def _evaluate(model: nn.Module, feeds: Mapping[str, torch.Tensor], labels: np.ndarray) -> tuple[float, float]:
    logits = predict_text_logits(model, feeds)
    loss = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item()
    return float(loss), float(np.mean(logits.argmax(1) == labels))


def _split_metrics(model: nn.Module, feeds: Mapping[str, torch.Tensor], labels: np.ndarray,
                   num_classes: int) -> dict[str, float]:
    if len(labels) == 0:
        return classification_metrics(labels, labels, num_classes)
    return classification_metrics(labels, predict_text_logits(model, feeds).argmax(1), num_classes)


def _optimizer(model: nn.Module, hp: Mapping[str, Any]) -> torch.optim.Optimizer:
    """AdamW; decay on matrices only; a model with its own groups (minilm: head vs encoder) gives them."""
    lr, weight_decay = float(hp["lr"]), float(hp.get("weight_decay", 0.0))
    if hasattr(model, "parameter_groups"):
        groups = model.parameter_groups(lr, float(hp.get("head_lr", lr)), weight_decay)
    else:
        trainable = [p for p in model.parameters() if p.requires_grad]
        groups = [{"params": [p for p in trainable if p.ndim >= 2], "lr": lr, "weight_decay": weight_decay},
                  {"params": [p for p in trainable if p.ndim < 2], "lr": lr, "weight_decay": 0.0}]
        groups = [g for g in groups if g["params"]]
    for group in groups:
        group["base_lr"] = group["lr"]
    return torch.optim.AdamW(groups, lr=lr)


def train_text_classifier(
    splits: TextSplits,
    candidate: str,
    hp: dict[str, Any] | None,
    *,
    max_epochs: int,
    deadline_unix: float,
    on_epoch: Callable[[EpochReport], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    device: str | None = None,
    seed: int = 0,
    work_dir: PathLike,
) -> TextOutcome:
    """Train ``candidate`` (ngram_bag | transformer_small | minilm) on the train split; keep the best on validation.

    Stops at ``max_epochs``, when validation stops improving for ``patience`` epochs (after
    ``min_epochs``), at ``deadline_unix`` or when ``should_stop()`` is true, whichever comes first;
    the deadline and cancellation are checked between batches. A partial epoch is not kept, unless
    the deadline cut the very first one: a partly trained model beats an untrained one.
    ``work_dir`` receives tokenizer.json for tokenizer models. Deterministic for a seed on the CPU.
    """
    started = time.time()
    hp = text_hyperparameters(candidate, hp)
    device = pick_device(device)
    if device == "cpu":
        limit_cpu_threads()
    if len(splits.train_texts) == 0 or len(splits.validation_texts) == 0:
        raise DataError("training needs texts in both the train and the validation split")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    num_classes = len(splits.classes)

    spec, tokenizer_path = make_text_preprocessing(candidate, splits.train_texts, work_dir, hp)
    tokenizer = load_tokenizer(tokenizer_path, spec) if tokenizer_path is not None else None
    train = encode_split(splits.train_texts, spec, tokenizer)
    val = encode_split(splits.validation_texts, spec, tokenizer)
    train_y = torch.from_numpy(splits.train_labels.astype(np.int64))
    train_lengths = train["attention_mask"].sum(1).numpy()
    val_y = splits.validation_labels.astype(np.int64)

    model = build_text_model(candidate, num_classes, spec, hp).to(device)
    optimizer = _optimizer(model, hp)
    label_smoothing = float(hp.get("label_smoothing", 0.0))
    patience, min_epochs = int(hp.get("patience", 4)), int(hp.get("min_epochs", 1))
    n = len(train_y)
    batch_size = max(2, min(int(hp.get("batch_size", 32)), max(8, n // MIN_STEPS_PER_EPOCH), n))
    steps_per_epoch = math.ceil(n / batch_size)  # no BatchNorm here: the ragged tail trains too

    def forward(batch_idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.from_numpy(batch_idx)
        ids, mask = _batch(train, idx, device)
        return model(ids, mask), train_y[idx].to(device, non_blocking=True)

    loop = fit_epochs(model, optimizer, epoch_batches=lambda: length_grouped_batches(train_lengths, batch_size, rng),
                      forward=forward, evaluate=lambda: _evaluate(model, val, val_y),
                      steps_per_epoch=steps_per_epoch, base_lr=float(hp["lr"]), label_smoothing=label_smoothing,
                      patience=patience, min_epochs=min_epochs, max_epochs=max_epochs, deadline_unix=deadline_unix,
                      device=device, on_epoch=on_epoch, should_stop=should_stop, keep_cut_first_epoch=True)
    model = model.to("cpu").eval()
    test = encode_split(splits.test_texts, spec, tokenizer)
    return TextOutcome(
        model=model,
        epochs=loop.epochs,
        stop_reason=loop.stop_reason,
        train_seconds=time.time() - started,
        device=device,
        validation_metrics=_split_metrics(model, val, val_y, num_classes),
        test_metrics=_split_metrics(model, test, splits.test_labels.astype(np.int64), num_classes),
        num_parameters=count_parameters(model),
        best_epoch=loop.best_epoch,
        preprocessing=spec,
        tokenizer_path=tokenizer_path,
        seconds_per_epoch=float(np.mean(loop.epoch_times)) if loop.epoch_times else 0.0,
    )
