"""The event pictures: a thumbnail of each snapshot, and snapshot files written so they appear only whole."""

from __future__ import annotations

import secrets
from pathlib import Path

import cv2
import numpy as np

from services.common.jpeg import check_snapshot
from services.web.files import write_new

THUMB_WIDTH = 320


def make_thumbnail(jpeg: bytes) -> bytes | None:
    """A small copy; BadPayload (before any decoding) for a JPEG too large to decode."""
    check_snapshot(jpeg)
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return None
    height, width = image.shape[:2]
    if width > THUMB_WIDTH:
        image = cv2.resize(
            image, (THUMB_WIDTH, max(1, height * THUMB_WIDTH // width)), interpolation=cv2.INTER_AREA
        )
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 75])
    return encoded.tobytes() if ok else None


def write_durably(directory: Path, stem: str, data: bytes) -> str:
    """Write ``data`` under a new unique name in ``directory``; the name appears only once complete."""
    name = f"{stem}.{secrets.token_hex(4)}.jpg"
    temporary = directory / f"{name}.tmp"
    write_new(temporary, data)
    temporary.rename(directory / name)
    return name
