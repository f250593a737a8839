"""The model zoo: the catalogue (``zoo.yaml``, knowledge as data) and the code that builds each model.

The catalogue says what exists, for which tasks, at what cost and with which starting
hyper-parameters; the Model agent plans its search from it. The builders below are plain
``nn.Module`` definitions that output logits; softmax is added at export time, so training uses the
numerically stable cross-entropy on logits.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from collections.abc import Callable
from typing import Any

import torch
import yaml
from torch import nn

CATALOGUE_PATH = pathlib.Path(__file__).with_name("zoo.yaml")
MIN_IMAGE_SIZE = 16


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One entry of the catalogue."""

    name: str
    family: str
    task_types: tuple[str, ...]
    description: str
    relative_cost: float
    size_class: str
    default_hyperparameters: dict[str, Any]
    # What the Model agent plans with before anything is trained (measured on a 2-core CPU host; see
    # zoo.yaml): the endpoint's p95 for one request, training milliseconds per example per epoch,
    # the exported model's size, and the fewest training examples the family learns well from.
    endpoint_p95_ms: float = 0.0
    train_ms_per_example: float = 0.0
    size_mb: float = 0.0
    min_train_examples: int = 0


@functools.cache
def _catalogue(path: pathlib.Path) -> tuple[Candidate, ...]:
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    candidates = []
    for entry in raw.get("candidates", []):
        try:
            candidates.append(Candidate(
                name=str(entry["name"]),
                family=str(entry["family"]),
                task_types=tuple(str(t).lower() for t in entry["task_types"]),
                description=" ".join(str(entry.get("description", "")).split()),
                relative_cost=float(entry["relative_cost"]),
                size_class=str(entry.get("size_class", "")),
                default_hyperparameters=dict(entry.get("hyperparameters") or {}),
                endpoint_p95_ms=float(entry.get("endpoint_p95_ms", 0.0)),
                train_ms_per_example=float(entry.get("train_ms_per_example", 0.0)),
                size_mb=float(entry.get("size_mb", 0.0)),
                min_train_examples=int(entry.get("min_train_examples", 0)),
            ))
        except KeyError as exc:
            raise ValueError(f"{path}: candidate {entry.get('name', '?')!r} lacks {exc}") from exc
    return tuple(candidates)


def load_catalogue(path: pathlib.Path = CATALOGUE_PATH) -> list[Candidate]:
    """Every candidate in the catalogue, in file order (parsed once per process; copies, safe to change)."""
    return [dataclasses.replace(c, default_hyperparameters=dict(c.default_hyperparameters))
            for c in _catalogue(path)]


def candidates_for(task_type: str) -> list[Candidate]:
    """The candidates that can learn ``task_type`` (e.g. "image_classification")."""
    wanted = task_type.lower()
    return [c for c in load_catalogue() if wanted in c.task_types]


def get_candidate(name: str) -> Candidate:
    for candidate in load_catalogue():
        if candidate.name == name:
            return candidate
    known = ", ".join(c.name for c in load_catalogue())
    raise ValueError(f"unknown model {name!r}; the zoo has {known}")


# --- the models ----------------------------------------------------------------------------------


def _conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """Two conv blocks, then a 4x4 adaptive pool so the head sees where strokes are, whatever the size."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 16, dropout: float = 0.1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn_relu(in_channels, width), nn.MaxPool2d(2),
            _conv_bn_relu(width, 2 * width), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * width * 16, 4 * width),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4 * width, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class BasicBlock(nn.Module):
    """The ResNet basic block: two 3x3 convs and a shortcut (1x1 conv when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn_relu(c_in, c_out, stride)
        self.conv2 = nn.Sequential(nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class MiniResNet(nn.Module):
    """Stem at full resolution, then three stages that each halve the map; global average pooling.

    Every stage downsamples so a 32x32 input costs ~12M multiply-adds: several times cnn_small, still
    trainable on a CPU within a small budget.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 32, dropout: float = 0.0) -> None:
        super().__init__()
        self.stem = _conv_bn_relu(in_channels, width)
        self.stages = nn.Sequential(
            BasicBlock(width, width, stride=2),
            BasicBlock(width, 2 * width, stride=2),
            BasicBlock(2 * width, 4 * width, stride=2),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(4 * width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


def _small_cnn(in_channels: int, num_classes: int, hp: dict[str, Any]) -> nn.Module:
    return SmallCNN(in_channels, num_classes, width=int(hp.get("width", 16)),
                    dropout=float(hp.get("dropout", 0.1)))


def _mini_resnet(in_channels: int, num_classes: int, hp: dict[str, Any]) -> nn.Module:
    return MiniResNet(in_channels, num_classes, width=int(hp.get("width", 32)),
                      dropout=float(hp.get("dropout", 0.0)))


BUILDERS: dict[str, Callable[[int, int, dict[str, Any]], nn.Module]] = {
    "cnn_small": _small_cnn,
    "resnet_mini": _mini_resnet,
}


def build_image_model(name: str, in_channels: int, num_classes: int, height: int, width: int,
                      hp: dict[str, Any]) -> nn.Module:
    """A fresh model that maps float32 [N, in_channels, height, width] to logits [N, num_classes]."""
    if name not in BUILDERS:
        raise ValueError(f"unknown image model {name!r}; the zoo builds {', '.join(sorted(BUILDERS))}")
    if in_channels not in (1, 3):
        raise ValueError(f"image models take 1 or 3 channels, not {in_channels}")
    if min(height, width) < MIN_IMAGE_SIZE:
        raise ValueError(f"input {height}x{width} is too small; image models need at least "
                         f"{MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE}")
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, not {num_classes}")
    return BUILDERS[name](in_channels, num_classes, {**get_candidate(name).default_hyperparameters, **hp})


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
