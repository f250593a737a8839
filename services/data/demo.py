"""Demo data with no network: scikit-learn's bundled handwritten digits as an image folder.

``python -m services.data.demo OUT_DIR`` writes ``OUT_DIR/<digit>/digit_NNNN.png`` (1797 grayscale
PNGs, white ink on a black background as in the original 0..16 data), the layout a user's own
image folder would have, so the demo exercises the same path as real data.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from PIL import Image

NUM_DIGITS = 1797  # the size of load_digits; fixed by the bundled data


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.data.demo",
        description="Write scikit-learn's digits as an image folder (no network).",
    )
    parser.add_argument("out_dir", type=Path, help="folder to write <digit>/digit_NNNN.png into")
    parser.add_argument("--size", type=int, default=32, help="side of the square PNGs in pixels (default 32)")
    args = parser.parse_args(argv)
    if args.size < 8:
        parser.error("--size must be at least 8 (the digits are 8x8)")
    count = write_digits_folder(args.out_dir, size=args.size)
    print(f"{count} digit images ({args.size}x{args.size} grayscale PNG, 10 classes) in {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
