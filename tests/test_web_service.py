"""The relay as a service: what stops it at start, and events acknowledged to the broker only once stored."""

from __future__ import annotations

import functools
import http.client
import os
import shutil
import socket
import sqlite3
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from scripts.localbroker import LocalBroker, free_port
from services.common import schemas, topics
from tests.support import (
    Collector,
    ServiceProcess,
    detection_event,
    footage_frames,
    relay_mqtt_env,
    wait_until,
)
from tests.web_support import PASSWORD, USERNAME, http_session, log_in, running_relay

Service = Callable[..., ServiceProcess]


def test_an_event_the_store_could_not_take_comes_again_and_is_stored_once(
    broker: LocalBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The relay's write gives up on the lock after 0.1 s instead of 5 s.
    monkeypatch.setattr("services.web.event_model.BUSY_TIMEOUT_MS", 100)
    camera = "web-locked"
    event_id = f"{camera}-1-person"
    data_dir = tmp_path / "web"
    publisher = Collector(broker)
    with running_relay(broker, data_dir) as (relay, app):
        client = app.test_client()
        assert log_in(client)[0] == 302
        # Someone else (a backup, the sqlite3 shell) holds the database while the event comes.
        holder = sqlite3.connect(data_dir / "events.sqlite3", isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            publisher.publish(
                topics.event(camera, "person"),
                detection_event(camera, event_id, footage_frames()[0], kind="start"),
            )
            wait_until(
                lambda: relay.client.redeliveries >= 1, what="the write failed and asked for the event again"
            )
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        listed = wait_until(
            lambda: client.get(f"/api/events?camera={camera}").get_json(),
            what="the event stored on redelivery",
        )
        assert [event["event_id"] for event in listed] == [event_id]
        assert relay.client.redeliveries == 1
        # The failed write left no picture behind: one snapshot and its thumbnail.
        assert (
            len([path for path in relay.store.snapshot_dir.iterdir() if path.name.startswith(event_id)]) == 2
        )
    publisher.close()


def relay_env(broker: LocalBroker, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **relay_mqtt_env(broker, tmp_path / "web"),
        "WEB_PASSWORD": PASSWORD,
        "WEB_HOST": "127.0.0.1",
        "WEB_PORT": str(free_port()),
        "WEB_DATA_DIR": str(tmp_path / "web"),
        **extra,
    }


def refused_start(service: Service, env: dict[str, str], unprivileged: bool = False) -> str:
    """The one line the relay says before it exits with code 2."""
    relay = service("web", env, unprivileged=unprivileged)
    assert relay.wait() == 2, relay.log
    assert "Traceback" not in relay.log, relay.log
    lines = relay.log.strip().splitlines()
    assert len(lines) == 1, relay.log
    return lines[0]


def file_in_the_way(tmp_path: Path) -> Path:
    (tmp_path / "taken").write_text("not a directory")
    return tmp_path / "taken"


def under_a_file(tmp_path: Path) -> Path:
    return file_in_the_way(tmp_path) / "web"


def under_a_read_only_directory(tmp_path: Path) -> Path:
    (tmp_path / "read-only").mkdir(mode=0o555)
    return tmp_path / "read-only" / "web"


def read_only(tmp_path: Path) -> Path:
    (tmp_path / "read-only").mkdir(mode=0o555)
    return tmp_path / "read-only"


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory the unprivileged relay may enter (pytest's own temporary directories are root's only),
    so that what it refuses is the directory under test and not the way to it."""
    path = Path(tempfile.mkdtemp())
    path.chmod(0o755)
    yield path
    for inside in path.rglob("*"):
        if inside.is_dir():
            inside.chmod(0o755)
    shutil.rmtree(path)


@pytest.mark.parametrize("data_dir", [file_in_the_way, under_a_file, under_a_read_only_directory, read_only])
def test_a_data_dir_the_relay_cannot_write_stops_it_with_one_line(
    broker: LocalBroker, service: Service, tmp_path: Path, open_dir: Path, data_dir: Callable[[Path], Path]
) -> None:
    path = data_dir(open_dir)
    # Not as root, which may write into a read-only directory (CI runs as root).
    env = relay_env(broker, tmp_path, WEB_DATA_DIR=str(path))
    line = refused_start(service, env, unprivileged=True)
    assert line.startswith(f"sentrycam-web: invalid setting WEB_DATA_DIR={path}: "), line


def test_a_data_dir_with_a_broken_database_stops_the_relay_with_one_line(
    broker: LocalBroker, service: Service, tmp_path: Path
) -> None:
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "events.sqlite3").write_bytes(
        b"not a database, but long enough to look like one" * 100
    )
    line = refused_start(service, relay_env(broker, tmp_path))
    assert line.startswith("sentrycam-web: invalid setting WEB_DATA_DIR=") and "events.sqlite3" in line, line


def test_a_port_in_use_stops_the_relay_with_one_line(
    broker: LocalBroker, service: Service, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = refused_start(service, relay_env(broker, tmp_path, WEB_PORT=str(port)))
    assert line == f"sentrycam-web: invalid setting WEB_PORT={port}: already in use by another program"


def test_a_host_address_not_of_this_machine_stops_the_relay_with_one_line(
    broker: LocalBroker, service: Service, tmp_path: Path
) -> None:
    line = refused_start(service, relay_env(broker, tmp_path, WEB_HOST="192.0.2.1"))  # TEST-NET-1
    assert line == "sentrycam-web: invalid setting WEB_HOST=192.0.2.1: not an address of this machine"


def test_a_password_hash_of_an_unknown_method_stops_the_relay_with_one_line(
    broker: LocalBroker, service: Service, tmp_path: Path
) -> None:
    env = relay_env(broker, tmp_path, WEB_PASSWORD_HASH="md5$salt$0123456789abcdef")
    del env["WEB_PASSWORD"]
    line = refused_start(service, env)
    assert line.startswith(
        "sentrycam-web: invalid setting WEB_PASSWORD_HASH: not a werkzeug password hash"
    ), line
    assert "0123456789abcdef" not in line


SCRYPT_PREFIX = "scrypt:32768:8:1$saltsaltsaltsalt$"


@pytest.mark.parametrize(
    ("setting", "value", "expected"),
    [
        ("WEB_PASSWORD", "a", "invalid setting WEB_PASSWORD: must be at least 8 characters"),
        ("WEB_SECRET_KEY", "x", "invalid setting WEB_SECRET_KEY: must be at least 32 characters"),
        # A hash no login can match, and one that made every check raise.
        ("WEB_PASSWORD_HASH", SCRYPT_PREFIX + "abc", "must be 128 hex digits"),
        ("WEB_PASSWORD_HASH", SCRYPT_PREFIX + "ä" * 128, "must be 128 hex digits"),
    ],
)
def test_a_weak_password_or_key_or_a_malformed_hash_stops_the_relay_with_one_line(
    broker: LocalBroker, service: Service, tmp_path: Path, *, setting: str, value: str, expected: str
) -> None:
    env = relay_env(broker, tmp_path, **{setting: value})
    if setting == "WEB_PASSWORD_HASH":
        del env["WEB_PASSWORD"]
    line = refused_start(service, env)
    assert line.startswith(f"sentrycam-web: invalid setting {setting}"), line
    assert expected in line, line


def test_the_data_dir_is_the_owners_only(broker: LocalBroker, tmp_path: Path) -> None:
    data_dir = tmp_path / "web"
    camera = "web-modes"
    publisher = Collector(broker)
    previous = os.umask(0)  # the modes are the relay's own, whatever the umask
    try:
        for run in range(2):
            with running_relay(broker, data_dir) as (relay, app):
                assert log_in(app.test_client())[0] == 302  # a sign-in is kept in the data directory
                event_id = f"{camera}-{run}-person"
                publisher.publish(
                    topics.event(camera, "person"), detection_event(camera, event_id, footage_frames()[run])
                )
                wait_until(functools.partial(relay.store.get, event_id), what="event stored")
                modes = private_modes(data_dir)
            names = {path.relative_to(data_dir).as_posix() for path in modes}
            assert {"secret_key", "sessions", "events.sqlite3", "snapshots"} <= names, names
            assert len([name for name in names if name.startswith(f"snapshots/{event_id}")]) == 2
            assert modes == {path: 0o700 if path.is_dir() else 0o600 for path in modes}, {
                path.name: oct(mode) for path, mode in modes.items()
            }
            # What an older relay left readable is made private at the next start.
            for path in private_modes(data_dir):
                path.chmod(0o755 if path.is_dir() else 0o644)
    finally:
        os.umask(previous)
        publisher.close()


def private_modes(data_dir: Path) -> dict[Path, int]:
    """The permission bits of the data directory and everything in it."""
    return {path: stat.S_IMODE(path.stat().st_mode) for path in [data_dir, *data_dir.rglob("*")]}


def test_a_relative_data_dir_serves_snapshots_and_thumbnails(
    broker: LocalBroker, service: Service, tmp_path: Path
) -> None:
    """The trial: .env.example copied to .env says WEB_DATA_DIR=data/web. The relay works in tmp_path,
    not in its own folder; every snapshot and thumbnail answered 500 (Flask's send_file took the relative
    path as relative to the app's folder, the existence check as relative to the working directory)."""
    camera = "web-relative"
    event_id = f"{camera}-1-person"
    env = relay_env(broker, tmp_path, WEB_DATA_DIR="data/web", WEB_USERNAME=USERNAME)
    relay = service("web", env)
    port = int(env["WEB_PORT"])
    relay.wait_for_log("serving on")
    relay.wait_for_log("connected to")  # said once its subscriptions are acknowledged
    publisher = Collector(broker)
    try:
        cookie = http_session(port)
        # Sent once: a copy sent again would replace the pictures under new names while they are fetched.
        publisher.publish(
            topics.event(camera, "person"), detection_event(camera, event_id, footage_frames()[0])
        )
        wait_until(lambda: http_get(port, f"/events/{event_id}", cookie)[0] == 200, what="the event stored")
        for picture in ("snapshot.jpg", "thumb.jpg"):
            status, body = http_get(port, f"/events/{event_id}/{picture}", cookie)
            assert status == 200, (picture, status, relay.log)
            assert body.startswith(b"\xff\xd8"), picture
        assert (tmp_path / "data" / "web" / "events.sqlite3").is_file()
        assert str(tmp_path / "data" / "web") in relay.log  # said as the absolute path it is
    finally:
        publisher.close()
    assert relay.stop() == 0


def http_get(port: int, path: str, cookie: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path, headers={"Cookie": cookie})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_an_alarm_result_reaches_the_camera_and_a_bad_one_is_counted(
    broker: LocalBroker, tmp_path: Path
) -> None:
    camera = "web-alarm-result"
    publisher = Collector(broker)
    try:
        with running_relay(broker, tmp_path / "web") as (relay, app):
            client = app.test_client()
            assert log_in(client)[0] == 302
            publisher.publish(topics.status(camera), topics.ONLINE)
            wait_until(lambda: client.get(f"/api/cameras/{camera}").status_code == 200, what="camera shown")
            topic = topics.alarm_result(camera)
            other = schemas.AlarmResult(camera="someone-else", result="stopped", at=1.0).to_json()
            too_long = b'{"camera": "%s", "result": "player_failed", "at": 1, "error": "%s"}' % (
                camera.encode(),
                b"e" * 257,
            )
            for bad in (
                b"junk",
                other,
                too_long,
                b'{"camera": "%s", "result": "loud", "at": 1}' % camera.encode(),
            ):
                publisher.publish(topic, bad)
            good = schemas.AlarmResult(camera=camera, result="cooling_down", cooldown_left_s=17.2, at=2.0)
            publisher.publish(topic, good.to_json())
            shown = wait_until(lambda: client.get(f"/api/cameras/{camera}").get_json()["alarm_result"])
            assert shown["said"] == "cooling down, 18 s"
            assert (shown["result"], shown["cooldown_left_s"], shown["at"]) == ("cooling_down", 17.2, 2.0)
            assert relay.bad_payloads == 4
    finally:
        publisher.close()


def waitress_threads() -> int:
    return sum(thread.name.startswith("waitress-") for thread in threading.enumerate())


def test_a_stopped_relay_ends_its_streams_and_leaves_no_server_threads(
    broker: LocalBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Its stop ends an open page's event stream at once (not at its next keep-alive, 15 s later) and the
    server's worker threads (waitress's close alone leaves them waiting for requests for ever), before
    the server closes: nothing is left writing to a closed server."""
    before = waitress_threads()
    with running_relay(broker, tmp_path / "web") as (relay, _app):
        assert waitress_threads() > before
        port = relay.settings.web_port
        page = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        page.request("GET", "/api/stream", headers={"Cookie": http_session(port)})
        stream = page.getresponse()
        assert stream.status == 200 and stream.readline().startswith(b"event: status")
        stopping = time.monotonic()
    assert stream.read() is not None  # the stream ended (a closed chunked body reads to its end)
    assert time.monotonic() - stopping < 5
    wait_until(lambda: waitress_threads() <= before, timeout=2, what="the server threads ended")
    page.close()
    assert "Exception while serving" not in caplog.text
    assert not [record for record in caplog.records if record.name == "waitress" and record.levelno >= 40]
