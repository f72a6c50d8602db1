"""The detector's figures for ``sentrycam/detector/stats``, kept per camera in the message's own shape."""

from __future__ import annotations

import numpy as np

from services.common import schemas


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    return round(float(np.percentile(values, fraction * 100)), 2)


class CameraMeter:
    """One camera's stats. The counters since the start live in a :class:`schemas.CameraStats`
    (``counts``), which the pipeline increments; :meth:`report` adds what was measured over the interval."""

    def __init__(self) -> None:
        self.counts = schemas.CameraStats()
        self._reported = schemas.CameraStats()  # the last report: rates are the counters' difference
        self._inference_ms: list[float] = []
        self._frame_age_ms: list[float] = []

    def inferred(self, inference_ms: float, frame_age_ms: float) -> None:
        self.counts.inferences += 1
        self._inference_ms.append(inference_ms)
        self._frame_age_ms.append(frame_age_ms)

    def report(self, interval_s: float, *, detecting: bool) -> schemas.CameraStats:
        """The counters, with rates and percentiles over the ``interval_s`` since the last report."""
        counts, last = self.counts, self._reported
        report = counts.model_copy(
            update={
                "detecting": detecting,
                "fps_in": round((counts.frames_in - last.frames_in) / interval_s, 2),
                "fps_inferred": round((counts.inferences - last.inferences) / interval_s, 2),
                "inference_ms_p50": percentile(self._inference_ms, 0.5),
                "inference_ms_p95": percentile(self._inference_ms, 0.95),
                "frame_age_ms_p50": percentile(self._frame_age_ms, 0.5),
                "frame_age_ms_p95": percentile(self._frame_age_ms, 0.95),
            }
        )
        self._reported = report
        self._inference_ms, self._frame_age_ms = [], []
        return report
