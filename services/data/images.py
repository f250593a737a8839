"""Image-folder datasets: validate, clean, split, profile, choose the preprocessing, write the artifact.

The layout is ``root/<class name>/<image files>`` (nested folders inside a class are fine). Every
file is decoded in full, because a truncated image would otherwise pass a header check here and
break a training epoch later. Problems that leave nothing sensible to train on are DataErrors whose
message names the problem and what to change; problems with single files skip the file and say so
in the report's warnings.

Accounting: ``num_dropped`` counts files that were skipped (not an image, unreadable, outside the
class folders, links leaving the dataset); ``num_duplicates`` counts copies removed because their
bytes equal another file's (one copy kept when the labels agree, all removed when they conflict).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import os
import re
import statistics
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from services.common.errors import DataError, InvalidArgument
from services.common.image_dataset import write_image_dataset
from services.common.preprocessing import ImagePreprocessing, decode_image, image_to_array
from services.data.sources import is_ignored_name
from traineragent.v1 import common_pb2

FORMAT = "image_folder"
SPLITS = ("train", "validation", "test")
ACCEPTED_FORMATS = ("PNG", "JPEG", "MPO", "BMP", "GIF", "WEBP", "TIFF")
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
MIN_PER_CLASS = len(SPLITS)
MIN_SIDE, MAX_SIDE = 16, 64
STD_FLOOR = 1e-3
MAX_LISTED = 20  # warning lines listed per kind of problem; the rest are counted
MAX_FILE_BYTES = 256 * 1024 * 1024  # larger files are not dataset images; do not read them into memory
MAX_STATS_IMAGES = 20_000  # mean/std from a seeded sample of the train split beyond this

LAYOUT = "<root>/<class name>/<image files>"
_LINKS_SKIPPED = "links skipped"
Floats = tuple[float, ...]

T = TypeVar("T")
R = TypeVar("R")


@dataclasses.dataclass(frozen=True)
class _File:
    """One candidate file of a class folder."""

    path: Path
    relpath: str  # POSIX path relative to the dataset root
    label: str


@dataclasses.dataclass(frozen=True)
class _Decoded:
    """What a full decode of a file told us."""

    sha256: str
    width: int
    height: int
    mode: str
    format: str


@dataclasses.dataclass(frozen=True)
class _Example:
    file: _File
    image: _Decoded


class _Warnings:
    """Warning lines grouped by kind, each kind capped at MAX_LISTED lines plus a count of the rest."""

    def __init__(self) -> None:
        self._lines: dict[str, list[str]] = collections.defaultdict(list)
        self._counts: collections.Counter[str] = collections.Counter()

    def add(self, kind: str, line: str) -> None:
        self._counts[kind] += 1
        if len(self._lines[kind]) < MAX_LISTED:
            self._lines[kind].append(line)

    def count(self, kind: str) -> int:
        return self._counts[kind]

    def lines(self) -> list[str]:
        out: list[str] = []
        for kind, lines in self._lines.items():
            out.extend(lines)
            if self._counts[kind] > len(lines):
                out.append(f"... and {self._counts[kind] - len(lines)} more {kind}")
        return out


def prepare_image_folder(root: Path, out_parquet: Path, *, seed: int = 0, validation_fraction: float = 0.15,
                         test_fraction: float = 0.15) -> common_pb2.DataReport:
    """Turn an image folder into a dataset artifact at ``out_parquet`` and return its DataReport.

    ``dataset_artifact`` is left empty: the caller stores the file and fills it in.
    """
    started = time.monotonic()
    _check_fractions(validation_fraction, test_fraction)
    notes = _Warnings()
    files, num_stray = _scan(root, notes)
    decoded = _map(_decode_file, [file.path for file in files])
    examples, num_unreadable = _keep_readable(files, decoded, notes)
    examples, num_duplicates = _remove_duplicates(examples, notes)
    classes = natural_sorted({file.label for file in files})
    by_class = _group_by_class(examples, classes)
    _check_class_sizes(by_class, files)
    splits = _stratified_split(by_class, seed, validation_fraction, test_fraction)
    preprocessing = _choose_preprocessing(examples, splits, seed)
    _write_artifact(out_parquet, examples, splits, classes, preprocessing)
    report = _report(classes, by_class, examples, splits, preprocessing, notes)
    report.num_dropped = num_stray + num_unreadable
    report.num_duplicates = num_duplicates
    report.seconds = round(time.monotonic() - started, 3)
    return report


def natural_sorted(names: Iterable[str]) -> list[str]:
    """Names in natural order ("2" before "10", "class2" before "class10"), ties broken by the raw name."""
    return sorted(names, key=lambda name: (_natural_key(name), name))


def _natural_key(name: str) -> tuple[tuple[int, int, str], ...]:
    chunks = re.split(r"(\d+)", name)
    return tuple((0, int(chunk), "") if chunk.isdigit() else (1, 0, chunk.casefold())
                 for chunk in chunks if chunk)


def _check_fractions(validation_fraction: float, test_fraction: float) -> None:
    fractions = (validation_fraction, test_fraction)
    if not all(0 < fraction < 1 for fraction in fractions) or sum(fractions) >= 1:
        raise InvalidArgument(
            f"validation and test fractions must each be above 0 and sum below 1 "
            f"(got {validation_fraction} and {test_fraction}); use e.g. 0.15 and 0.15"
        )


# --- finding the files -----------------------------------------------------------------------------


def _scan(root: Path, notes: _Warnings) -> tuple[list[_File], int]:
    """Candidate files of every class folder, and how many stray files were skipped."""
    if not root.is_dir():
        raise DataError(f"the dataset is not a folder: give a folder laid out as {LAYOUT}")
    entries = sorted(entry for entry in root.iterdir() if not is_ignored_name(entry.name))
    class_dirs = [entry for entry in entries if entry.is_dir()]
    top_files = [entry for entry in entries if not entry.is_dir()]
    files = [file for class_dir in class_dirs for file in _class_files(root, class_dir, notes)]
    if not files and not top_files:
        raise DataError(
            "the dataset folder is empty (no files in it or in its sub-folders): "
            "put one sub-folder per class with its images in it, e.g. cats/1.jpg and dogs/2.jpg"
        )
    if not class_dirs:
        examples = ", ".join(entry.name for entry in top_files[:5])
        raise DataError(
            f"found {len(top_files)} files ({examples}) but no class sub-folders: an image dataset is "
            f"laid out as {LAYOUT}; move the images into one folder per class"
        )
    if len(class_dirs) < 2:
        raise DataError(
            f"found only one class folder ({class_dirs[0].name}): a classifier needs at least 2 classes; "
            "add a sub-folder with images for every other class"
        )
    for entry in top_files:
        notes.add("files outside the class folders skipped",
                  f"skipped {entry.name}: it is not inside a class folder ({LAYOUT})")
    return files, len(top_files) + notes.count(_LINKS_SKIPPED)


def _class_files(root: Path, class_dir: Path, notes: _Warnings) -> Iterator[_File]:
    """Files under one class folder, nested folders included, hidden files and OS junk left out."""
    real_root = root.resolve()
    label = _text(class_dir.name)
    for folder, dirnames, filenames in os.walk(class_dir):
        dirnames[:] = sorted(name for name in dirnames if not is_ignored_name(name))
        for name in sorted(filenames):
            if is_ignored_name(name):
                continue
            path = Path(folder, name)
            relpath = _text(path.relative_to(root).as_posix())
            if path.is_symlink() and not path.resolve().is_relative_to(real_root):
                notes.add(_LINKS_SKIPPED, f"skipped {relpath}: a link to a file outside the dataset folder")
                continue
            yield _File(path=path, relpath=relpath, label=label)


def _text(name: str) -> str:
    """A file name as valid UTF-8 text (names that are not UTF-8 on disk get replacement characters)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


# --- decoding and cleaning -------------------------------------------------------------------------


def _map(function: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``map`` on a few threads: Pillow's decoders and hashlib release the GIL, so threads use the cores."""
    workers = max(2, min(8, os.cpu_count() or 2))
    if len(items) < 64:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(function, items, chunksize=16))


def _decode_file(path: Path) -> _Decoded | str:
    """The file's hash and image facts after a full decode, or why it is not a usable image."""
    try:
        size = path.stat().st_size
        if size == 0:
            return "the file is empty"
        if size > MAX_FILE_BYTES:
            return f"the file is {size / 1024**2:.0f} MiB, too large for a dataset image"
        data = path.read_bytes()
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
                mode, fmt = image.mode, image.format or "unknown"
                image.load()  # the full decode: a truncated file fails here, not in a training epoch
                # As decode_image will see it: EXIF rotation can swap width and height (or fail).
                width, height = ImageOps.exif_transpose(image).size
    except UnidentifiedImageError:
        return "not a PNG/JPEG image"
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for damaged files
        return f"cannot be decoded ({exc})"
    digest = hashlib.sha256(data).hexdigest()
    return _Decoded(sha256=digest, width=width, height=height, mode=mode, format=fmt)


def _keep_readable(files: list[_File], decoded: list[_Decoded | str],
                   notes: _Warnings) -> tuple[list[_Example], int]:
    """The decodable images; a DataError when not one file is an image."""
    examples: list[_Example] = []
    skipped: list[_File] = []
    for file, result in zip(files, decoded, strict=True):
        if isinstance(result, str):
            skipped.append(file)
            notes.add("unreadable or non-image files skipped", f"skipped {file.relpath}: {result}")
        else:
            examples.append(_Example(file=file, image=result))
    if files and not examples:
        named = ", ".join(file.relpath for file in files[:5])
        raise DataError(
            f"found {len(files)} files, none is a PNG/JPEG image (or another image format we read): "
            f"e.g. {named}; put the images themselves (PNG, JPEG, BMP, GIF, WEBP, TIFF) in the class folders"
        )
    return examples, len(skipped)


def _remove_duplicates(examples: list[_Example], notes: _Warnings) -> tuple[list[_Example], int]:
    """Keep one copy of files with identical bytes; drop every copy when their labels disagree.

    A copy left in two splits would leak test data into training; a copy under two labels is a
    labelling mistake we cannot resolve.
    """
    groups: dict[str, list[_Example]] = collections.defaultdict(list)
    for example in examples:
        groups[example.image.sha256].append(example)
    kept: list[_Example] = []
    removed = 0
    for group in groups.values():
        group.sort(key=lambda example: example.file.relpath)
        labels = natural_sorted({example.file.label for example in group})
        names = ", ".join(example.file.relpath for example in group)
        if len(labels) > 1:
            removed += len(group)
            notes.add("conflicting duplicates removed",
                      f"conflicting labels: {names} are the same image under classes {', '.join(labels)}; "
                      "removed every copy (fix the labels to keep it)")
        else:
            kept.append(group[0])
            removed += len(group) - 1
            if len(group) > 1:
                notes.add("duplicates removed",
                          f"duplicate files {names} (same bytes): kept {group[0].file.relpath}")
    kept.sort(key=lambda example: example.file.relpath)
    return kept, removed


def _group_by_class(examples: list[_Example], classes: list[str]) -> dict[str, list[_Example]]:
    by_class: dict[str, list[_Example]] = {name: [] for name in classes}
    for example in examples:
        by_class[example.file.label].append(example)
    return by_class


def _check_class_sizes(by_class: dict[str, list[_Example]], files: list[_File]) -> None:
    """Every class needs one image for each split."""
    small = [(name, len(items)) for name, items in by_class.items() if len(items) < MIN_PER_CLASS]
    if not small:
        return
    files_per_class = collections.Counter(file.label for file in files)
    listed = ", ".join(_class_size_note(name, count, files_per_class[name]) for name, count in small)
    raise DataError(
        f"too few images in class{'es' if len(small) > 1 else ''} {listed}: "
        f"add at least {MIN_PER_CLASS} images per class (we need one for each of train, validation and test) "
        "or remove the folder"
    )


def _class_size_note(name: str, usable: int, files: int) -> str:
    note = f"{name} ({usable} usable image{'' if usable == 1 else 's'}"
    if files != usable:
        note += f" of {files} files; the others are unreadable or duplicates"
    return note + ")"


# --- splitting -------------------------------------------------------------------------------------


def split_counts(n: int, validation_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """(train, validation, test) sizes for a class of ``n`` >= 3 images, each at least 1."""
    validation = max(1, round(n * validation_fraction))
    test = max(1, round(n * test_fraction))
    while n - validation - test < 1:
        if validation >= test:
            validation -= 1
        else:
            test -= 1
    return n - validation - test, validation, test


def _stratified_split(by_class: dict[str, list[_Example]], seed: int, validation_fraction: float,
                      test_fraction: float) -> dict[str, str]:
    """relpath -> split, per class in the same proportions; the same seed gives the same split."""
    rng = np.random.default_rng(seed)
    splits: dict[str, str] = {}
    for items in by_class.values():
        _, validation, test = split_counts(len(items), validation_fraction, test_fraction)
        order = rng.permutation(len(items))
        for rank, index in enumerate(order):
            split = "validation" if rank < validation else "test" if rank < validation + test else "train"
            splits[items[index].file.relpath] = split
    return splits


# --- preprocessing ---------------------------------------------------------------------------------


def choose_side(sizes: Sequence[tuple[int, int]]) -> int:
    """The square input side for images of these (width, height) sizes.

    Small images (all within 64 px) keep their median shorter side, so they are not resampled for
    nothing; larger ones use the median shorter side clamped to [16, 64] and rounded to a multiple of
    4, which keeps the models small and fast. Tiny images are upscaled to 16 so convolutions and
    pooling have room.
    """
    median = statistics.median_low(min(width, height) for width, height in sizes)
    if all(max(width, height) <= MAX_SIDE for width, height in sizes):
        return max(MIN_SIDE, median)
    clamped = min(MAX_SIDE, max(MIN_SIDE, median))
    return int(clamped / 4 + 0.5) * 4  # half up: 50 -> 52


def _choose_preprocessing(examples: list[_Example], splits: dict[str, str], seed: int) -> ImagePreprocessing:
    mode = "L" if all(example.image.mode in GRAYSCALE_MODES for example in examples) else "RGB"
    side = choose_side([(example.image.width, example.image.height) for example in examples])
    shape = ImagePreprocessing(mode=mode, height=side, width=side, mean=(0.0,), std=(1.0,))
    train = [example.file.path for example in examples if splits[example.file.relpath] == "train"]
    if len(train) > MAX_STATS_IMAGES:
        picks = np.random.default_rng(seed).choice(len(train), MAX_STATS_IMAGES, replace=False)
        train = [train[index] for index in sorted(picks)]
    mean, std = _channel_stats(train, shape)
    return dataclasses.replace(shape, mean=mean, std=std)


def _channel_stats(paths: list[Path], shape: ImagePreprocessing) -> tuple[Floats, Floats]:
    """Per-channel mean and std (0..1 scale) of the images exactly as the model will see them."""

    def sums(path: Path) -> np.ndarray:
        array = image_to_array(decode_image(path.read_bytes(), shape.mode), shape)
        pixels = array.reshape(-1, shape.channels).astype(np.float64) / 255.0
        return np.stack([pixels.sum(axis=0), np.square(pixels).sum(axis=0)])

    total = np.sum(_map(sums, paths), axis=0)
    count = len(paths) * shape.height * shape.width
    mean = total[0] / count
    std = np.sqrt(np.maximum(total[1] / count - np.square(mean), 0.0))
    return (tuple(round(float(value), 6) for value in mean),
            tuple(round(float(max(value, STD_FLOOR)), 6) for value in std))


# --- output ----------------------------------------------------------------------------------------


def _write_artifact(out_parquet: Path, examples: list[_Example], splits: dict[str, str], classes: list[str],
                    preprocessing: ImagePreprocessing) -> None:
    """Rows in a stable order (split, then path), so the same folder gives the same content hash."""
    order = {name: index for index, name in enumerate(SPLITS)}
    files = sorted((example.file for example in examples),
                   key=lambda file: (order[splits[file.relpath]], file.relpath))
    rows = ((file.path.read_bytes(), file.label, splits[file.relpath], file.relpath) for file in files)
    out_parquet.parent.mkdir(parents=True, exist_ok=True)
    write_image_dataset(out_parquet, rows, classes, preprocessing)


def _report(classes: list[str], by_class: dict[str, list[_Example]], examples: list[_Example],
            splits: dict[str, str], preprocessing: ImagePreprocessing,
            notes: _Warnings) -> common_pb2.DataReport:
    sizes = collections.Counter(splits.values())
    report = common_pb2.DataReport(
        format=FORMAT,
        num_examples=len(examples),
        classes=classes,
        class_counts=[common_pb2.ClassCount(name=name, count=len(by_class[name])) for name in classes],
        split_sizes=common_pb2.SplitSizes(train=sizes["train"], validation=sizes["validation"],
                                          test=sizes["test"]),
        warnings=notes.lines(),
        preprocessing_json=preprocessing.to_json(),
    )
    report.image_profile.CopyFrom(_profile(examples))
    return report


def _profile(examples: list[_Example]) -> common_pb2.ImageProfile:
    images = [example.image for example in examples]
    profile = common_pb2.ImageProfile(
        min_width=min(image.width for image in images),
        max_width=max(image.width for image in images),
        min_height=min(image.height for image in images),
        max_height=max(image.height for image in images),
    )
    profile.modes.update(collections.Counter(image.mode for image in images))
    profile.formats.update(collections.Counter(image.format for image in images))
    return profile
