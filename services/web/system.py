"""What the system page shows: each service's status, the latest stats of the detector (per instance), the
notifier and the recorder, and the disk the events (and the recordings) take. Fed by the relay's MQTT
handlers (paho's network thread), read by the page and ``/api/system``; everything kept is bounded."""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common import schemas, topics
from services.web.const import DATABASE_FILE

# The services whose status the page shows; other sentrycam/<login>/status topics (any login may say its
# own) are not services of ours and are ignored.
SERVICES = ("detector", "notifier", "recorder", "web")
# Stats larger than this are refused before they are decoded (1000 cameras of DetectorStats are ~300 KB).
MAX_STATS_BYTES = 1024 * 1024
# Detector instances kept (each says its name); the one heard from least recently goes first.
MAX_DETECTORS = 16
# How stale the disk figures may be: the events' size is a scan of one directory, recordings a whole tree.
EVENTS_SIZE_TTL_S = 60.0
RECORDINGS_SIZE_TTL_S = 600.0


@dataclass(frozen=True)
class Status:
    status: str  # online, offline
    since: float | None  # when the relay heard it change; None for a retained one (older than the relay)


class CachedSize:
    """A size in bytes measured by ``measure`` at most once per ``ttl_s``; one measure at a time, and the
    requests that come meanwhile get the previous figure."""

    def __init__(self, measure: Callable[[], int], ttl_s: float) -> None:
        self._measure = measure
        self._ttl_s = ttl_s
        self._lock = threading.Lock()
        self._value: int | None = None
        self._at = -ttl_s

    def get(self) -> int | None:
        if time.monotonic() - self._at < self._ttl_s or not self._lock.acquire(blocking=False):
            return self._value
        try:
            self._value = self._measure()
        except OSError:  # a directory gone or unreadable: no figure rather than a failed page
            self._value = None
        finally:
            self._at = time.monotonic()
            self._lock.release()
        return self._value


def files_size(paths: list[Path]) -> int:
    """The regular files among ``paths`` and directly in those that are directories (not deeper)."""
    total = 0
    for path in paths:
        if path.is_dir():
            with os.scandir(path) as entries:
                total += sum(size_of(entry.path) for entry in entries if entry.is_file(follow_symlinks=False))
        else:
            total += size_of(str(path))
    return total


def size_of(path: str) -> int:
    try:
        return os.lstat(path).st_size
    except OSError:  # deleted by retention meanwhile
        return 0


def tree_size(root: Path) -> int:
    total = 0
    for directory, _dirs, names in os.walk(root):
        total += sum(size_of(os.path.join(directory, name)) for name in names)
    return total


class SystemState:
    def __init__(self, data_dir: Path, snapshot_dir: Path, record_dir: Path | None) -> None:
        self._lock = threading.Lock()
        self._services: dict[str, Status] = {}
        self._detectors: OrderedDict[str, schemas.DetectorStats] = OrderedDict()
        self._notifier: schemas.NotifierStats | None = None
        self._recorder: schemas.RecorderStats | None = None
        # The snapshots and the database with its write-ahead log (events.sqlite3, -wal, -shm).
        self._events_size = CachedSize(
            lambda: files_size([snapshot_dir, *data_dir.glob(f"{DATABASE_FILE}*")]), EVENTS_SIZE_TTL_S
        )
        self._record_dir = record_dir
        self._record_size = (
            None if record_dir is None else CachedSize(lambda: tree_size(record_dir), RECORDINGS_SIZE_TTL_S)
        )

    def on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        """A ``sentrycam/<service>/status`` or ``.../stats`` message; BadPayload when it is refused."""
        parts = topic.split("/")
        if len(parts) != 3 or parts[1] not in SERVICES or not payload:  # not ours; a cleared retained one
            return
        if parts[2] == "status":
            self._on_status(parts[1], payload, retained)
        elif parts[2] == "stats":
            self._on_stats(parts[1], payload)

    def _on_status(self, service: str, payload: bytes, retained: bool) -> None:
        if len(payload) > schemas.MAX_WORD_BYTES:  # not decoded
            raise schemas.BadPayload(f"expected online or offline, got {len(payload)} bytes")
        text = payload.decode("utf-8", "replace").strip()
        if text not in (topics.ONLINE, topics.OFFLINE):
            raise schemas.BadPayload(f"expected online or offline, got {text[:40]!r}")
        with self._lock:
            known = self._services.get(service)
            if known is None or known.status != text:
                self._services[service] = Status(text, None if retained else time.time())

    def _on_stats(self, service: str, payload: bytes) -> None:
        if len(payload) > MAX_STATS_BYTES:
            raise schemas.BadPayload(f"stats of {len(payload)} bytes, over {MAX_STATS_BYTES}")
        if service == "detector":
            detector = schemas.DetectorStats.parse(payload)
            with self._lock:
                self._detectors.pop(detector.instance, None)
                self._detectors[detector.instance] = detector
                while len(self._detectors) > MAX_DETECTORS:
                    self._detectors.popitem(last=False)
        elif service == "notifier":
            notifier = schemas.NotifierStats.parse(payload)
            with self._lock:
                self._notifier = notifier
        elif service == "recorder":
            recorder = schemas.RecorderStats.parse(payload)
            with self._lock:
                self._recorder = recorder

    def view(self) -> dict[str, Any]:
        """Everything the page and ``/api/system`` show, as JSON."""
        with self._lock:
            services = [
                {
                    "service": name,
                    "status": state.status if state else None,
                    "since": state.since if state else None,
                }
                for name in SERVICES
                for state in [self._services.get(name)]
            ]
            detectors = list(self._detectors.values())
            notifier, recorder = self._notifier, self._recorder
        return {
            "services": services,
            "cameras": camera_rows(detectors),
            "notifier": notifier.model_dump(mode="json") if notifier else None,
            "recorder": recorder_view(recorder),
            "disk": self.disk(recorder),
        }

    def disk(self, recorder: schemas.RecorderStats | None) -> dict[str, Any]:
        recordings: int | None = None
        source = None
        if recorder is not None:
            recordings, source = recorder.used_bytes, "recorder"
        elif self._record_size is not None:
            recordings, source = self._record_size.get(), "WEB_RECORD_DIR"
        return {
            "events_bytes": self._events_size.get(),
            "recordings_bytes": recordings,
            "recordings_from": source,
        }


def camera_rows(detectors: list[schemas.DetectorStats]) -> list[dict[str, Any]]:
    """One row per camera and detector instance, by camera."""
    rows = [
        {
            "camera": camera,
            "instance": stats.instance,
            "published_at": stats.published_at,
            **figures.model_dump(),
        }
        for stats in detectors
        for camera, figures in stats.cameras.items()
    ]
    return sorted(rows, key=lambda row: (row["camera"], row["instance"]))


def recorder_view(recorder: schemas.RecorderStats | None) -> dict[str, Any] | None:
    if recorder is None:
        return None
    keep = (
        "published_at",
        "disk_ok",
        "disk_error",
        "write_errors",
        "used_bytes",
        "free_bytes",
        "files_deleted",
    )
    return {name: getattr(recorder, name) for name in keep}
