"""Training an image classifier on a dataset artifact: read, decode once, augment, train, evaluate.

One plain loop serves CPU and GPU (tensors move with ``.to(device)``; autocast only on CUDA). The
model is chosen on the validation split (early stopping keeps the best weights) and judged once on
the test split, both through :func:`services.common.preprocessing.normalize`, the same path the
endpoint uses. Augmentation imitates what the endpoint will see and the training files may not
show: other sizes (resampling), JPEG artefacts, off-centre framing and other exposure.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import pathlib
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from services.common.errors import DataError
from services.common.image_dataset import ImageSplits, load_image_dataset, write_image_dataset  # noqa: F401 - re-exported
from services.common.preprocessing import ImagePreprocessing, decode_image, image_to_array, normalize
from services.model.zoo import build_image_model, count_parameters, get_candidate

EVAL_BATCH = 256
# Fewest optimizer updates per epoch; early epochs on tiny data are otherwise mostly warm-up.
MIN_STEPS_PER_EPOCH = 8


def decode_arrays(images: Sequence[bytes], spec: ImagePreprocessing) -> np.ndarray:
    """Encoded images -> uint8 [N, H, W, C] at the spec's size, exactly as the endpoint decodes them."""
    if not images:
        return np.zeros((0, spec.height, spec.width, spec.channels), np.uint8)
    return np.stack([image_to_array(decode_image(data, spec.mode), spec) for data in images])


# --- metrics --------------------------------------------------------------------------------------


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict[str, float]:
    """Accuracy and macro precision/recall/F1 over the classes present in y_true or y_pred.

    Matches scikit-learn's macro average with its default labels (zero where a ratio is 0/0).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.size == 0:
        return {"accuracy": 0.0, "f1": 0.0, "precision": 0.0, "recall": 0.0}
    size = max(num_classes, int(y_true.max()) + 1, int(y_pred.max()) + 1)
    true_count = np.bincount(y_true, minlength=size)
    pred_count = np.bincount(y_pred, minlength=size)
    tp = np.bincount(y_true[y_true == y_pred], minlength=size)
    present = (true_count + pred_count) > 0
    tp, true_count, pred_count = tp[present], true_count[present], pred_count[present]
    precision = np.divide(tp, pred_count, out=np.zeros(tp.shape), where=pred_count > 0)
    recall = np.divide(tp, true_count, out=np.zeros(tp.shape), where=true_count > 0)
    both = true_count + pred_count
    f1 = np.divide(2 * tp, both, out=np.zeros(tp.shape), where=both > 0)
    return {
        "accuracy": float(np.mean(y_true == y_pred)),
        "f1": float(f1.mean()),
        "precision": float(precision.mean()),
        "recall": float(recall.mean()),
    }


# --- augmentation ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """How far training images are pushed towards what clients may send."""

    scale: tuple[float, float] = (0.5, 1.5)  # resample through this fraction of the input size
    aspect: float = 0.1  # extra independent jitter of the width/height scale
    jpeg_probability: float = 0.3
    jpeg_quality: tuple[int, int] = (50, 95)
    shift: int = 3  # pixels, each direction
    brightness: float = 0.1  # added, on the 0..1 scale
    contrast: float = 0.2  # multiplied around the image mean: 1 +- contrast


def augment_image(array: np.ndarray, spec: ImagePreprocessing, rng: np.random.Generator,
                  aug: Augmentation) -> np.ndarray:
    """One uint8 [H, W, C] training image as it might arrive: rescaled, maybe JPEG'd, shifted."""
    image = Image.fromarray(array[:, :, 0] if spec.channels == 1 else array, spec.mode)
    scale = rng.uniform(*aug.scale)
    size = (max(4, round(spec.width * scale * rng.uniform(1 - aug.aspect, 1 + aug.aspect))),
            max(4, round(spec.height * scale * rng.uniform(1 - aug.aspect, 1 + aug.aspect))))
    image = image.resize(size, Image.Resampling.BILINEAR)
    if rng.random() < aug.jpeg_probability:
        buffer = io.BytesIO()
        low, high = aug.jpeg_quality
        image.save(buffer, format="JPEG", quality=int(rng.integers(low, high + 1)))
        image = Image.open(buffer).convert(spec.mode)
    array = image_to_array(image, spec)  # back to the input size, the endpoint's way
    if aug.shift:
        s = aug.shift
        padded = np.pad(array, ((s, s), (s, s), (0, 0)), mode="edge")
        dy, dx = rng.integers(0, 2 * s + 1, size=2)
        array = padded[dy:dy + spec.height, dx:dx + spec.width]
    return array


def augmented_batch(arrays: np.ndarray, spec: ImagePreprocessing, rng: np.random.Generator,
                    aug: Augmentation) -> np.ndarray:
    """uint8 [N, H, W, C] -> augmented, normalised float32 [N, C, H, W] (the model's input)."""
    batch = np.stack([augment_image(a, spec, rng, aug) for a in arrays]).astype(np.float32) / 255.0
    n = len(batch)
    contrast = rng.uniform(1 - aug.contrast, 1 + aug.contrast, size=(n, 1, 1, 1)).astype(np.float32)
    brightness = rng.uniform(-aug.brightness, aug.brightness, size=(n, 1, 1, 1)).astype(np.float32)
    mean = batch.mean(axis=(1, 2, 3), keepdims=True)
    batch = np.clip((batch - mean) * contrast + mean + brightness, 0.0, 1.0)
    # normalize() takes uint8-scaled values; keep the jittered values unrounded (same formula).
    return normalize(batch * 255.0, spec)


# --- training -------------------------------------------------------------------------------------


@dataclasses.dataclass
class EpochReport:
    epoch: int
    max_epochs: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    seconds: float
    lr: float


@dataclasses.dataclass
class TrainOutcome:
    model: nn.Module  # on CPU, in eval mode, with the best validation weights
    epochs: int  # epochs completed
    stop_reason: str  # max_epochs | early_stopping | deadline | cancelled
    train_seconds: float
    device: str
    validation_metrics: dict[str, float]
    test_metrics: dict[str, float]
    num_parameters: int
    best_epoch: int


def pick_device(device: str | None = None) -> str:
    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        return "cpu"
    return device


def available_cpus() -> int:
    """CPUs this process may use: its affinity, and the cgroup quota where one is set."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = pathlib.Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return count


def limit_cpu_threads() -> None:
    """torch counts the host's cores, not a container's share; oversubscribed threads crawl.

    Only lowers the count, and only when no *_NUM_THREADS variable says what the caller wants.
    """
    if any(os.environ.get(v) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TORCH_NUM_THREADS")):
        return
    cpus = available_cpus()
    if torch.get_num_threads() > cpus:
        torch.set_num_threads(cpus)


def cosine_lr(step: int, total_steps: int, base_lr: float, warmup_steps: int,
              min_ratio: float = 0.05) -> float:
    """Linear warm-up, then cosine decay to min_ratio * base_lr at total_steps (and flat after)."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def _optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW with weight decay on conv/linear weights only (not on biases and norm parameters)."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay, "base_lr": lr},
              {"params": no_decay, "weight_decay": 0.0, "base_lr": lr}]
    return torch.optim.AdamW(groups, lr=lr)


@torch.no_grad()
def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: str) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on an already normalised split."""
    model.eval()
    loss_sum, correct = 0.0, 0
    for i in range(0, len(x), EVAL_BATCH):
        xb, yb = x[i:i + EVAL_BATCH].to(device), y[i:i + EVAL_BATCH].to(device)
        logits = model(xb).float()
        loss_sum += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += int((logits.argmax(1) == yb).sum().item())
    return loss_sum / max(1, len(x)), correct / max(1, len(x))


@torch.no_grad()
def predict_logits(model: nn.Module, x: np.ndarray, batch_size: int = EVAL_BATCH) -> np.ndarray:
    """float32 [N, C, H, W] (preprocessed) -> logits float32 [N, num_classes], in batches."""
    model.eval()
    device = next(model.parameters()).device
    outputs = [model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size])).to(device)).float().cpu()
               for i in range(0, len(x), batch_size)]
    if not outputs:
        return np.zeros((0, 0), np.float32)
    return torch.cat(outputs).numpy()


def _split_metrics(model: nn.Module, arrays: np.ndarray, labels: np.ndarray, spec: ImagePreprocessing,
                   num_classes: int) -> dict[str, float]:
    if len(arrays) == 0:
        return classification_metrics(labels, labels, num_classes)
    predictions = predict_logits(model, normalize(arrays, spec)).argmax(axis=1)
    return classification_metrics(labels, predictions, num_classes)


@dataclasses.dataclass
class LoopOutcome:
    """What :func:`fit_epochs` did: the model it was given now holds the best weights on validation."""

    epochs: int  # complete epochs
    best_epoch: int
    stop_reason: str  # max_epochs | early_stopping | deadline | cancelled
    epoch_times: list[float]


def fit_epochs(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    epoch_batches: Callable[[], Iterable[Any]],
    forward: Callable[[Any], tuple[torch.Tensor, torch.Tensor]],
    evaluate: Callable[[], tuple[float, float]],
    steps_per_epoch: int,
    base_lr: float,
    label_smoothing: float,
    patience: int,
    min_epochs: int,
    max_epochs: int,
    deadline_unix: float,
    device: str,
    on_epoch: Callable[[EpochReport], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    keep_cut_first_epoch: bool = False,
) -> LoopOutcome:
    """The training loop every torch model shares: cosine schedule with warm-up, bf16 autocast on CUDA,
    early stopping on (validation accuracy, -validation loss), the best epoch's weights kept.

    ``epoch_batches()`` gives one epoch's batches; ``forward(batch)`` returns (logits, labels) on the
    device; ``evaluate()`` returns (validation loss, validation accuracy). Each optimizer group's
    ``base_lr`` is scaled by the schedule (``base_lr`` here is the figure reported per epoch). Stops at
    ``max_epochs``, after ``patience`` epochs without improvement (once ``min_epochs`` are done), at
    ``deadline_unix`` or when ``should_stop()`` is true; those two are checked between batches. A
    partial epoch is not evaluated, except with ``keep_cut_first_epoch`` when the deadline cut the very
    first one (a partly trained model beats an untrained one).
    """

    def stop_now() -> str | None:
        if should_stop is not None and should_stop():
            return "cancelled"
        if time.time() >= deadline_unix:
            return "deadline"
        return None

    warmup_steps = min(steps_per_epoch, 50)
    planned_epochs = max(1, max_epochs)
    autocast = device.startswith("cuda") and torch.cuda.is_bf16_supported()
    best_state: dict[str, torch.Tensor] | None = None
    best_key = (-1.0, -math.inf)  # (val accuracy, -val loss): higher is better
    best_epoch, bad_epochs, epochs_done, step, lr = 0, 0, 0, 0, base_lr
    epoch_times: list[float] = []
    stop_reason = "max_epochs"
    for epoch in range(1, max_epochs + 1):
        stop_reason = stop_now() or ""
        if stop_reason:
            break
        epoch_start = time.time()
        model.train()
        loss_sum, batches = 0.0, 0
        for b, batch in enumerate(epoch_batches()):
            if b > 0 and (stop_reason := stop_now() or ""):  # an epoch can be long on big data
                break
            scale = cosine_lr(step, planned_epochs * steps_per_epoch, 1.0, warmup_steps)
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * scale
            lr = base_lr * scale
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                logits, y = forward(batch)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item()
            batches += 1
            step += 1
        if stop_reason and not (keep_cut_first_epoch and best_state is None and batches > 0
                                and stop_reason == "deadline"):
            break  # a partial epoch is not evaluated; the best complete one is kept

        val_loss, val_accuracy = evaluate()
        epochs_done = epoch if not stop_reason else epochs_done
        epoch_times.append(time.time() - epoch_start)
        if (val_accuracy, -val_loss) > best_key:
            best_key, best_epoch, bad_epochs = (val_accuracy, -val_loss), epoch, 0
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
        if on_epoch is not None:
            on_epoch(EpochReport(epoch=epoch, max_epochs=max_epochs, train_loss=loss_sum / max(1, batches),
                                 val_loss=val_loss, val_accuracy=val_accuracy, seconds=epoch_times[-1], lr=lr))
        if stop_reason:
            break  # the deadline cut the first epoch; its partial model was kept above
        if bad_epochs >= patience and epoch >= min_epochs:
            stop_reason = "early_stopping"
            break
        planned_epochs = affordable_epochs(epoch, max_epochs, epoch_times, deadline_unix)
    else:
        stop_reason = "max_epochs"
    if best_state is not None:
        model.load_state_dict(best_state)
    return LoopOutcome(epochs=epochs_done, best_epoch=best_epoch, stop_reason=stop_reason, epoch_times=epoch_times)


def train_image_classifier(
    splits: ImageSplits,
    candidate_name: str,
    hp: dict[str, Any],
    *,
    max_epochs: int,
    deadline_unix: float,
    on_epoch: Callable[[EpochReport], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    device: str | None = None,
    seed: int = 0,
) -> TrainOutcome:
    """Train ``candidate_name`` on the train split; keep the weights best on validation.

    Stops at ``max_epochs``, when validation stops improving for ``patience`` epochs, at
    ``deadline_unix`` or when ``should_stop()`` is true, whichever comes first; the deadline and
    cancellation are checked between batches too. Deterministic for a seed on the CPU.
    """
    started = time.time()
    hp = {**get_candidate(candidate_name).default_hyperparameters, **(hp or {})}
    device = pick_device(device)
    if device == "cpu":
        limit_cpu_threads()
    if len(splits.train_images) == 0 or len(splits.validation_images) == 0:
        raise DataError("training needs images in both the train and the validation split")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    spec, num_classes = splits.spec, len(splits.classes)

    # Decode once; every epoch augments from these arrays.
    train_arrays = decode_arrays(splits.train_images, spec)
    train_y = torch.from_numpy(splits.train_labels.astype(np.int64))
    val_arrays = decode_arrays(splits.validation_images, spec)
    val_x = torch.from_numpy(normalize(val_arrays, spec))
    val_y = torch.from_numpy(splits.validation_labels.astype(np.int64))

    model = build_image_model(candidate_name, spec.channels, num_classes, spec.height, spec.width, hp)
    model = model.to(device)
    base_lr = float(hp.get("lr", 3e-3))
    optimizer = _optimizer(model, base_lr, float(hp.get("weight_decay", 5e-4)))
    label_smoothing = float(hp.get("label_smoothing", 0.05))
    patience = int(hp.get("patience", 6))
    aug = Augmentation() if hp.get("augment", True) else Augmentation(
        scale=(1.0, 1.0), aspect=0.0, jpeg_probability=0.0, shift=0, brightness=0.0, contrast=0.0)
    n = len(train_arrays)
    # Small datasets get smaller batches so that an epoch still has MIN_STEPS_PER_EPOCH updates.
    batch_size = max(2, min(int(hp.get("batch_size", 64)), max(8, n // MIN_STEPS_PER_EPOCH), n))
    steps_per_epoch = max(1, n // batch_size)  # drop the ragged tail: no size-1 batches for BatchNorm
    min_epochs = int(hp.get("min_epochs", 8))

    def epoch_batches() -> Iterable[np.ndarray]:
        order = rng.permutation(n)
        return (order[b * batch_size:(b + 1) * batch_size] for b in range(steps_per_epoch))

    def forward(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(augmented_batch(train_arrays[idx], spec, rng, aug)).to(device, non_blocking=True)
        return model(x), train_y[idx].to(device, non_blocking=True)

    loop = fit_epochs(model, optimizer, epoch_batches=epoch_batches, forward=forward,
                      evaluate=lambda: _evaluate(model, val_x, val_y, device), steps_per_epoch=steps_per_epoch,
                      base_lr=base_lr, label_smoothing=label_smoothing, patience=patience, min_epochs=min_epochs,
                      max_epochs=max_epochs, deadline_unix=deadline_unix, device=device, on_epoch=on_epoch,
                      should_stop=should_stop)
    model = model.to("cpu").eval()
    test_arrays = decode_arrays(splits.test_images, spec)
    return TrainOutcome(
        model=model,
        epochs=loop.epochs,
        stop_reason=loop.stop_reason,
        train_seconds=time.time() - started,
        device=device,
        validation_metrics=_split_metrics(model, val_arrays, splits.validation_labels, spec, num_classes),
        test_metrics=_split_metrics(model, test_arrays, splits.test_labels, spec, num_classes),
        num_parameters=count_parameters(model),
        best_epoch=loop.best_epoch,
    )


def affordable_epochs(done: int, max_epochs: int, epoch_times: list[float], deadline_unix: float) -> int:
    """How many epochs the schedule should plan for, so the learning rate anneals before the deadline."""
    recent = epoch_times[1:] or epoch_times  # the first epoch pays for warm-up work
    per_epoch = max(1e-3, sum(recent) / len(recent))
    remaining = max(0.0, deadline_unix - time.time())
    return max(done + 1, min(max_epochs, done + int(remaining / per_epoch)))
