"""A cheap motion check that decides whether a frame is worth an inference.

It compares a tiny grayscale copy of the frame with a slowly updated background. Each copy is first
histogram-equalized: a global lighting change (a lamp switched on, a cloud, the camera's auto exposure)
maps every grey level through the same increasing curve and equalization undoes any such curve, while a
person walking in changes a patch of pixels against the rest. A change over most of the frame that still
gets through (a jump so strong that it clips to white) resets the background, and the frame that caused it
is inferred: it may be lighting, but it may as well be a person stepping close to the camera and filling
most of the picture, and skipping that frame would delay the alert until a later frame moves enough.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from services.detector.const import (
    MOTION_BACKGROUND_ALPHA,
    MOTION_GLOBAL_FRACTION,
    MOTION_HEIGHT,
    MOTION_WIDTH,
)

Small = npt.NDArray[np.float32]


def normalized_small(bgr: npt.NDArray[Any]) -> Small:
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY) if bgr.ndim == 3 else bgr
    resized = cv2.resize(gray, (MOTION_WIDTH, MOTION_HEIGHT), interpolation=cv2.INTER_AREA)
    equalized = cv2.equalizeHist(resized).astype(np.float32) / 255.0
    return np.asarray(cv2.GaussianBlur(equalized, (3, 3), 0), dtype=np.float32)


class MotionGate:
    """Per camera: has the scene changed since the background, and is an inference due anyway?"""

    def __init__(self, pixel_threshold: float, area_threshold: float, force_interval_s: float) -> None:
        self._pixel_threshold = pixel_threshold
        self._area_threshold = area_threshold
        self._force_interval_s = force_interval_s
        self._background: Small | None = None
        self._last_inference = float("-inf")
        self.last_changed_fraction = 0.0

    def changed_fraction(self, bgr: npt.NDArray[Any]) -> float:
        """The fraction of the small copy that differs from the background; updates the background. A
        first frame, or a change over MOTION_GLOBAL_FRACTION or more, replaces the background."""
        small = normalized_small(bgr)
        if self._background is None or self._background.shape != small.shape:
            self._background = small
            return 1.0
        fraction = float((np.abs(small - self._background) > self._pixel_threshold).mean())
        if fraction >= MOTION_GLOBAL_FRACTION:
            self._background = small
            return fraction
        cv2.accumulateWeighted(small, self._background, MOTION_BACKGROUND_ALPHA)
        return fraction

    def should_infer(self, bgr: npt.NDArray[Any], now: float, tracking: bool) -> bool:
        """True on motion (a global change included), while something is tracked, and at least every
        ``force_interval_s``."""
        self.last_changed_fraction = self.changed_fraction(bgr)
        due = tracking or now - self._last_inference >= self._force_interval_s
        if due or self.last_changed_fraction >= self._area_threshold:
            self._last_inference = now
            return True
        return False
