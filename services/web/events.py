"""Detection events in SQLite, snapshots as files beside it.

Every snapshot is checked (size and pixel count, from its header) before anything decodes it: a refused
one leaves the event without a picture. An open event whose end was lost is closed by the relay when the
detector's label state says OFF, or when no message came for ``OPEN_EVENT_TIMEOUT_S``; a later message of
the event reopens it.

Crash safety: a snapshot is written to a temporary name, fsynced and renamed to a fresh unique name before
the row that points at it is committed; the file it replaces is removed only after that commit. A kill at
any point leaves either the old or the new consistent state plus, at worst, an unreferenced file, which
:meth:`EventStore.cleanup` removes at the next start (rows whose file is gone lose their snapshot).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from services.common import schemas
from services.common.database import transaction
from services.web.clips import ClipStore
from services.web.const import DATABASE_FILE, SNAPSHOT_DIR
from services.web.event_model import (
    EVENT_ID_RE,
    EventFilter,
    StoredEvent,
    local_day,
    open_events,
)
from services.web.files import private_dir, restrict
from services.web.pictures import make_thumbnail, write_durably

# Told why a snapshot was refused (the event is stored without it).
Refused = Callable[[str], None]

# Objects an event keeps for its page, of all its messages: the most recently seen.
MAX_KEPT_OBJECTS = 64


class EventStore:
    def __init__(self, data_dir: Path, logger: logging.Logger) -> None:
        self.snapshot_dir = data_dir / SNAPSHOT_DIR
        private_dir(self.snapshot_dir)
        self._logger = logger
        self._lock = threading.Lock()
        self._db = open_events(data_dir / DATABASE_FILE)
        self.clips = ClipStore(self._db, self._lock)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- writing -------------------------------------------------------------------------------------

    def record(self, event: schemas.DetectionEvent, refused: Refused | None = None) -> StoredEvent:
        """Store a start, update or end, again if it comes twice. Raises ``sqlite3.Error`` or ``OSError``
        when the database is locked or the disk is full; nothing of the event is then kept. A snapshot that
        is no JPEG or too large to decode is left out, and ``refused`` told why (by default it is logged)."""
        new_files = self._write_pictures(event, refused or self._log_refused)
        now = time.time()
        with self._lock:
            old = self._db.execute(
                "SELECT snapshot, thumbnail FROM events WHERE event_id = ?", (event.event_id,)
            ).fetchone()
            try:
                self._commit(event, now, old is None, new_files)
            except BaseException:
                # The event comes again (the broker redelivers it) and writes its pictures anew.
                self._remove_files(*(new_files or ()))
                raise
            if new_files is not None and old is not None:
                self._remove_files(old["snapshot"], old["thumbnail"])
            row = self._db.execute("SELECT * FROM events WHERE event_id = ?", (event.event_id,)).fetchone()
        return self.clips.attach([StoredEvent.from_row(row)])[0]

    def _log_refused(self, why: str) -> None:
        self._logger.warning("snapshot refused: %s", why)

    def _write_pictures(
        self, event: schemas.DetectionEvent, refused: Refused
    ) -> tuple[str, str | None] | None:
        """The snapshot and its thumbnail, written under new names before the row points at them. The
        snapshot's header is checked first: a 631-byte JPEG can claim 32768x32768 pixels (3 GB decoded)."""
        try:
            jpeg = event.snapshot_jpeg()
            if jpeg is None:
                return None
            thumbnail = make_thumbnail(jpeg)  # checks the JPEG before decoding it
        except schemas.BadPayload as error:
            refused(f"event {event.event_id}: snapshot refused: {error}")
            return None
        snapshot = write_durably(self.snapshot_dir, event.event_id, jpeg)
        try:
            thumb = None
            if thumbnail:
                thumb = write_durably(self.snapshot_dir, f"{event.event_id}.thumb", thumbnail)
        except OSError:
            self._remove_files(snapshot)  # the event comes again and writes both anew
            raise
        return snapshot, thumb

    def _commit(
        self, event: schemas.DetectionEvent, now: float, new: bool, new_files: tuple[str, str | None] | None
    ) -> None:
        with transaction(self._db):
            self._upsert(event, now, new)
            if new_files is not None:
                self._db.execute(
                    "UPDATE events SET snapshot = ?, thumbnail = ?, snapshot_bytes = ? WHERE event_id = ?",
                    (*new_files, self._size(*new_files), event.event_id),
                )

    def _upsert(self, event: schemas.DetectionEvent, now: float, new: bool) -> None:
        values = {
            "event_id": event.event_id,
            "camera": event.camera,
            "label": event.label,
            "day": local_day(event.started_at),
            "started_at": event.started_at,
            "ended_at": event.ended_at if event.type == "end" else None,
            "updated_at": now,
            "score": event.score,
            "top_score": event.top_score,
            "box": json.dumps(list(event.box)),
            "zones": json.dumps(event.zones),
            "objects": json.dumps([tracked.model_dump(mode="json") for tracked in event.objects]),
        }
        if new:
            columns = ", ".join(values)
            marks = ", ".join(f":{name}" for name in values)
            self._db.execute(f"INSERT INTO events ({columns}) VALUES ({marks})", values)  # noqa: S608
            return
        changed = ["updated_at", "score", "top_score", "box"]
        # The zones entered so far come in every message; a message of an older detector, which sends no
        # objects (or no zones), keeps those stored.
        changed += [name for name in ("zones", "objects") if name in event.model_fields_set]
        if "objects" in changed:
            values["objects"] = self._merged_objects(event)
        assignments = [f"{name} = :{name}" for name in changed]
        if event.type == "end":
            assignments += ["ended_at = :ended_at", "closed_by_relay = 0"]
        else:
            # A message of an event the relay closed for want of news: the event goes on after all. An
            # event its end closed stays closed (an old update sent again after a failed write).
            assignments += [
                "ended_at = CASE WHEN closed_by_relay THEN NULL ELSE ended_at END",
                "closed_by_relay = 0",
            ]
        self._db.execute(
            f"UPDATE events SET {', '.join(assignments)} WHERE event_id = :event_id",  # noqa: S608
            values,
        )

    def _merged_objects(self, event: schemas.DetectionEvent) -> str:
        """A message lists the objects in view; the event keeps every object it had, each as last listed
        (the newest MAX_KEPT_OBJECTS), so the page still tells of someone who walked out of view."""
        row = self._db.execute("SELECT objects FROM events WHERE event_id = ?", (event.event_id,)).fetchone()
        listed = {tracked.id: tracked.model_dump(mode="json") for tracked in event.objects}
        stored = [o for o in json.loads(row["objects"]) if o.get("id") not in listed] if row else []
        merged = sorted([*stored, *listed.values()], key=lambda o: o.get("last_seen", 0.0))
        return json.dumps(merged[-MAX_KEPT_OBJECTS:])

    # -- closing events whose end was lost -----------------------------------------------------------

    def close_label(self, camera: str, label: str) -> list[StoredEvent]:
        """The detector says no event of ``label`` is open on ``camera``: close those still open here,
        as ended at their last message. Returns the closed events."""
        return self._close("camera = ? AND label = ?", (camera, label))

    def close_stale(self, silent_since: float) -> list[StoredEvent]:
        """Close the open events without any message since ``silent_since`` (epoch seconds)."""
        return self._close("updated_at < ?", (silent_since,))

    def _close(self, where: str, params: tuple[Any, ...]) -> list[StoredEvent]:
        condition = f"ended_at IS NULL AND {where}"
        with self._lock, transaction(self._db):
            rows = self._db.execute(f"SELECT * FROM events WHERE {condition}", params).fetchall()  # noqa: S608
            self._db.execute(
                f"UPDATE events SET ended_at = updated_at, closed_by_relay = 1 WHERE {condition}",  # noqa: S608
                params,
            )
        closed = [replace(StoredEvent.from_row(row), ended_at=row["updated_at"]) for row in rows]
        if closed:
            self._logger.info(
                "closed %d open events whose end was lost: %s",
                len(closed),
                ", ".join(event.event_id for event in closed[:5]) + (" ..." if len(closed) > 5 else ""),
            )
        return closed

    def _size(self, *names: str | None) -> int:
        return sum((self.snapshot_dir / name).stat().st_size for name in names if name)

    def _remove_files(self, *names: str | None) -> None:
        for name in names:
            if name:
                (self.snapshot_dir / name).unlink(missing_ok=True)

    # -- reading -------------------------------------------------------------------------------------

    def get(self, event_id: str) -> StoredEvent | None:
        if not EVENT_ID_RE.fullmatch(event_id):
            return None
        with self._lock:
            row = self._db.execute("SELECT * FROM events WHERE event_id = ?", (event_id,)).fetchone()
        return self.clips.attach([StoredEvent.from_row(row)])[0] if row is not None else None

    def query(self, where: EventFilter) -> list[StoredEvent]:
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("camera", where.camera), ("label", where.label), ("day", where.day)):
            if value:
                clauses.append(f"{column} = ?")
                params.append(value)
        if where.before is not None:
            clauses.append("started_at < ?")
            params.append(where.before)
        sql = "SELECT * FROM events"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY started_at DESC LIMIT ?"
        params.append(where.limit)
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return self.clips.attach([StoredEvent.from_row(row) for row in rows])

    def choices(self) -> dict[str, list[str]]:
        """Cameras, labels and days that have events, for the timeline's filters."""
        with self._lock:
            return {
                column: [r[0] for r in self._db.execute(f"SELECT DISTINCT {column} FROM events ORDER BY 1")]  # noqa: S608
                for column in ("camera", "label", "day")
            }

    def snapshot_path(self, event_id: str, thumbnail: bool = False) -> Path | None:
        event = self.get(event_id)
        if event is None:
            return None
        name = event.thumbnail if thumbnail else event.snapshot
        return self.snapshot_dir / name if name else None

    # -- housekeeping --------------------------------------------------------------------------------

    def cleanup(self) -> tuple[int, int]:
        """After a crash: delete files no row points at, forget snapshots whose file is gone. The
        pictures kept are made the owner's only."""
        with self._lock:
            rows = self._db.execute("SELECT event_id, snapshot, thumbnail FROM events").fetchall()
            missing = {
                row["event_id"]
                for row in rows
                if row["snapshot"] and not (self.snapshot_dir / row["snapshot"]).is_file()
            }
            for event_id in missing:
                self._db.execute(
                    "UPDATE events SET snapshot = NULL, thumbnail = NULL, snapshot_bytes = 0 "
                    "WHERE event_id = ?",
                    (event_id,),
                )
            referenced = {
                name
                for row in rows
                if row["event_id"] not in missing
                for name in (row["snapshot"], row["thumbnail"])
                if name
            }
            orphans = []
            for path in self.snapshot_dir.iterdir():
                if path.name in referenced:
                    restrict(path)  # left readable by an older version
                else:
                    orphans.append(path)
                    path.unlink(missing_ok=True)
        if orphans or missing:
            self._logger.warning(
                "cleanup: removed %d unreferenced files, %d events lost their snapshot",
                len(orphans),
                len(missing),
            )
        return len(orphans), len(missing)

    def apply_retention(self, max_age_s: float, max_bytes: int, now: float | None = None) -> int:
        """Delete events older than ``max_age_s``, then the oldest until snapshots fit in ``max_bytes``."""
        cutoff = (now if now is not None else time.time()) - max_age_s
        with self._lock:
            doomed = self._db.execute(
                "SELECT event_id, snapshot, thumbnail FROM events WHERE started_at < ?", (cutoff,)
            ).fetchall()
            total = self._db.execute(
                "SELECT COALESCE(SUM(snapshot_bytes), 0) FROM events WHERE started_at >= ?", (cutoff,)
            ).fetchone()[0]
            if total > max_bytes:
                for row in self._db.execute(
                    "SELECT event_id, snapshot, thumbnail, snapshot_bytes FROM events "
                    "WHERE started_at >= ? ORDER BY started_at",
                    (cutoff,),
                ):
                    if total <= max_bytes:
                        break
                    doomed.append(row)
                    total -= row["snapshot_bytes"]
            # Rows go first: a kill between the two steps leaves only unreferenced files behind.
            self._db.executemany("DELETE FROM events WHERE event_id = ?", [(r["event_id"],) for r in doomed])
            self.clips.forget([row["event_id"] for row in doomed], cutoff)  # their files are the recorder's
            for row in doomed:
                self._remove_files(row["snapshot"], row["thumbnail"])
        if doomed:
            self._logger.info("retention: deleted %d events", len(doomed))
        return len(doomed)
