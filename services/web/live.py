"""The newest frame of each camera, shared by every viewer.

One MQTT subscription fills one slot per camera; viewers wait on a condition for a sequence number newer
than the one they sent last. A slow viewer therefore skips to the newest frame, never queues old ones, and
memory stays at one frame per camera however many viewers there are.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from services.common import schemas
from services.web.const import FRAME_WAIT_S

BOUNDARY = "sentrycamframe"


@dataclass(frozen=True)
class LiveFrame:
    jpeg: bytes
    seq: int  # the relay's own count per camera, so a restarted camera (seq 0 again) still moves forward
    arrived: float  # time.monotonic() when the MQTT message arrived
    arrived_at: float  # epoch seconds of the same moment
    meta: schemas.FrameMeta | None


class FrameHub:
    def __init__(self) -> None:
        self._frames: dict[str, LiveFrame] = {}
        self._changed = threading.Condition()
        self._closed = False

    def put(self, camera: str, jpeg: bytes, meta: schemas.FrameMeta | None) -> LiveFrame:
        with self._changed:
            previous = self._frames.get(camera)
            frame = LiveFrame(
                jpeg, (previous.seq + 1) if previous else 1, time.monotonic(), time.time(), meta
            )
            self._frames[camera] = frame
            self._changed.notify_all()
        return frame

    def latest(self, camera: str) -> LiveFrame | None:
        with self._changed:
            return self._frames.get(camera)

    def cameras(self) -> list[str]:
        with self._changed:
            return sorted(self._frames)

    def wait_newer(self, camera: str, after_seq: int, timeout: float) -> LiveFrame | None:
        """The newest frame with a sequence number above ``after_seq``, or None after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not self._closed:
                frame = self._frames.get(camera)
                if frame is not None and frame.seq > after_seq:
                    return frame
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._changed.wait(remaining)
        return None

    def close(self) -> None:
        """Wake every viewer so its stream ends (the server is stopping)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


def multipart_part(frame: LiveFrame) -> bytes:
    """One part of the stream; the camera's sequence number and the arrival time let a client (the
    benchmark, a debugging session) see which frames it skipped and how long each took."""
    camera_seq = frame.meta.seq if frame.meta else -1
    header = (
        f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(frame.jpeg)}\r\n"
        f"X-Frame-Seq: {camera_seq}\r\nX-Arrived-Ms: {frame.arrived_at * 1000:.1f}\r\n\r\n"
    )
    return header.encode() + frame.jpeg + b"\r\n"


def mjpeg_stream(hub: FrameHub, camera: str) -> Iterator[bytes]:
    """multipart/x-mixed-replace parts: the newest frame whenever there is a newer one."""
    seq = 0
    latest = hub.latest(camera)
    if latest is not None:
        seq = latest.seq
        yield multipart_part(latest)
    while not hub.closed:
        frame = hub.wait_newer(camera, seq, FRAME_WAIT_S)
        if frame is None:
            latest = hub.latest(camera)
            if latest is None:
                # Nothing to show yet: end the response rather than hold a thread for a viewer that may
                # be gone (only a write finds that out); the page asks again.
                return
            # Quiet camera: repeat what we have, which keeps the connection alive through proxies and
            # finds out when the viewer has left.
            yield multipart_part(latest)
            continue
        seq = frame.seq
        yield multipart_part(frame)
