"""``WEB_RECORD_DIR``: the recorder's directory, which the relay only reads.

The relay serves a file from it only when a stored clip announcement names it, or when it is a segment of
the continuous tree (``continuous/<camera>/<YYYY-MM-DD>/<HH-MM-SS>.mp4``). Either way the path is resolved
and must still lie inside the directory: a symlink or a ``..`` cannot lead out of it.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from services.common import topics
from services.common.service import StartupError
from services.web.event_model import DAY_RE
from services.web.settings import WebSettings

CONTINUOUS = "continuous"
SEGMENT_RE = re.compile(r"([01][0-9]|2[0-3])-([0-5][0-9])-([0-5][0-9])")
# A day with one-minute segments has 1440; a directory with more is listed only this far.
MAX_SEGMENTS = 5000
# A segment modified this recently may still be growing (the recorder is writing it).
GROWING_S = 10.0


@dataclass(frozen=True)
class Segment:
    """One file of a camera's continuous recording."""

    name: str  # HH-MM-SS, the local time its first frame was captured
    hour: int
    bytes: int
    growing: bool


def open_record_dir(settings: WebSettings) -> RecordDir | None:
    """The directory, resolved once (relative to the working directory); None when playback is off."""
    given = settings.web_record_dir
    if given is None:
        return None
    root = given.resolve()
    if not root.is_dir():
        problem = "not a directory" if root.exists() else "no such directory"
        raise StartupError("WEB_RECORD_DIR", problem, given)
    try:
        with os.scandir(root):
            pass
    except OSError as error:
        raise StartupError("WEB_RECORD_DIR", f"cannot read it: {error.strerror}", given) from error
    return RecordDir(root)


class RecordDir:
    def __init__(self, root: Path) -> None:
        self.root = root  # absolute and resolved

    def file(self, relative: str) -> Path | None:
        """The regular file at ``relative`` if, once resolved, it lies inside the directory."""
        try:
            path = (self.root / relative).resolve()
        except (OSError, RuntimeError):  # a symlink loop
            return None
        if not path.is_relative_to(self.root) or not path.is_file():
            return None
        return path

    def segment(self, camera: str, day: str, name: str) -> Path | None:
        if not (
            topics.CAMERA_ID_RE.fullmatch(camera) and DAY_RE.fullmatch(day) and SEGMENT_RE.fullmatch(name)
        ):
            return None
        return self.file(f"{CONTINUOUS}/{camera}/{day}/{name}.mp4")

    def segments(self, camera: str, day: str) -> list[Segment]:
        """The day's segments of one camera, in time order (none when the day has no directory)."""
        if not (topics.CAMERA_ID_RE.fullmatch(camera) and DAY_RE.fullmatch(day)):
            return []
        found: list[Segment] = []
        recent = time.time() - GROWING_S
        try:
            with os.scandir(self.root / CONTINUOUS / camera / day) as entries:
                for entry in entries:
                    if len(found) >= MAX_SEGMENTS:
                        break
                    segment = self._segment_of(entry, recent)
                    if segment is not None:
                        found.append(segment)
        except OSError:  # no recording that day
            return []
        return sorted(found, key=lambda segment: segment.name)

    @staticmethod
    def _segment_of(entry: os.DirEntry[str], recent: float) -> Segment | None:
        name = entry.name.removesuffix(".mp4")
        match = SEGMENT_RE.fullmatch(name)
        if match is None or name == entry.name or not entry.is_file():
            return None
        stat = entry.stat()
        return Segment(name, int(match.group(1)), stat.st_size, stat.st_mtime > recent)


def recently_changed(path: Path) -> bool:
    """A segment the recorder may still be writing."""
    return path.stat().st_mtime > time.time() - GROWING_S
