"""Outbox layout changes, applied in place at start without losing a pending alert."""

from __future__ import annotations

import sqlite3

from services.common.database import table_columns, transaction

# Every column of the alerts table before push channels (one row per event, all of them email).
_OLD_COLUMNS = (
    "id, event_id, camera, label, score, started_at, snapshot, status, reason, attempts, next_attempt_at,"
    " created_at, sent_at"
)
# The alerts table as it is now (outbox.SCHEMA makes it in a new file).
ALERTS_TABLE = """
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    camera TEXT NOT NULL,
    label TEXT NOT NULL,
    score REAL NOT NULL,
    started_at REAL NOT NULL,
    snapshot BLOB,
    status TEXT NOT NULL,
    reason TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    created_at REAL NOT NULL,
    sent_at REAL,
    zone TEXT,
    UNIQUE (event_id, channel)
)
"""


def add_channels(db: sqlite3.Connection) -> bool:
    """An alerts table without the channel column becomes one with it, every row on ``email`` (the only
    channel there was), pending rows keeping their attempts and due time. One transaction: a crash leaves
    the old layout, done again at the next start. True when it migrated."""
    columns = table_columns(db, "alerts")
    if not columns or "channel" in columns:
        return False
    with transaction(db):
        # SQLite cannot drop the old UNIQUE (event_id): the table is made again and the rows copied.
        db.execute("ALTER TABLE alerts RENAME TO alerts_before_channels")
        db.execute(ALERTS_TABLE)
        db.execute(
            f"INSERT INTO alerts ({_OLD_COLUMNS}, channel)"  # noqa: S608  # constants only
            f" SELECT {_OLD_COLUMNS}, 'email' FROM alerts_before_channels"
        )
        db.execute("DROP TABLE alerts_before_channels")  # its index alerts_due goes with it
    return True


# Columns of the alerts table added since push channels: (name, definition), for database.add_columns.
# An alert from before alert rules names no zone.
ADDED_COLUMNS = [("zone", "TEXT")]
