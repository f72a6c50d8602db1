"""``Recording``: one file being written (an event clip or a continuous segment) and its announcements."""

from __future__ import annotations

from pathlib import Path

import av

from services.common.schemas import ClipInfo
from services.recorder.files import Disk
from services.recorder.mp4 import ClipWriter
from services.recorder.ring import Frame

# What a failing disk raises: the OS's errors, and FFmpeg's own (its I/O errors carry an errno too).
WRITE_ERRORS: tuple[type[Exception], ...] = (OSError, av.FFmpegError)


class Recording:
    """An MP4 under ``disk.root`` at ``relative``, sized by its first frame. Raises WRITE_ERRORS."""

    def __init__(self, disk: Disk, relative: Path, first: Frame) -> None:
        self.disk = disk
        self.relative = relative
        self.path = disk.root / relative
        disk.opened(self.path)
        try:
            self.writer = ClipWriter.open(self.path, first.width, first.height)
        except BaseException:
            disk.closed(self.path)
            raise
        self.event_ids: list[str] = []

    @property
    def size(self) -> tuple[int, int]:
        return self.writer.width, self.writer.height

    @property
    def last_ms(self) -> int | None:
        return self.writer.last_ms

    def add(self, frame: Frame) -> None:
        """Raises FrameRefused (a bad frame) or WRITE_ERRORS (the disk)."""
        self.writer.add(frame.jpeg, frame.captured_ms)

    def finish(self) -> None:
        """Close the file (seekable from now on); raises WRITE_ERRORS, and the file is closed then too."""
        try:
            self.writer.close()
        except WRITE_ERRORS:
            self.writer.abandon()
            raise
        finally:
            self.disk.closed(self.path)

    def abandon(self) -> None:
        """Close what can be closed after a write error; the file keeps its fragments so far."""
        try:
            self.writer.abandon()
        except WRITE_ERRORS:
            pass
        finally:
            self.disk.closed(self.path)

    def bytes_on_disk(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def info(self, camera: str, clip_id: str, state: str) -> ClipInfo:
        writer = self.writer
        first = writer.first_ms or 0
        return ClipInfo.model_validate(
            {
                "camera": camera,
                "clip_id": clip_id,
                "event_ids": self.event_ids[-64:],
                "path": self.relative.as_posix(),
                "started_at": first / 1000,
                "ended_at": None if writer.last_ms is None else writer.last_ms / 1000,
                "duration_s": writer.duration_s,
                "bytes": self.bytes_on_disk(),
                "state": state,
            }
        )
