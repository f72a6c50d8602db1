"""An event as the store keeps it (its table and its row), and which events to list."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from services.common import topics
from services.common.database import add_columns, open_durable
from services.web.clips import CLIP_SCHEMA, StoredClip
from services.web.const import BUSY_TIMEOUT_MS, EVENTS_PAGE_SIZE
from services.web.files import create_private, restrict_existing

EVENT_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
# ASCII digits: \d would take any script's (a day in Arabic-Indic digits matched no event, answered 200).
DAY_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY,
    camera TEXT NOT NULL,
    label TEXT NOT NULL,
    day TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    updated_at REAL NOT NULL,
    score REAL NOT NULL,
    top_score REAL NOT NULL,
    box TEXT NOT NULL,
    zones TEXT NOT NULL,
    objects TEXT NOT NULL DEFAULT '[]',
    snapshot TEXT,
    thumbnail TEXT,
    snapshot_bytes INTEGER NOT NULL DEFAULT 0,
    closed_by_relay INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_started ON events (started_at DESC);
CREATE INDEX IF NOT EXISTS events_filters ON events (camera, label, day);
"""
# After the migrations: the open events, for closing them.
INDEXES = """
CREATE INDEX IF NOT EXISTS events_open ON events (camera, label, updated_at) WHERE ended_at IS NULL;
"""
# Columns added since the first release: (name, definition), added to an older database at start.
# An older row has no objects: it shows none until its event's next message lists them.
ADDED_COLUMNS = [("closed_by_relay", "INTEGER NOT NULL DEFAULT 0"), ("objects", "TEXT NOT NULL DEFAULT '[]'")]


def open_events(database: Path) -> sqlite3.Connection:
    """The events database, private to the relay's user, upgraded to the current table."""
    # SQLite makes its -wal and -shm files with the database's mode.
    create_private(database)
    restrict_existing(*(database.with_name(database.name + end) for end in ("-wal", "-shm")))
    db = open_durable(database, SCHEMA)
    db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_MS)}")
    db.row_factory = sqlite3.Row
    add_columns(db, "events", ADDED_COLUMNS)
    db.executescript(INDEXES + CLIP_SCHEMA)
    return db


def local_day(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%d", time.localtime(epoch_s))


def matching(pattern: re.Pattern[str], problem: str) -> Callable[[str | None], str | None]:
    def check(value: str | None) -> str | None:
        if value is not None and not pattern.fullmatch(value):
            raise ValueError(problem)
        return value

    return check


class EventFilter(BaseModel):
    """Which events to list: the timeline's filters and its paging, as the query string gives them."""

    model_config = ConfigDict(frozen=True)

    camera: Annotated[str | None, AfterValidator(matching(topics.CAMERA_ID_RE, "bad camera id"))] = None
    label: Annotated[str | None, AfterValidator(matching(topics.LABEL_RE, "bad label"))] = None
    # YYYY-MM-DD, the server's local time
    day: Annotated[str | None, AfterValidator(matching(DAY_RE, "day must be YYYY-MM-DD"))] = None
    # started_at of the last event of the previous page
    before: float | None = Field(None, allow_inf_nan=False)
    # A bigger page is cut to the page size rather than refused: links from older pages keep working.
    limit: Annotated[int, Field(ge=1), AfterValidator(lambda limit: min(limit, EVENTS_PAGE_SIZE))] = (
        EVENTS_PAGE_SIZE
    )


@dataclass(frozen=True)
class StoredObject:
    """One object the detector tracked in the event, as its latest message listed it (``TrackedObject``)."""

    id: int
    box: tuple[float, ...]
    score: float
    zones: dict[str, float]  # zone -> capture time it entered; the zones it stands in now
    stationary: bool
    seen_before: bool
    first_seen: float
    last_seen: float

    @classmethod
    def from_json(cls, stored: dict[str, Any]) -> StoredObject:
        return cls(**{**stored, "box": tuple(stored["box"]), "zones": dict(stored["zones"])})


@dataclass(frozen=True)
class StoredEvent:
    """One event as the store keeps it: the detector's start, updates and end folded into one row."""

    event_id: str
    camera: str
    label: str
    day: str  # YYYY-MM-DD of started_at, the server's local time
    started_at: float
    ended_at: float | None
    updated_at: float
    score: float
    top_score: float
    box: tuple[float, ...]
    zones: tuple[str, ...]  # every zone an object of the event has entered, in order
    objects: tuple[StoredObject, ...]
    # File names in the snapshot directory; the app shows URLs instead.
    snapshot: str | None
    thumbnail: str | None
    # The recorder's clips of this event, oldest first (attached by the store, not in the events table).
    clips: tuple[StoredClip, ...] = ()

    @property
    def has_snapshot(self) -> bool:
        return self.snapshot is not None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> StoredEvent:
        return cls(
            event_id=row["event_id"],
            camera=row["camera"],
            label=row["label"],
            day=row["day"],
            started_at=row["started_at"],
            ended_at=row["ended_at"],
            updated_at=row["updated_at"],
            score=row["score"],
            top_score=row["top_score"],
            box=tuple(json.loads(row["box"])),
            zones=tuple(json.loads(row["zones"])),
            objects=tuple(StoredObject.from_json(stored) for stored in json.loads(row["objects"])),
            snapshot=row["snapshot"],
            thumbnail=row["thumbnail"],
        )
