"""Helpers for the camera tests: settings, short clips cut from the real footage, an MJPEG IP camera."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np

from scripts.localbroker import LocalBroker
from services.common.schemas import CameraInfo, FrameMeta
from tests.support import PERSON_VIDEO, Received


def camera_settings(
    broker: LocalBroker, camera_id: str, source: Path | str = PERSON_VIDEO, **extra: str
) -> dict[str, str]:
    """A camera's environment: its own broker login, the person video unless told otherwise."""
    return {
        **broker.camera_env(camera_id),
        "CAMERA_ID": camera_id,
        "CAMERA_SOURCE": str(source),
        "LOG_LEVEL": "DEBUG",
        **extra,
    }


def meta(message: Received) -> FrameMeta:
    found = FrameMeta.from_properties(message.properties)
    assert found is not None, "frame without metadata"
    return found


def info_is(state: str) -> Callable[[Received], bool]:
    return lambda message: CameraInfo.parse(message.payload).state == state


def rate(frames: list[Received]) -> float:
    """Frames per second over the capture times of the frames given."""
    first, last = meta(frames[0]).captured_ms, meta(frames[-1]).captured_ms
    return (len(frames) - 1) / ((last - first) / 1000)


def decode(message: Received) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(message.payload, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a decodable JPEG"
    return image


MARK_BITS = 5
MARK_MODULO = 2**MARK_BITS
MARK_SIZE = 1 / 16  # of the width, per square


def mark(image: np.ndarray, number: int) -> np.ndarray:
    marked = image.copy()
    side = int(image.shape[1] * MARK_SIZE)
    for bit in range(MARK_BITS):
        marked[:side, bit * side : (bit + 1) * side] = 255 if number >> bit & 1 else 0
    return marked


def read_mark(image: np.ndarray) -> int:
    """The number ``mark`` wrote, read back at whatever size the camera resized the frame to."""
    side = int(image.shape[1] * MARK_SIZE)
    inner = slice(side // 4, side * 3 // 4)
    return sum(
        1 << bit
        for bit in range(MARK_BITS)
        if image[inner, bit * side : (bit + 1) * side][:, inner].mean() > 128
    )


class MjpegCamera:
    """An IP camera as many sell it: multipart JPEG over HTTP at a fixed rate, served from real footage.

    ``stop()`` drops every connection, as a camera that loses power does; ``start()`` brings it back on the
    same port. Each frame carries its number (mod 32) as five black or white squares along the top edge, so
    a test can tell which frame the camera published and how far behind the stream it was."""

    def __init__(self, frames: list[np.ndarray], fps: float) -> None:
        self._frames = frames
        self._period = 1.0 / fps
        self._server: ThreadingHTTPServer | None = None
        self._running = threading.Event()
        self.port = 0
        self.served = 0
        self.sent_at: list[float] = []  # when frame number n went out

    def url(self, credentials: str = "") -> str:
        return f"http://{credentials}127.0.0.1:{self.port}/video.mjpg"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                for image in camera._endless():
                    if not camera._running.is_set():
                        return
                    jpeg = cv2.imencode(".jpg", mark(image, camera.served % MARK_MODULO))[1].tobytes()
                    try:
                        self.wfile.write(
                            b"--frame\r\nContent-Type: image/jpeg\r\n"
                            + f"Content-Length: {len(jpeg)}\r\n\r\n".encode()
                            + jpeg
                            + b"\r\n"
                        )
                        self.wfile.flush()
                    except OSError:
                        return
                    camera.sent_at.append(time.time())
                    camera.served += 1
                    time.sleep(camera._period)

            def log_message(self, *_args: object) -> None:
                pass

        return Handler

    def _endless(self) -> Iterator[np.ndarray]:
        while True:
            yield from self._frames

    def lag(self, image: np.ndarray, arrived: float) -> int:
        """How many frames the stream had sent, when ``image`` arrived, after the one it shows."""
        latest = sum(1 for sent in self.sent_at if sent <= arrived) - 1
        return int((latest - read_mark(image)) % MARK_MODULO)

    def start(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._running.set()
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._running.clear()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
