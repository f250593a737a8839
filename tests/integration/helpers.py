"""Helpers for integration tests: datasets made on the fly and job-following with a deadline."""

from __future__ import annotations

import io
import pathlib
import random
import time

import numpy as np
from PIL import Image

from cli.client import GatewayClient
from services.common.bus import TERMINAL_STATES
from traineragent.v1 import common_pb2


def digits_images(size: int = 32) -> list[tuple[int, Image.Image]]:
    """scikit-learn's bundled digits as grayscale PIL images (white ink on black), size x size."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    out = []
    for image, label in zip(digits.images, digits.target, strict=True):
        array = (image / 16.0 * 255.0).astype(np.uint8)
        out.append((int(label), Image.fromarray(array, "L").resize((size, size), Image.Resampling.BILINEAR)))
    return out


def encode(image: Image.Image, fmt: str, mode: str, size: int | None = None) -> bytes:
    if size:
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.convert(mode).save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def write_mixed_folder(root: pathlib.Path, classes: tuple[int, ...] = (0, 1, 7), per_class: int = 60,
                       seed: int = 3) -> pathlib.Path:
    """Digits of a few classes saved as PNG or JPEG, RGB or grayscale, at sizes from 16 to 72 pixels."""
    rng = random.Random(seed)
    counts = dict.fromkeys(classes, 0)
    for label, image in digits_images(32):
        if label not in counts or counts[label] >= per_class:
            continue
        counts[label] += 1
        fmt = rng.choice(["PNG", "JPEG"])
        mode = rng.choice(["RGB", "L"])
        size = rng.randint(16, 72)
        folder = root / f"digit-{label}"
        folder.mkdir(parents=True, exist_ok=True)
        suffix = ".png" if fmt == "PNG" else ".jpg"
        (folder / f"img{counts[label]:03d}{suffix}").write_bytes(encode(image, fmt, mode, size))
    return root


def follow(client: GatewayClient, job_id: str, timeout_s: float = 480,
           from_seq: int = 0) -> tuple[common_pb2.Job, list[common_pb2.JobEvent]]:
    """Watch a job (from event ``from_seq``) until it ends or waits for input; the final record and the events."""
    events: list[common_pb2.JobEvent] = []
    deadline = time.monotonic() + timeout_s
    for event in client.watch(job_id, from_seq=from_seq):
        events.append(event)
        if event.kind == common_pb2.EVENT_KIND_STATE_CHANGED and (
            event.state in TERMINAL_STATES or event.state == common_pb2.JOB_STATE_NEEDS_INPUT
        ):
            break
        assert time.monotonic() < deadline, f"job {job_id} did not end within {timeout_s}s"
    return client.get_job(job_id), events
