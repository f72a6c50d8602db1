"""Clips a crash left open. While a clip is written, its last announcement is kept in
``RECORD_DIR/.open/<clip_id>.json``; at the next start each such clip is remuxed to a plain MP4 (what its
fragments hold) and announced ``done``, so the relay does not show it as recording for ever."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import av

from services.common.schemas import BadPayload, ClipInfo
from services.recorder.mp4 import remux_seekable

OPEN_DIR = ".open"


class Journal:
    """The announcements of the clips being written, one small file each."""

    def __init__(self, root: Path, logger: logging.Logger) -> None:
        self.folder = root / OPEN_DIR
        self.logger = logger

    def _file(self, clip_id: str) -> Path:
        return self.folder / f"{clip_id}.json"

    def note(self, clip: ClipInfo) -> None:
        """Keep ``clip``'s latest announcement while it is recording; forget it once done."""
        try:
            if clip.state == "done":
                self._file(clip.clip_id).unlink(missing_ok=True)
                return
            self.folder.mkdir(exist_ok=True)
            aside = self.folder / f".{clip.clip_id}.json"
            aside.write_bytes(clip.to_json())
            os.replace(aside, self._file(clip.clip_id))
        except OSError as error:  # the disk's trouble is reported by the clip's own writes
            self.logger.debug("cannot note clip %s: %s", clip.clip_id, error)

    def left_open(self) -> Iterator[ClipInfo]:
        try:
            files = sorted(self.folder.glob("*.json"))
        except OSError:
            return
        for file in files:
            try:
                yield ClipInfo.parse(file.read_bytes())
            except (OSError, BadPayload) as error:
                self.logger.warning("ignoring %s: %s", file, error)
                file.unlink(missing_ok=True)


def recover(journal: Journal, root: Path, logger: logging.Logger) -> list[ClipInfo]:
    """Finish every clip a crash left open; their ``done`` announcements."""
    finished = []
    for clip in journal.left_open():
        path = root / clip.path
        last_ms = None
        try:
            last_ms = remux_seekable(path, cut_short=True)
        except (OSError, av.FFmpegError) as error:
            logger.warning("clip %s left by a crash cannot be finished: %s", clip.path, error)
        duration = clip.duration_s if last_ms is None else last_ms / 1000
        size = path.stat().st_size if path.exists() else 0
        done = clip.model_copy(
            update={
                "state": "done",
                "duration_s": duration,
                "ended_at": clip.started_at + duration,
                "bytes": size,
            }
        )
        logger.info("clip %s left open by a crash: finished, %.1f s", clip.path, duration)
        journal.note(done)
        finished.append(done)
    return finished
