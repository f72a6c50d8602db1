"""The durable outbox: every alert is a row in SQLite before any email is tried.

A row is one alert on one channel (``email``, or a push channel's key ``push-<hash of its URL>``: never
the URL, which holds secrets). It is ``pending`` until the channel has accepted the alert (then ``sent``) or
it is older than NOTIFY_MAX_AGE (then ``expired``), each row with its own attempts and backoff. Events that
are recorded but not alerted (cooldown, quiet hours, disarmed, no channel) are ``suppressed`` with the
reason. (event id, channel) is unique and an event's rows are written in one transaction, so an event the
broker delivers twice (QoS 1 after a crash) is recorded, and alerted, once per channel. The event's snapshot
is stored once for all its channels, and dropped when the last of them has sent it or given up.

The same database keeps the arming state and its history: each change with the time it took effect, so
that an event is judged by the state in force when it was detected (docs/notifier.md, "Arming").
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from services.common.acks import Redeliver
from services.common.database import STORE_ERRORS, add_columns, open_durable, transaction
from services.common.service import StartupError
from services.notifier import migrate
from services.notifier.const import (
    ARMING_HISTORY_MAX_CHANGES,
    DATA_DIR_MODE,
    DATA_FILE_MODE,
    OUTBOX_BUSY_TIMEOUT_S,
    OUTBOX_FILE,
)

Status = Literal["pending", "sent", "expired", "suppressed"]
# The channel of a suppressed event's one row when no channel is set up.
NO_CHANNEL = "none"
# Rows this old are deleted at start, so the outbox does not grow for ever.
KEEP_S = 30 * 24 * 3600

SCHEMA = (
    migrate.ALERTS_TABLE
    + """;
CREATE INDEX IF NOT EXISTS alerts_due ON alerts (channel, status, next_attempt_at);
-- An event's snapshot, once for all its channels, while one of them still has to send it.
CREATE TABLE IF NOT EXISTS snapshots (event_id TEXT PRIMARY KEY, jpeg BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS arming (id INTEGER PRIMARY KEY, at REAL NOT NULL, armed INTEGER NOT NULL);
"""
)


@dataclass(frozen=True)
class Alert:
    id: int
    event_id: str
    camera: str
    label: str
    score: float
    started_at: float
    snapshot: bytes | None
    attempts: int
    reason: str | None
    channel: str
    zone: str | None = None  # the zone its object was in (NOTIFY_RULES), named in the text


class Outbox:
    """One SQLite file shared by the MQTT thread (writes alerts) and the sender thread (sends them)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        # Durable: a committed row survives a crash or power cut, which the exactly-once promise needs.
        self._db = open_durable(path, "")
        migrate.add_channels(self._db)  # an outbox from before push channels: its rows are email's
        add_columns(self._db, "alerts", migrate.ADDED_COLUMNS)
        self._db.executescript(SCHEMA)
        self._db.execute(f"PRAGMA busy_timeout = {round(OUTBOX_BUSY_TIMEOUT_S * 1000)}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def record(
        self,
        *,
        event_id: str,
        camera: str,
        label: str,
        score: float,
        started_at: float,
        snapshot: bytes | None,
        status: Status,
        reason: str | None,
        channels: list[str],
        now: float,
        zone: str | None = None,
    ) -> bool:
        """Store an alert, one row per channel in one transaction (all or none); False when this event id is
        already stored (a redelivered event)."""
        rows = [
            (event_id, channel, camera, label, score, started_at, status, reason, now, now, zone)
            for channel in channels or [NO_CHANNEL]
        ]
        with self._lock, transaction(self._db):
            known = self._db.execute("SELECT 1 FROM alerts WHERE event_id = ?", (event_id,)).fetchone()
            if known is None:
                self._db.executemany(
                    "INSERT INTO alerts (event_id, channel, camera, label, score, started_at, status, reason,"
                    " next_attempt_at, created_at, zone) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                # Once for all channels; a suppressed alert will never be sent: no need to keep it.
                if snapshot is not None and status == "pending":
                    self._db.execute("INSERT INTO snapshots VALUES (?, ?)", (event_id, snapshot))
        return known is None

    def due(self, channel: str, now: float) -> list[Alert]:
        with self._lock:
            rows = self._db.execute(
                # An outbox from before the snapshots table has them in its rows.
                "SELECT id, event_id, camera, label, score, started_at, COALESCE(snapshot, jpeg), attempts,"
                " reason, channel, zone FROM alerts LEFT JOIN snapshots USING (event_id)"
                " WHERE channel = ? AND status = 'pending' AND next_attempt_at <= ?"
                " ORDER BY next_attempt_at, id",
                (channel, now),
            ).fetchall()
        return [Alert(*row) for row in rows]

    def next_attempt_at(self, channel: str) -> float | None:
        with self._lock:
            row = self._db.execute(
                "SELECT MIN(next_attempt_at) FROM alerts WHERE channel = ? AND status = 'pending'", (channel,)
            ).fetchone()
        return None if row[0] is None else float(row[0])

    def mark_sent(self, alert_id: int, now: float) -> None:
        self._settle(
            alert_id,
            "UPDATE alerts SET status = 'sent', sent_at = ?, attempts = attempts + 1, snapshot = NULL"
            " WHERE id = ?",
            (now, alert_id),
        )

    def retry_later(self, alert_id: int, next_attempt_at: float, error: str) -> None:
        self._update(
            "UPDATE alerts SET attempts = attempts + 1, next_attempt_at = ?, reason = ? WHERE id = ?",
            (next_attempt_at, error, alert_id),
        )

    def give_up(self, alert_id: int, reason: str) -> None:
        self._settle(
            alert_id,
            "UPDATE alerts SET status = 'expired', reason = ?, snapshot = NULL WHERE id = ?",
            (reason, alert_id),
        )

    def expire_channels_except(self, channels: list[str], reason: str) -> int:
        """Pending push alerts of channels no longer set up (a URL removed) are given up; email's stay for a
        run with email, as they always did."""
        marks = ", ".join("?" * len(channels))
        with self._lock, transaction(self._db):
            expired = self._db.execute(
                "UPDATE alerts SET status = 'expired', reason = ?, snapshot = NULL WHERE status = 'pending'"  # noqa: S608
                f" AND channel LIKE 'push-%' AND channel NOT IN ({marks})",  # only ? marks
                (reason, *channels),
            ).rowcount
            self._forget_sent_snapshots()
            return expired

    def last_alert_times(self) -> dict[str, float]:
        """Per camera, when its latest alerted (or to-be-alerted) event started: seeds the cooldown."""
        with self._lock:
            rows = self._db.execute(
                "SELECT camera, MAX(started_at) FROM alerts WHERE status != 'suppressed' GROUP BY camera"
            ).fetchall()
        return {camera: float(started) for camera, started in rows}

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) FROM alerts GROUP BY status").fetchall()
        return {status: int(count) for status, count in rows}

    def channel_figures(self) -> dict[str, tuple[int, int, int, float | None, str | None]]:
        """Per channel: pending, expired and sent rows, the last send, and the error of the newest alert that
        failed (still retried, or given up); for the notifier's stats."""
        with self._lock:
            rows = self._db.execute(
                "SELECT channel, SUM(status = 'pending'), SUM(status = 'expired'), SUM(status = 'sent'),"
                " MAX(sent_at), (SELECT reason FROM alerts AS failed WHERE failed.channel = alerts.channel"
                " AND (status = 'expired' OR (status = 'pending' AND attempts > 0)) ORDER BY id DESC LIMIT 1)"
                " FROM alerts GROUP BY channel"
            ).fetchall()
        return {row[0]: (int(row[1]), int(row[2]), int(row[3]), row[4], row[5]) for row in rows}

    def prune(self, now: float) -> int:
        with self._lock, transaction(self._db):
            cursor = self._db.execute(
                "DELETE FROM alerts WHERE status != 'pending' AND created_at < ?", (now - KEEP_S,)
            )
            self._forget_sent_snapshots()
            return cursor.rowcount

    def get_state(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def latest_handled_at(self) -> float | None:
        """When the latest event still in the outbox was handled (its row written)."""
        with self._lock:
            row = self._db.execute("SELECT MAX(created_at) FROM alerts").fetchone()
        return None if row[0] is None else float(row[0])

    def arming_history(self) -> list[tuple[float, bool]]:
        """Every arming change kept, oldest first: (when it took effect, armed)."""
        with self._lock:
            rows = self._db.execute("SELECT at, armed FROM arming ORDER BY id").fetchall()
        return [(float(at), bool(armed)) for at, armed in rows]

    def set_armed(self, key: str, value: str, change: tuple[float, bool] | None, keep_since: float) -> None:
        """The arming state under ``key``, and ``change`` (when it took effect, armed) added to the history,
        in one transaction: both are stored or neither is. The history is pruned as in prune_arming."""
        with self._lock, transaction(self._db):
            self._db.execute("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", (key, value))
            if change is not None:
                self._db.execute("INSERT INTO arming (at, armed) VALUES (?, ?)", change)
                self._prune_arming(keep_since)

    def prune_arming(self, keep_since: float) -> int:
        with self._lock:
            return self._prune_arming(keep_since)

    def _prune_arming(self, keep_since: float) -> int:
        """Drop the changes made before ``keep_since``, except the one in force then (the state at any moment
        since stays known), and all but the latest ARMING_HISTORY_MAX_CHANGES (someone toggling for hours)."""
        before = self._db.execute(
            "DELETE FROM arming WHERE id < (SELECT MAX(id) FROM arming WHERE at <= ?)", (keep_since,)
        ).rowcount
        beyond = self._db.execute(
            "DELETE FROM arming WHERE id <= (SELECT id FROM arming ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (ARMING_HISTORY_MAX_CHANGES,),
        ).rowcount
        return before + beyond

    def _update(self, sql: str, parameters: tuple[object, ...]) -> None:
        with self._lock:
            self._db.execute(sql, parameters)

    def _settle(self, alert_id: int, sql: str, parameters: tuple[object, ...]) -> None:
        """A row sent or given up, and its event's snapshot dropped with the last of its channels to need it
        (so the rows kept for 30 days stay small), in one transaction."""
        with self._lock, transaction(self._db):
            self._db.execute(sql, parameters)
            self._db.execute(
                "DELETE FROM snapshots WHERE event_id = (SELECT event_id FROM alerts WHERE id = ?) AND NOT"
                " EXISTS (SELECT 1 FROM alerts WHERE event_id = snapshots.event_id AND status = 'pending')",
                (alert_id,),
            )

    def _forget_sent_snapshots(self) -> None:
        self._db.execute(
            "DELETE FROM snapshots WHERE event_id NOT IN"
            " (SELECT event_id FROM alerts WHERE status = 'pending')"
        )


@contextmanager
def redelivered_unless_stored(what: str) -> Iterator[None]:
    """An outbox write that failed leaves the message unacknowledged: the broker sends it again, instead of
    it being acknowledged and lost (services/common/acks.py)."""
    try:
        yield
    except STORE_ERRORS as error:
        raise Redeliver(f"{what}: {error}") from error


def make_private(path: Path, mode: int, logger: logging.Logger) -> None:
    """``path`` readable by its owner only; a path we do not own (and so cannot change) is warned about."""
    if path.stat().st_mode & 0o777 == mode:
        return
    try:
        path.chmod(mode)
    except PermissionError as error:
        logger.warning("%s is readable by others and could not be made private: %s", path, error)


def open_outbox(data_dir: Path, logger: logging.Logger) -> Outbox:
    """The outbox in ``data_dir``, made if needed, directory and files for the notifier's user only (they
    hold snapshots from inside the house); StartupError when the directory cannot hold it."""
    path = data_dir / OUTBOX_FILE
    try:
        data_dir.mkdir(mode=DATA_DIR_MODE, parents=True, exist_ok=True)
        make_private(data_dir, DATA_DIR_MODE, logger)
        if not path.exists():
            # Made here with its mode: SQLite gives its -wal and -shm files the database file's mode.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, DATA_FILE_MODE))
        for file in (path, path.with_name(f"{path.name}-wal"), path.with_name(f"{path.name}-shm")):
            if file.exists():
                make_private(file, DATA_FILE_MODE, logger)
        return Outbox(path)
    except STORE_ERRORS as error:
        raise StartupError("NOTIFY_DATA_DIR", str(error), data_dir) from error
