"""The one image preprocessing used by training, evaluation, parity checks and the endpoint.

The Data agent chooses a :class:`ImagePreprocessing` for a dataset and records it as JSON in the
dataset artifact; the training worker and the endpoint both call :func:`preprocess_images` with
it, so a client never resizes or normalises: it sends encoded bytes of any size and mode.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps

# Images whose decoded size exceeds this many pixels are refused (decompression bombs).
MAX_IMAGE_PIXELS = 64_000_000
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


class ImageDecodeError(ValueError):
    """An input that is not a decodable PNG/JPEG/... image."""


@dataclasses.dataclass(frozen=True)
class ImagePreprocessing:
    """How encoded image bytes become the model's input tensor [N, C, H, W] float32."""

    mode: str  # "L" (1 channel) or "RGB" (3 channels)
    height: int
    width: int
    mean: tuple[float, ...]  # per channel, on the 0..1 scale
    std: tuple[float, ...]
    kind: str = "image"

    @property
    def channels(self) -> int:
        return 1 if self.mode == "L" else 3

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ImagePreprocessing:
        raw = json.loads(text)
        if raw.get("kind", "image") != "image":
            raise ValueError(f"not an image preprocessing: kind={raw.get('kind')!r}")
        return cls(
            mode=raw["mode"],
            height=int(raw["height"]),
            width=int(raw["width"]),
            mean=tuple(float(v) for v in raw["mean"]),
            std=tuple(float(v) for v in raw["std"]),
        )


def decode_image(data: bytes, mode: str) -> Image.Image:
    """Decode encoded bytes into a PIL image of ``mode`` (EXIF rotation applied, alpha on white)."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as exc:  # PIL raises many types for bad input
        raise ImageDecodeError(f"cannot decode image ({len(data)} bytes): {exc}") from exc
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale to 8 bits by the image's own range, or convert() clips it to white.
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) * (255.0 / (high - low)) if high > low else np.zeros_like(array)
        image = Image.fromarray(scaled.astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert(mode)


def image_to_array(image: Image.Image, spec: ImagePreprocessing) -> np.ndarray:
    """Resize a decoded image to the spec's size and return it as uint8 [H, W, C]."""
    if image.size != (spec.width, spec.height):
        image = image.resize((spec.width, spec.height), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return array


def normalize(batch_hwc: np.ndarray, spec: ImagePreprocessing) -> np.ndarray:
    """uint8 [N, H, W, C] -> normalised float32 [N, C, H, W]."""
    x = batch_hwc.astype(np.float32) / 255.0
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def preprocess_images(images: Sequence[bytes], spec: ImagePreprocessing) -> np.ndarray:
    """Encoded images -> the model's input float32 [N, C, H, W]."""
    arrays = [image_to_array(decode_image(data, spec.mode), spec) for data in images]
    if not arrays:
        return np.zeros((0, spec.channels, spec.height, spec.width), np.float32)
    return normalize(np.stack(arrays), spec)
