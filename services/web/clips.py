"""The recorder's clip announcements (``cam/<id>/clip``) in the relay's store, linked to their events.

A clip and its events arrive on different topics, in no guaranteed order: the links (``clip_events``) are
kept by event id whether or not that event is stored yet, so a clip announced first shows on its event as
soon as the event comes. The files are the recorder's: the relay stores where they are, never deletes them.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from services.common import schemas
from services.common.database import transaction

if TYPE_CHECKING:  # event_model imports this module
    from services.web.event_model import StoredEvent

# An announcement is a few hundred bytes (64 event ids make it about 5 KB): anything longer is refused
# before it is parsed.
MAX_CLIP_BYTES = 16 * 1024
# Where the recorder puts a camera's files, relative to its RECORD_DIR (agreed with the recorder).
CLIP_TREES = ("events", "continuous")

CLIP_SCHEMA = """
CREATE TABLE IF NOT EXISTS clips (
    clip_id TEXT PRIMARY KEY,
    camera TEXT NOT NULL,
    path TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    duration_s REAL NOT NULL,
    bytes INTEGER NOT NULL,
    state TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS clip_events (
    event_id TEXT NOT NULL,
    clip_id TEXT NOT NULL,
    PRIMARY KEY (event_id, clip_id)
);
CREATE INDEX IF NOT EXISTS clip_events_clip ON clip_events (clip_id);
CREATE INDEX IF NOT EXISTS clips_started ON clips (started_at);
"""

# A message of a finished clip wins over a late "recording" one (sent again after a failed write), and a
# clip id stays with the camera that announced it first.
UPSERT = """
INSERT INTO clips (clip_id, camera, path, started_at, ended_at, duration_s, bytes, state, updated_at)
VALUES (:clip_id, :camera, :path, :started_at, :ended_at, :duration_s, :bytes, :state, :updated_at)
ON CONFLICT (clip_id) DO UPDATE SET
    path = excluded.path, started_at = excluded.started_at, ended_at = excluded.ended_at,
    duration_s = excluded.duration_s, bytes = excluded.bytes, state = excluded.state,
    updated_at = excluded.updated_at
WHERE clips.camera = excluded.camera AND (clips.state = 'recording' OR excluded.state = 'done')
"""


@dataclass(frozen=True)
class StoredClip:
    clip_id: str
    camera: str
    path: str  # relative to WEB_RECORD_DIR; never shown (the pages show URLs)
    started_at: float
    ended_at: float | None
    duration_s: float
    bytes: int
    state: str  # "recording" (the file still grows) or "done"

    @property
    def recording(self) -> bool:
        return self.state == "recording"

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> StoredClip:
        return cls(*(row[name] for name in cls.__dataclass_fields__))


def parse_clip(topic: str, payload: bytes) -> schemas.ClipInfo:
    """A clip announcement as received on ``topic``; BadPayload when too long, malformed, of another camera,
    or naming a file outside that camera's trees (``events/<camera>/`` or ``continuous/<camera>/``)."""
    if len(payload) > MAX_CLIP_BYTES:
        raise schemas.BadPayload(f"clip announcement of {len(payload)} bytes (at most {MAX_CLIP_BYTES})")
    clip = schemas.ClipInfo.parse_on(topic, payload)
    parts = clip.path.split("/")
    if (
        len(parts) < 3
        or parts[0] not in CLIP_TREES
        or parts[1] != clip.camera
        or not clip.path.endswith(".mp4")
    ):
        raise schemas.BadPayload(
            f"clip path {clip.path!r} is not an .mp4 under events/ or continuous/{clip.camera}/"
        )
    return clip


class ClipStore:
    """The clips tables, on the event store's connection and under its lock."""

    def __init__(self, db: sqlite3.Connection, lock: threading.Lock) -> None:
        self._db = db
        self._lock = lock

    def record(self, clip: schemas.ClipInfo) -> list[str]:
        """Store an announcement (again if it comes twice) in one transaction; returns its event ids.
        Raises ``sqlite3.Error`` or ``OSError`` when it cannot be stored (the broker sends it again)."""
        values = clip.model_dump(include=set(StoredClip.__dataclass_fields__))
        with self._lock, transaction(self._db):
            self._db.execute(UPSERT, {**values, "updated_at": time.time()})
            # Only to a clip of this camera (an id another camera's clip has is not taken over).
            self._db.executemany(
                "INSERT OR IGNORE INTO clip_events (event_id, clip_id) "
                "SELECT ?, clip_id FROM clips WHERE clip_id = ? AND camera = ?",
                [(event_id, clip.clip_id, clip.camera) for event_id in clip.event_ids],
            )
        return list(clip.event_ids)

    def get(self, clip_id: str) -> StoredClip | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM clips WHERE clip_id = ?", (clip_id,)).fetchone()
        return StoredClip.from_row(row) if row is not None else None

    def attach(self, events: list[StoredEvent]) -> list[StoredEvent]:
        """The events with their clips."""
        clips = self.of_events([event.event_id for event in events])
        return [
            replace(event, clips=clips[event.event_id]) if event.event_id in clips else event
            for event in events
        ]

    def of_events(self, ids: list[str]) -> dict[str, tuple[StoredClip, ...]]:
        """The clips of each event (oldest first); events without a clip are left out."""
        if not ids:
            return {}
        marks = ", ".join("?" * len(ids))
        # Only question marks are formatted in.
        sql = f"SELECT clip_events.event_id AS linked, clips.* FROM clip_events JOIN clips USING (clip_id) WHERE clip_events.event_id IN ({marks}) ORDER BY clips.started_at"  # noqa: S608, E501
        found: dict[str, tuple[StoredClip, ...]] = {}
        with self._lock:
            for row in self._db.execute(sql, ids):
                found[row["linked"]] = (*found.get(row["linked"], ()), StoredClip.from_row(row))
        return found

    def forget(self, event_ids: list[str], cutoff: float) -> None:
        """Retention, under the caller's lock: the links of deleted events, the clips left with no event,
        and every clip that started before ``cutoff`` (also one whose event never came)."""
        orphaned = {
            row[0]
            for event_id in event_ids
            for row in self._db.execute("SELECT clip_id FROM clip_events WHERE event_id = ?", (event_id,))
        }
        self._db.executemany("DELETE FROM clip_events WHERE event_id = ?", [(e,) for e in event_ids])
        self._db.executemany(
            "DELETE FROM clips WHERE clip_id = ? AND NOT EXISTS "
            "(SELECT 1 FROM clip_events WHERE clip_events.clip_id = clips.clip_id)",
            [(clip_id,) for clip_id in orphaned],
        )
        self._db.execute(
            "DELETE FROM clip_events WHERE clip_id IN (SELECT clip_id FROM clips WHERE started_at < ?)",
            (cutoff,),
        )
        self._db.execute("DELETE FROM clips WHERE started_at < ?", (cutoff,))
