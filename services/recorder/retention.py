"""``Retention``: continuous segments older than RECORD_RETAIN_DAYS and clips older than
RECORD_EVENTS_RETAIN_DAYS are deleted; past RECORD_MAX_GB the oldest segments go first, then the oldest
clips. A file being written is never touched."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from services.recorder.files import CONTINUOUS, EVENTS

DAY_S = 86400
# A remux left aside by a crash (".<name>.mp4.remux"): no longer being written after this long.
STALE_ASIDE_S = 3600


@dataclass(frozen=True)
class Stored:
    path: Path
    mtime: float
    size: int
    continuous: bool


class Retention:
    def __init__(
        self,
        root: Path,
        *,
        retain_days: float,
        events_retain_days: float,
        max_bytes: int | None,
        logger: logging.Logger,
    ) -> None:
        self.root = root
        self.retain_s = retain_days * DAY_S
        self.events_retain_s = events_retain_days * DAY_S
        self.max_bytes = max_bytes
        self.logger = logger

    def run(self, open_files: frozenset[Path], now: float | None = None) -> tuple[int, int]:
        """Delete what is due; (files deleted, bytes left in RECORD_DIR)."""
        now = time.time() if now is None else now
        files = sorted(self._files(), key=lambda stored: stored.mtime)
        kept: list[Stored] = []
        deleted = 0
        for stored in files:
            limit = self.retain_s if stored.continuous else self.events_retain_s
            if stored.path not in open_files and now - stored.mtime > limit and self._delete(stored):
                deleted += 1
            else:
                kept.append(stored)
        used = sum(stored.size for stored in kept)
        if self.max_bytes is not None and used > self.max_bytes:
            # Oldest segments first, then the oldest clips (a stable sort keeps each kind in age order).
            for stored in sorted(kept, key=lambda stored: not stored.continuous):
                if used <= self.max_bytes:
                    break
                if stored.path not in open_files and self._delete(stored):
                    deleted += 1
                    used -= stored.size
        return deleted, used

    def _files(self) -> Iterator[Stored]:
        for kind in (CONTINUOUS, EVENTS):
            for folder, _dirs, names in os.walk(self.root / kind):
                for name in names:
                    path = Path(folder, name)
                    try:
                        status = path.stat()
                    except OSError:
                        continue  # deleted meanwhile
                    if name.startswith(".") and time.time() - status.st_mtime < STALE_ASIDE_S:
                        continue  # a remux being written
                    yield Stored(path, status.st_mtime, status.st_size, kind == CONTINUOUS)

    def _delete(self, stored: Stored) -> bool:
        try:
            stored.path.unlink()
        except FileNotFoundError:
            return True
        except OSError as error:
            self.logger.warning("cannot delete %s: %s", stored.path, error)
            return False
        self._remove_empty(stored.path.parent)
        return True

    def _remove_empty(self, folder: Path) -> None:
        """The date folder, and the camera's folder, once their last file is gone."""
        for directory in (folder, folder.parent):
            if directory in (self.root / CONTINUOUS, self.root / EVENTS):
                return
            try:
                directory.rmdir()
            except OSError:
                return  # not empty (or gone): done
