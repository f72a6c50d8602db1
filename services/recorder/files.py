"""Where recordings go (``events/`` and ``continuous/`` under RECORD_DIR), which files are open, and the
disk's state as the stats report it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

EVENTS = "events"
CONTINUOUS = "continuous"


def local_time(captured_ms: int) -> time.struct_time:
    return time.localtime(captured_ms / 1000)


def clip_path(camera: str, clip_id: str, first_ms: int) -> Path:
    """``events/<camera>/<YYYY-MM-DD>/<clip_id>.mp4``, the date local, of the clip's first frame."""
    return Path(EVENTS, camera, time.strftime("%Y-%m-%d", local_time(first_ms)), f"{clip_id}.mp4")


def segment_path(root: Path, camera: str, first_ms: int) -> Path:
    """``continuous/<camera>/<YYYY-MM-DD>/<HH-MM-SS>.mp4`` (local time of the first frame); a second segment
    started within the same second (a restart) gets ``-1``, ``-2``... after the time."""
    moment = local_time(first_ms)
    folder = Path(CONTINUOUS, camera, time.strftime("%Y-%m-%d", moment))
    name = time.strftime("%H-%M-%S", moment)
    path = folder / f"{name}.mp4"
    number = 0
    while (root / path).exists():
        number += 1
        path = folder / f"{name}-{number}.mp4"
    return path


class Disk:
    """Shared by the camera threads and the retention: the open files, and the last write error."""

    def __init__(self, root: Path, on_change: Callable[[], None]) -> None:
        self.root = root
        self._on_change = on_change
        self._lock = threading.Lock()
        self._open: set[Path] = set()
        self.error: str | None = None
        self.write_errors = 0
        self.files_finished = threading.Event()  # retention looks again when set

    def opened(self, path: Path) -> None:
        with self._lock:
            self._open.add(path)

    def closed(self, path: Path) -> None:
        with self._lock:
            self._open.discard(path)
        self.files_finished.set()

    def open_files(self) -> frozenset[Path]:
        with self._lock:
            return frozenset(self._open)

    def failed(self, problem: str) -> None:
        with self._lock:
            self.write_errors += 1
            changed = self.error is None
            self.error = problem
        if changed:
            self._on_change()

    def wrote(self) -> None:
        """A file was written: a disk that had failed works again."""
        if self.error is None:
            return
        with self._lock:
            self.error = None
        self._on_change()
