"""The recorder's counters, and the ``sentrycam/recorder/stats`` message built from them."""

from __future__ import annotations

import shutil
import threading
import time

from services.common.schemas import RecorderCameraStats, RecorderStats
from services.recorder.files import Disk


class Counters:
    """One camera's counters; the network thread and the camera's thread both count, hence the lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats = RecorderCameraStats()

    def count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self._stats, name, getattr(self._stats, name) + amount)

    def set_recording(self, recording: bool) -> None:
        with self._lock:
            self._stats.recording = recording

    def snapshot(self) -> RecorderCameraStats:
        with self._lock:
            return self._stats.model_copy()


class Meter:
    """Every camera's counters and the service's own, for one stats message."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cameras: dict[str, Counters] = {}
        self.frames_bad_camera_id = 0
        self.messages_bad = 0
        self.files_deleted = 0
        self.used_bytes = 0

    def camera(self, camera: str) -> Counters:
        with self._lock:
            return self._cameras.setdefault(camera, Counters())

    def forget(self, camera: str) -> None:
        """A camera that went away: its counters start again if it comes back."""
        with self._lock:
            self._cameras.pop(camera, None)

    def message(self, disk: Disk, interval_s: float) -> RecorderStats:
        with self._lock:
            cameras = {camera: counters.snapshot() for camera, counters in self._cameras.items()}
        try:
            free = shutil.disk_usage(disk.root).free
        except OSError:
            free = 0
        return RecorderStats(
            interval_s=interval_s,
            published_at=time.time(),
            cameras=cameras,
            disk_ok=disk.error is None,
            disk_error=None if disk.error is None else disk.error[:256],
            write_errors=disk.write_errors,
            used_bytes=self.used_bytes,
            free_bytes=free,
            files_deleted=self.files_deleted,
            frames_bad_camera_id=self.frames_bad_camera_id,
            messages_bad=self.messages_bad,
        )
