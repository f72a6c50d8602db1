"""The device-specific part of a live source: a ``Reader`` makes blocking reads of the next frame (OpenCV for
webcams and IP cameras, picamera2 for the Pi camera); ``open_capture`` opens what OpenCV reads."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import cv2
import numpy as np
from cv2.typing import MatLike

from services.camera.probe import explain_stream_failure
from services.camera.settings import SourceKind

Image = MatLike


class SourceError(Exception):
    """The source failed or ended; the camera reopens it with backoff."""


def open_capture(target: str | int, kind: SourceKind, timeout_s: float = 10.0) -> cv2.VideoCapture:
    """``timeout_s`` (streams): FFmpeg's open and read timeouts, so a dead camera fails instead of hanging."""
    if kind == "stream":
        timeout_ms = round(timeout_s * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
        capture = cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
    else:
        capture = cv2.VideoCapture(target)
    if not capture.isOpened():
        capture.release()
        if kind == "stream":
            raise SourceError(explain_stream_failure(str(target), timeout_s))
        what = {"device": "the webcam", "file": "the video file"}.get(kind, kind)
        raise SourceError(f"cannot open {what} (unplugged, unreachable, or in use by another program?)")
    return capture


class Reader(ABC):
    """The device-specific part of a live source: blocking reads of the next frame."""

    fps: float | None = None

    @abstractmethod
    def open(self) -> None: ...

    @abstractmethod
    def read(self) -> Image:
        """The next frame; SourceError when the device or stream is gone."""

    @abstractmethod
    def close(self) -> None: ...


class CvReader(Reader):
    """A webcam (V4L2 index or path) or an RTSP/HTTP stream through OpenCV."""

    def __init__(self, spec: str, kind: SourceKind, timeout_s: float) -> None:
        self._target: str | int = int(spec) if spec.isdigit() else spec
        self._kind = kind
        self._timeout_s = timeout_s
        self._capture: cv2.VideoCapture | None = None
        self._frames = 0

    def open(self) -> None:
        self._capture = open_capture(self._target, self._kind, self._timeout_s)
        self._frames = 0
        fps = float(self._capture.get(cv2.CAP_PROP_FPS))
        self.fps = fps if 0 < fps <= 240 else None

    def read(self) -> Image:
        if self._capture is None:
            raise SourceError("not open")
        ok, image = self._capture.read()
        if not ok:
            if self._kind == "stream" and self._frames == 0:
                raise SourceError(f"the stream opened but sent no video within {self._timeout_s:g} s")
            raise SourceError("the source stopped delivering frames (unplugged, stream ended or dropped)")
        self._frames += 1
        return image

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


class PiCameraReader(Reader):
    """The Raspberry Pi camera module through picamera2 (imported only when used)."""

    def __init__(self) -> None:
        self._camera: Any = None

    def open(self) -> None:
        try:
            # Imported here: picamera2 exists only on a Raspberry Pi.
            from picamera2 import Picamera2  # noqa: PLC0415

            camera = Picamera2()
            # "RGB888" is stored B, G, R in memory: exactly OpenCV's order.
            camera.configure(camera.create_video_configuration(main={"format": "RGB888"}))
            camera.start()
        except Exception as error:  # picamera2 raises bare RuntimeErrors and IndexErrors for "no camera"
            raise SourceError(f"cannot start the Pi camera: {error}") from error
        self._camera = camera

    def read(self) -> Image:
        try:
            return np.ascontiguousarray(self._camera.capture_array("main"))
        except Exception as error:
            raise SourceError(f"Pi camera read failed: {error}") from error

    def close(self) -> None:
        if self._camera is not None:
            try:
                self._camera.stop()
                self._camera.close()
            finally:
                self._camera = None
