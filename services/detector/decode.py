"""Decoding a frame no larger than its use needs: libjpeg scales by 1/2, 1/4 or 1/8 while decoding (it
skips most of the inverse DCT work), which costs a fraction of a full decode.

- The motion gate compares a 64x36 copy: a grey decode at 1/4, or 1/8 when that still leaves three times
  the gate's size (so the gate sees what it saw on a 768x432 camera at 1/4).
- The model takes its input size (300x300): a colour decode at the largest reduction whose picture still
  covers the input in both directions, so the resize to the input never enlarges.
- The snapshot of an event is drawn on the whole frame, decoded only when an event is published.

Every size here comes from the frame header, which the handler checked on arrival (payload_problem).
"""

from __future__ import annotations

import cv2
import numpy as np

from services.common.jpeg import jpeg_size
from services.common.schemas import BadPayload
from services.detector.const import MOTION_HEIGHT, MOTION_WIDTH
from services.detector.model import Image

# Scale denominator -> OpenCV flag, for colour and for grey.
COLOUR = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}
GREY = {4: cv2.IMREAD_REDUCED_GRAYSCALE_4, 8: cv2.IMREAD_REDUCED_GRAYSCALE_8}
# The gate's grey copy keeps at least this many times the gate's own size.
GATE_MARGIN = 3


class DecodeError(Exception):
    """The JPEG cannot be decoded (its header passed the checks, its data is broken)."""


def scaled(size: int, factor: int) -> int:
    """A side after libjpeg's scaled decode: rounded up."""
    return -(-size // factor)


def reduction(width: int, height: int, need_width: int, need_height: int, factors: tuple[int, ...]) -> int:
    """The largest factor whose reduced picture still covers need_width x need_height (else the smallest)."""
    fitting = [f for f in factors if scaled(width, f) >= need_width and scaled(height, f) >= need_height]
    return max(fitting) if fitting else min(factors)


def frame_size(payload: bytes) -> tuple[int, int]:
    try:
        return jpeg_size(payload)
    except BadPayload as error:
        raise DecodeError(str(error)) from error


def decode(payload: bytes, flag: int) -> Image:
    image = cv2.imdecode(np.frombuffer(payload, np.uint8), flag)
    if image is None or image.size == 0:
        raise DecodeError(f"cannot decode the JPEG ({len(payload)} bytes)")
    return image


def for_gate(payload: bytes) -> Image:
    """A grey copy at 1/4 or 1/8 of the frame, for the motion gate."""
    width, height = frame_size(payload)
    factor = reduction(width, height, GATE_MARGIN * MOTION_WIDTH, GATE_MARGIN * MOTION_HEIGHT, (4, 8))
    return decode(payload, GREY[factor])


def for_model(
    payload: bytes, model_width: int, model_height: int, *, reduce: bool = True
) -> tuple[Image, int]:
    """A colour picture at the largest reduction that still covers the model input, and that reduction
    (1: the whole frame, always when ``reduce`` is off: DETECTOR_REDUCED_DECODE=false)."""
    factor = 1
    if reduce:
        width, height = frame_size(payload)
        factor = reduction(width, height, model_width, model_height, tuple(COLOUR))
    return decode(payload, COLOUR[factor]), factor


def whole(payload: bytes) -> Image:
    """The whole frame in colour, for a snapshot."""
    return decode(payload, COLOUR[1])
