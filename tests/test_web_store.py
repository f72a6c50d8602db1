"""Event store: retention by age and size, and consistency after the relay is killed mid-write."""

from __future__ import annotations

import contextlib
import logging
import signal
import sqlite3
import threading
import time
import urllib.request
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from scripts.localbroker import LocalBroker, free_port
from services.common import schemas, topics
from services.web.event_model import EventFilter
from services.web.events import EventStore
from services.web.pictures import write_durably
from tests.support import Collector, detection_event, footage_frames, relay_mqtt_env, wait_until
from tests.web_support import PASSWORD

LOGGER = logging.getLogger("test.web")


def event(
    camera: str, event_id: str, kind: str, jpeg: bytes | None, started: float
) -> schemas.DetectionEvent:
    return schemas.DetectionEvent.parse(
        detection_event(camera, event_id, jpeg, kind=kind, started_at=started or None)
    )


def consistent(store: EventStore) -> None:
    """Every row's pictures exist, and every file belongs to a row."""
    rows = store.query(EventFilter(limit=100))
    referenced = {name for row in rows for name in (row.snapshot, row.thumbnail) if name}
    on_disk = {path.name for path in store.snapshot_dir.iterdir()}
    assert referenced == on_disk


def test_retention_removes_old_events_then_the_oldest_beyond_the_size_limit(tmp_path: Path) -> None:
    store = EventStore(tmp_path, LOGGER)
    frames = footage_frames()
    now = time.time()
    ages_days = [40, 35, 3, 2, 1, 0]
    for index, age in enumerate(ages_days):
        store.record(event("ret", f"ret-{index}-person", "start", frames[index], now - age * 86400))
    consistent(store)
    assert store.apply_retention(30 * 86400, 10**9, now=now) == 2
    assert [e.event_id for e in store.query(EventFilter())] == [f"ret-{i}-person" for i in (5, 4, 3, 2)]
    consistent(store)
    # Size: keep only what fits in the newest two events' pictures.
    kept = store.query(EventFilter(limit=2))
    budget = sum(store._size(e.snapshot, e.thumbnail) for e in kept)
    assert store.apply_retention(30 * 86400, budget, now=now) == 2
    assert [e.event_id for e in store.query(EventFilter())] == ["ret-5-person", "ret-4-person"]
    consistent(store)
    store.close()


def test_cleanup_repairs_every_state_a_crash_can_leave(tmp_path: Path) -> None:
    store = EventStore(tmp_path, LOGGER)
    frames = footage_frames()
    store.record(event("crash", "crash-1-person", "start", frames[0], time.time()))
    store.record(event("crash", "crash-2-person", "start", frames[1], time.time()))
    # Killed while writing (a temporary file), and after the rename but before the commit (orphan).
    (store.snapshot_dir / "crash-1-person.abcd.jpg.tmp").write_bytes(frames[2][:1000])
    write_durably(store.snapshot_dir, "crash-1-person", frames[2])
    # A file lost behind the relay's back.
    lost = store.get("crash-2-person")
    assert lost is not None
    assert lost.snapshot is not None
    (store.snapshot_dir / lost.snapshot).unlink()
    store.close()
    again = EventStore(tmp_path, LOGGER)
    assert again.cleanup() == (3, 1)  # the .tmp, the orphan, and the lost event's thumbnail
    consistent(again)
    kept = again.get("crash-1-person")
    assert kept is not None and (again.snapshot_dir / str(kept.snapshot)).read_bytes() == frames[0]
    assert again.get("crash-2-person").has_snapshot is False  # type: ignore[union-attr]
    again.close()


def test_a_failed_thumbnail_write_leaves_no_snapshot_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = EventStore(tmp_path, LOGGER)

    def thumbnail_fails(directory: Path, stem: str, data: bytes) -> str:
        if stem.endswith(".thumb"):
            raise OSError(28, "No space left on device")
        return write_durably(directory, stem, data)

    monkeypatch.setattr("services.web.events.write_durably", thumbnail_fails)
    with pytest.raises(OSError, match="No space"):
        store.record(event("full-disk", "full-disk-1-person", "start", footage_frames()[0], time.time()))
    assert list(store.snapshot_dir.iterdir()) == []
    assert store.get("full-disk-1-person") is None
    store.close()


def test_killed_mid_write_the_relay_restarts_consistent(broker: LocalBroker, service, tmp_path: Path) -> None:
    data_dir = tmp_path / "web"
    port = free_port()
    env = {
        **relay_mqtt_env(broker, data_dir),
        "WEB_PASSWORD": PASSWORD,
        "WEB_PORT": str(port),
        "WEB_HOST": "127.0.0.1",
        "WEB_DATA_DIR": str(data_dir),
    }
    relay = service("web", env)
    relay.wait_for_log("serving on")
    wait_until((data_dir / "events.sqlite3").exists, what="database")
    publisher = Collector(broker)
    frames = footage_frames()
    camera = "web-kill"
    stop = threading.Event()
    published: list[tuple[str, mqtt.MQTTMessageInfo]] = []

    def flood() -> None:
        index = 0
        while not stop.is_set():
            kind = ("start", "update", "update", "end")[index % 4]
            event_id = f"{camera}-{index // 4}-person"
            info = publisher.publish_raw(
                topics.event(camera, "person"),
                detection_event(camera, event_id, frames[index % len(frames)], kind=kind),
                qos=1,
            )
            published.append((event_id, info))
            index += 1
            time.sleep(0.002)

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    snapshots = data_dir / "snapshots"
    wait_until(lambda: snapshots.is_dir() and len(list(snapshots.iterdir())) > 20, what="snapshots written")
    assert relay.process is not None
    relay.process.send_signal(signal.SIGKILL)
    relay.wait()
    stop.set()
    thread.join()
    last_id, last_sent = published[-1]
    last_sent.wait_for_publish(5)
    publisher.close()
    # What the kill left: rows are valid, and after the start-up cleanup files and rows match exactly.
    with sqlite3.connect(data_dir / "events.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    assert rows > 0
    restarted = service("web", env)
    restarted.wait_for_log("serving on")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
        assert response.status == 200
    # The broker kept what the killed relay had not stored and what came while it was down: the restarted
    # relay stores it. Stopped, it has finished writing, so files and rows must match exactly.
    wait_until(lambda: stored(data_dir, last_id), timeout=20, what="the events sent while the relay was down")
    assert restarted.stop() == 0
    store = EventStore(data_dir, LOGGER)
    consistent(store)
    for row in store.query(EventFilter(limit=100)):
        if row.snapshot:
            assert schemas.looks_like_jpeg((store.snapshot_dir / row.snapshot).read_bytes())
    store.close()


def stored(data_dir: Path, event_id: str) -> bool:
    with contextlib.closing(sqlite3.connect(data_dir / "events.sqlite3")) as db:
        return db.execute("SELECT 1 FROM events WHERE event_id = ?", (event_id,)).fetchone() is not None


def test_bad_settings_stop_the_relay_with_one_line(broker: LocalBroker, service, tmp_path: Path) -> None:
    base = {**relay_mqtt_env(broker, tmp_path / "web"), "WEB_DATA_DIR": str(tmp_path / "web")}
    no_password = service("web", base)
    assert no_password.wait() == 2
    assert (
        no_password.log.strip()
        == "sentrycam-web: invalid setting WEB_PASSWORD: set WEB_PASSWORD or WEB_PASSWORD_HASH"
    )
    bad_port = service("web", {**base, "WEB_PASSWORD": "secret-pw", "WEB_PORT": "http"})
    assert bad_port.wait() == 2
    lines = bad_port.log.strip().splitlines()
    assert len(lines) == 1 and "WEB_PORT" in lines[0] and "secret-pw" not in bad_port.log


def test_no_secret_is_logged_and_the_key_is_kept(broker: LocalBroker, service, tmp_path: Path) -> None:
    data_dir = tmp_path / "web"
    port = free_port()
    env = {
        **relay_mqtt_env(broker, data_dir),
        "WEB_PASSWORD": "hunter2-very-secret",
        "WEB_PORT": str(port),
        "WEB_HOST": "127.0.0.1",
        "WEB_DATA_DIR": str(data_dir),
        "LOG_LEVEL": "DEBUG",
    }
    relay = service("web", env)
    relay.wait_for_log("serving on")
    form = urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=5)
    assert form.status == 200
    key_file = data_dir / "secret_key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = key_file.read_text().strip()
    assert relay.stop() == 0
    assert "hunter2-very-secret" not in relay.log and key not in relay.log
    assert env["MQTT_PASSWORD"] not in relay.log


OLD_SCHEMA = """
CREATE TABLE events (
    event_id TEXT PRIMARY KEY, camera TEXT NOT NULL, label TEXT NOT NULL, day TEXT NOT NULL,
    started_at REAL NOT NULL, ended_at REAL, updated_at REAL NOT NULL, score REAL NOT NULL,
    top_score REAL NOT NULL, box TEXT NOT NULL, zones TEXT NOT NULL, snapshot TEXT, thumbnail TEXT,
    snapshot_bytes INTEGER NOT NULL DEFAULT 0
);
"""


def test_a_database_of_the_first_release_is_upgraded_at_start(tmp_path: Path) -> None:
    """An older relay's database gains what closing open events needs, and keeps its events."""
    with contextlib.closing(sqlite3.connect(tmp_path / "events.sqlite3")) as db:
        db.executescript(OLD_SCHEMA)
        db.execute(
            "INSERT INTO events VALUES ('old-1-person', 'old', 'person', '2025-01-01', 1, NULL, 2, 0.7, 0.7,"
            " '[0, 0, 1, 1]', '[]', NULL, NULL, 0)"
        )
        db.commit()
    store = EventStore(tmp_path, LOGGER)
    closed = store.close_label("old", "person")
    assert [(event.event_id, event.ended_at) for event in closed] == [("old-1-person", 2)]
    # A later message of the event opens it again.
    store.record(event("old", "old-1-person", "update", None, 1))
    assert store.get("old-1-person").ended_at is None  # type: ignore[union-attr]
    assert store.close_stale(time.time() + 1)[0].event_id == "old-1-person"
    store.close()
