"""Demo data with no network, from installed packages (docs/demo-data.md).

* ``digits``: scikit-learn's bundled handwritten digits as an image folder.
  ``python -m services.data.demo OUT_DIR`` (or ``... digits OUT_DIR``) writes
  ``OUT_DIR/<digit>/digit_NNNN.png`` (1797 grayscale PNGs, white ink on a black background as in the
  original 0..16 data), the layout a user's own image folder would have.
* ``chat-topics``: real dialogue lines of the ``chatterbot-corpus`` package (BSD-3-Clause), English
  topics with at least 100 distinct lines, as a CSV ``text,topic``.
* ``penguins``: the Palmer penguins table of the ``palmerpenguins`` package (CC0), with its
  categorical columns and missing values, as a CSV.

Each writes what a user's own data would look like, so the demos exercise the same path as real data.
"""

from __future__ import annotations

import argparse
import collections
import csv
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

NUM_DIGITS = 1797  # the size of load_digits; fixed by the bundled data
# chatterbot-corpus: topics with at least this many distinct lines (after removing lines shared by topics).
MIN_TOPIC_LINES = 100
CHAT_COLUMNS = ("text", "topic")
PENGUIN_COLUMNS = ("species", "island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g",
                   "sex", "year")
DEMO_SETS = ("digits", "chat-topics", "penguins")


def write_digits_folder(out_dir: Path, size: int = 32) -> int:
    """Write the digits as ``size`` x ``size`` PNGs, one folder per digit; return the number of files.

    Idempotent: a folder that already holds every file is left alone, and files are written through a
    temporary name so an interrupted run never leaves a half-written PNG that looks complete.
    """
    from sklearn.datasets import load_digits  # imported here: a second or so, only when demo data is made

    out_dir = Path(out_dir)
    digits = load_digits()
    targets = [out_dir / str(int(label)) / f"digit_{index:04d}.png"
               for index, label in enumerate(digits.target)]
    rewrite = not _has_size(targets[0], size)  # a folder made at another size is redone, not mixed
    if not rewrite and all(path.is_file() for path in targets):
        return len(targets)
    for image, path in zip(digits.images, targets, strict=True):
        if rewrite or not path.is_file():
            _write_png(_digit_image(image, size), path)
    return len(targets)


def _has_size(path: Path, size: int) -> bool:
    """True when ``path`` is a PNG of size x size, or does not exist yet (nothing to redo)."""
    if not path.is_file():
        return True
    try:
        with Image.open(path) as image:
            return image.size == (size, size)
    except OSError:
        return False


def _digit_image(values: np.ndarray, size: int) -> Image.Image:
    """8x8 values 0..16 -> a grayscale image of size x size (bilinear), 0 stays black."""
    array = (values / 16.0 * 255.0).astype(np.uint8)
    return Image.fromarray(array, "L").resize((size, size), Image.Resampling.BILINEAR)


def _write_png(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    image.save(partial, format="PNG")
    os.replace(partial, path)


# --- chat topics (chatterbot-corpus) ---------------------------------------------------------------


def chat_topic_lines(min_lines: int = MIN_TOPIC_LINES) -> dict[str, list[str]]:
    """topic -> its distinct English dialogue lines, for topics with at least ``min_lines`` of them.

    Lines are whitespace-normalised, and those with fewer than two letters (corpus debris such as
    single letters and punctuation) left out; a line that occurs under two topics ("What is your name?") says
    nothing about either and is left out of both. Topics are the corpus file names (``ai``, ``emotion``).
    """
    import chatterbot_corpus  # imported here: only when the demo data is made
    import yaml

    folder = Path(chatterbot_corpus.__file__).parent / "data" / "english"
    by_topic: dict[str, set[str]] = {}
    for path in sorted(folder.glob("*.yml")):
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        lines = {" ".join(line.split()) for conversation in loaded.get("conversations") or []
                 for line in conversation if isinstance(line, str) and _has_words(line)}
        by_topic[path.stem] = lines
    topics_per_line = collections.Counter(line for lines in by_topic.values() for line in lines)
    distinct = {topic: sorted(line for line in lines if topics_per_line[line] == 1)
                for topic, lines in by_topic.items()}
    return {topic: lines for topic, lines in sorted(distinct.items()) if len(lines) >= min_lines}


def _has_words(line: str) -> bool:
    """At least two letters: single characters, punctuation and bare numbers ("a", ",", "1877") are left out."""
    return sum(character.isalpha() for character in line) >= 2


def write_chat_topics_csv(out: Path) -> int:
    """Write ``text,topic`` rows (topics in name order, lines sorted) to ``out``; return the number of rows."""
    rows = [(line, topic) for topic, lines in chat_topic_lines().items() for line in lines]
    _write_csv(out, CHAT_COLUMNS, rows)
    return len(rows)


# --- penguins (palmerpenguins) -----------------------------------------------------------------------


def write_penguins_csv(out: Path) -> int:
    """Write the Palmer penguins table (344 rows, missing values as empty fields) to ``out``; return the rows."""
    import palmerpenguins  # imported here: only when the demo data is made

    frame = palmerpenguins.load_penguins()[list(PENGUIN_COLUMNS)]
    rows = [tuple("" if _missing(value) else _cell(value) for value in row)
            for row in frame.itertuples(index=False, name=None)]
    _write_csv(out, PENGUIN_COLUMNS, rows)
    return len(rows)


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _cell(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _write_csv(out: Path, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """UTF-8 CSV written through a temporary name, so a half-written file never looks complete."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    with open(partial, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(partial, out)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in DEMO_SETS and not argv[0].startswith("-"):
        argv.insert(0, "digits")  # `python -m services.data.demo OUT` keeps meaning the digits (Makefile)
    parser = argparse.ArgumentParser(
        prog="python -m services.data.demo",
        description="Write a demo dataset from installed packages (no network): digits (image folder), "
                    "chat-topics (text CSV) or penguins (table CSV).",
    )
    parser.add_argument("which", choices=DEMO_SETS, help="which demo set")
    parser.add_argument("out", type=Path,
                        help="digits: folder to write <digit>/digit_NNNN.png into; chat-topics/penguins: the CSV "
                             "file to write (a folder gets <which>.csv inside it)")
    parser.add_argument("--size", type=int, default=32, help="digits: side of the square PNGs in pixels (default 32)")
    args = parser.parse_args(argv)
    if args.which == "digits":
        if args.size < 8:
            parser.error("--size must be at least 8 (the digits are 8x8)")
        count = write_digits_folder(args.out, size=args.size)
        print(f"{count} digit images ({args.size}x{args.size} grayscale PNG, 10 classes) in {args.out}")
        return 0
    out = args.out / f"{args.which}.csv" if args.out.is_dir() or not args.out.suffix else args.out
    if args.which == "chat-topics":
        count = write_chat_topics_csv(out)
        print(f"{count} chat lines (columns text, topic; {len(chat_topic_lines())} topics) in {out}")
    else:
        count = write_penguins_csv(out)
        print(f"{count} penguins (columns {', '.join(PENGUIN_COLUMNS)}) in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
