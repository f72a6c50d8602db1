"""Frame sources behind one small interface.

A video file is paced at its own frame rate (it would otherwise be read as fast as it decodes). A live
source (webcam, IP camera, Pi camera) is read continuously by a thread that keeps only the newest frame, so a
slow publisher drops stale frames instead of building a backlog.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import cv2

from services.camera.const import LIVE_CLOSE_WAIT_S, LIVE_FRAME_GRACE_S
from services.camera.readers import CvReader, Image, PiCameraReader, Reader, SourceError, open_capture
from services.camera.settings import CameraSettings, SourceKind, redact

__all__ = ["Capture", "FileSource", "Image", "LiveSource", "Source", "SourceError", "make_source"]


@dataclass(frozen=True)
class Capture:
    """One captured image and when it was captured."""

    image: Image
    captured_ms: int


class Source(ABC):
    """Open, hand out frames no sooner than asked, close. Not thread-safe: one caller."""

    kind: SourceKind

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.fps: float | None = None

    @property
    def shown(self) -> str:
        return redact(self.spec)

    @abstractmethod
    def open(self) -> None:
        """Raise SourceError when the source cannot be opened."""

    @abstractmethod
    def next_frame(self, not_before: float, stop: threading.Event) -> Capture | None:
        """The first frame at or after ``not_before`` (time.monotonic); None when ``stop`` is set."""

    @abstractmethod
    def close(self) -> None: ...


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class FileSource(Source):
    """A video file played in real time at its own frame rate; frames between publishes are skipped."""

    kind: SourceKind = "file"

    def __init__(self, spec: str, loop: bool) -> None:
        super().__init__(spec)
        self._loop = loop
        self._capture: cv2.VideoCapture | None = None
        self._period = 0.1
        self._start = 0.0
        self._index = 0  # index of the next frame in the file, counted from the (re)start

    def open(self) -> None:
        self._capture = open_capture(self.spec, "file")
        fps = float(self._capture.get(cv2.CAP_PROP_FPS))
        # Some containers report no or absurd rates; 10 fps is a safe guess for camera footage.
        self.fps = fps if 0 < fps <= 240 else 10.0
        self._period = 1.0 / self.fps
        self._rewind_clock()

    def _rewind_clock(self) -> None:
        self._start = time.monotonic()
        self._index = 0

    def _frame_time(self, index: int) -> float:
        return self._start + index * self._period

    def next_frame(self, not_before: float, stop: threading.Event) -> Capture | None:
        capture = self._capture
        if capture is None:
            raise SourceError("not open")
        # Frames due well before not_before are decoded-and-dropped (grab), not converted (retrieve).
        while self._frame_time(self._index) < not_before - self._period / 2:
            self._index += 1
            if not capture.grab():
                self._end_of_file(capture)
        if stop.wait(max(0.0, self._frame_time(self._index) - time.monotonic())):
            return None
        ok, image = capture.read()
        if not ok:
            self._end_of_file(capture)
            ok, image = capture.read()
            if not ok:
                raise SourceError("cannot read the first frame after rewinding")
        self._index += 1
        return Capture(image, now_ms())

    def _end_of_file(self, capture: cv2.VideoCapture) -> None:
        if not self._loop:
            raise SourceError("end of file (set CAMERA_LOOP=true to replay it)")
        capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
        self._rewind_clock()

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


class LiveSource(Source):
    """A reader drained by a thread that keeps only the newest frame (no backlog, no stale frames)."""

    def __init__(
        self, spec: str, kind: SourceKind, make_reader: Callable[[], Reader], timeout_s: float
    ) -> None:
        super().__init__(spec)
        self.kind = kind
        self._timeout_s = timeout_s
        self._make_reader = make_reader
        self._newest: Capture | None = None
        self._count = 0
        self._taken = 0
        self._error: str | None = None
        self._changed = threading.Condition()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None

    def open(self) -> None:
        reader = self._make_reader()
        reader.open()
        self.fps = reader.fps
        self._closing = threading.Event()
        self._error = None
        self._newest = None
        self._count = self._taken = 0
        self._thread = threading.Thread(
            target=self._drain, args=(reader, self._closing), name=f"read-{self.kind}", daemon=True
        )
        self._thread.start()

    def _drain(self, reader: Reader, closing: threading.Event) -> None:
        # The reader is used and released by this thread only: OpenCV captures are not thread-safe.
        try:
            while not closing.is_set():
                image = reader.read()
                with self._changed:
                    if closing.is_set():  # closed meanwhile: the frame belongs to no one now
                        return
                    self._newest = Capture(image, now_ms())
                    self._count += 1
                    self._changed.notify_all()
        except SourceError as error:
            with self._changed:
                if not closing.is_set():
                    self._error = str(error)
                self._changed.notify_all()
        finally:
            reader.close()

    def next_frame(self, not_before: float, stop: threading.Event) -> Capture | None:
        if stop.wait(max(0.0, not_before - time.monotonic())):
            return None
        deadline = time.monotonic() + self._timeout_s + LIVE_FRAME_GRACE_S
        with self._changed:
            # A frame newer than the one handed out last; waiting in short steps to notice a stop.
            while self._count == self._taken or self._newest is None:
                if self._error is not None:
                    raise SourceError(self._error)
                if stop.is_set():
                    return None
                if time.monotonic() > deadline:
                    raise SourceError(f"no frame for {self._timeout_s + LIVE_FRAME_GRACE_S:g} s")
                self._changed.wait(0.2)
            self._taken = self._count
            return self._newest

    def close(self) -> None:
        self._closing.set()
        if self._thread is not None:
            # A read blocked on a dead stream ends at the stream timeout; the thread then releases it.
            self._thread.join(timeout=LIVE_CLOSE_WAIT_S)
            self._thread = None


def make_source(settings: CameraSettings) -> Source:
    kind = settings.kind
    spec = settings.camera_source
    if kind == "file":
        return FileSource(spec, settings.camera_loop)
    timeout_s = settings.camera_timeout
    if kind == "picamera":
        return LiveSource(spec, kind, PiCameraReader, timeout_s)
    return LiveSource(spec, kind, lambda: CvReader(spec, kind, timeout_s), timeout_s)
