"""A real RTSP camera for the tests and the benchmark: ``tests/rtsp_server.py`` (GStreamer's RTSP server, run
by the system Python) serving the shared footage as H.264, looped, optionally behind a Basic login."""

from __future__ import annotations

import select
import signal
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np

from scripts.localbroker import free_port
from tests.camera_support import MARK_MODULO, mark
from tests.support import PERSON_VIDEO, REPO_ROOT, read_frames

SYSTEM_PYTHON = "/usr/bin/python3"  # has python3-gi (Debian), which the virtualenv lacks
SERVER_SCRIPT = REPO_ROOT / "tests" / "rtsp_server.py"
STREAM_PATH = "/stream"


def write_frames(folder: Path, frames: list[np.ndarray]) -> Path:
    """The frames as frame0000.jpg, frame0001.jpg... (what the server loops over)."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(frames):
        assert cv2.imwrite(str(folder / f"frame{index:04d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return folder


def marked_footage(folder: Path, first: int = 300) -> Path:
    """32 frames of the person clip, each carrying its number (``camera_support.mark``): the loop is
    seamless modulo 32, so a test can read which frame the camera published."""
    frames = read_frames(PERSON_VIDEO, first, first + MARK_MODULO - 1)
    return write_frames(folder, [mark(image, index) for index, image in enumerate(frames)])


class RtspServer:
    """One RTSP server process on its own port; ``stop()`` and ``start()`` again keep the port, as a
    camera that loses power and comes back does."""

    def __init__(
        self,
        frames: Path,
        *,
        fps: int = 10,
        user: str = "",
        password: str = "",
        digest: bool = False,
        silent: bool = False,
    ) -> None:
        self.port = free_port()
        self._argv = [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--port", str(self.port)]
        self._argv += ["--frames", str(frames), "--fps", str(fps)]
        if user:
            self._argv += ["--user", user, "--password", password, *(["--digest"] if digest else [])]
        if silent:
            self._argv.append("--silent")
        self.log_path = frames.parent / f"rtsp-server-{self.port}.log"
        self.process: subprocess.Popen[str] | None = None

    def url(self, credentials: str = "", path: str = STREAM_PATH) -> str:
        """``credentials``: ``"user:password@"`` or empty."""
        return f"rtsp://{credentials}127.0.0.1:{self.port}{path}"

    def start(self, timeout: float = 10.0) -> RtspServer:
        with self.log_path.open("a") as log:  # a file, so the server can never block on a full pipe
            self.process = subprocess.Popen(self._argv, stdout=subprocess.PIPE, stderr=log, text=True)
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if ready else ""
        if line.strip() != "ready":
            self.stop()
            raise AssertionError(f"the RTSP server did not start: {line!r}\n{self.log_path.read_text()}")
        self.started_at = time.time()
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
