"""What the relay refuses to spend memory and connections on: JPEG bombs, many logins at once, idle
connections. Against the real broker and the relay's real waitress server."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from flask import Flask
from werkzeug.security import check_password_hash

from scripts.localbroker import LocalBroker
from services.common import topics
from services.web import auth
from services.web.const import LOGIN_CHECKS
from services.web.relay import WebRelay
from tests.support import Collector, detection_event, footage_frames, wait_until
from tests.web_support import (
    PASSWORD,
    http_login,
    http_login_form,
    jpeg_bomb,
    log_in,
    peak_memory,
    reset_peak_memory,
    running_relay,
)

MB = 1024 * 1024


def test_a_jpeg_bomb_is_never_decoded_nor_sent_on(
    web: tuple[WebRelay, Flask], publisher: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    relay, app = web
    bomb = jpeg_bomb()
    assert len(bomb) < 1000
    decoded: list[bytes] = []
    real_decode = cv2.imdecode

    def watched_decode(buffer: np.ndarray, flags: int) -> np.ndarray | None:
        data = bytes(buffer)
        decoded.append(data)
        # The bomb is not really decoded here (3 GB); that it was tried is the failure.
        return None if data == bomb else real_decode(buffer, flags)

    monkeypatch.setattr(cv2, "imdecode", watched_decode)
    client = app.test_client()
    assert log_in(client)[0] == 302
    camera = "web-bomb"
    before = relay.bad_payloads
    resident = reset_peak_memory()
    # As an event's snapshot: the event is stored without a picture, the snapshot counted.
    event_id = f"{camera}-1-person"
    publisher.publish(topics.event(camera, "person"), detection_event(camera, event_id, bomb))
    stored = wait_until(lambda: relay.store.get(event_id), what="event stored")
    assert client.get(f"/api/events/{event_id}").get_json()["snapshot_url"] is None
    assert stored.has_snapshot is False
    assert relay.bad_payloads == before + 1
    assert not [path for path in relay.store.snapshot_dir.iterdir() if path.name.startswith(event_id)]
    # As a frame: dropped and counted; browsers keep getting the newest good frame.
    publisher.announce(camera)
    wait_until(lambda: relay.camera(camera), what="camera known")
    good = footage_frames()[0]
    publisher.frame(camera, good)
    wait_until(lambda: relay.hub.latest(camera), what="good frame")
    publisher.frame(camera, bomb)
    wait_until(lambda: relay.bad_payloads == before + 2, what="bomb frame counted")
    assert client.get(f"/cam/{camera}/latest.jpg").data == good
    assert bomb not in decoded
    assert peak_memory() - resident < 100 * MB
    # A real snapshot is still decoded for its thumbnail.
    publisher.publish(topics.event(camera, "person"), detection_event(camera, f"{camera}-2-person", good))
    wait_until(lambda: good in decoded, what="a real snapshot thumbnailed")
    assert relay.bad_payloads == before + 2
    publisher.forget(camera)


def test_a_hundred_wrong_logins_at_once_check_the_password_at_most_the_limit(
    broker: LocalBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One address, a hundred wrong logins over real HTTP at once: only WEB_LOGIN_ATTEMPTS (5) reach the
    password check, and at most LOGIN_CHECKS at a time (each scrypt check takes 32 MB)."""
    lock = threading.Lock()
    checks = {"calls": 0, "running": 0, "peak": 0}
    real_check = check_password_hash

    def counted_check(pwhash: str, password: str) -> bool:
        with lock:
            checks["calls"] += 1
            checks["running"] += 1
            checks["peak"] = max(checks["peak"], checks["running"])
        try:
            time.sleep(0.05)  # widens the window in which a racy limit lets everyone in
            return real_check(pwhash, password)
        finally:
            with lock:
                checks["running"] -= 1

    monkeypatch.setattr(auth, "check_password_hash", counted_check)
    attempts = 100
    with running_relay(broker, tmp_path / "web") as (relay, _app):
        port = relay.settings.web_port
        forms = [http_login_form(port) for _ in range(attempts)]
        start = threading.Barrier(attempts)
        statuses: list[int] = []

        def attempt(cookie: str, token: str) -> None:
            start.wait()
            status = http_login(port, cookie, token, "wrong password")
            with lock:
                statuses.append(status)

        threads = [threading.Thread(target=attempt, args=form) for form in forms]
        resident = reset_peak_memory()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        grown = peak_memory() - resident
        limit = relay.settings.web_login_attempts
        assert 1 <= checks["calls"] <= limit
        assert Counter(statuses) == {401: checks["calls"], 429: attempts - checks["calls"]}
        assert checks["peak"] <= LOGIN_CHECKS
        assert grown < 50 * MB * LOGIN_CHECKS, f"{grown / MB:.0f} MB more"
        # The address stays limited, even with the right password.
        cookie, token = http_login_form(port)
        assert http_login(port, cookie, token, PASSWORD) == 429


def test_idle_and_half_open_connections_do_not_lock_out_the_health_check(
    web: tuple[WebRelay, Flask],
) -> None:
    relay, _app = web
    port = relay.settings.web_port
    idle: list[socket.socket] = []
    try:
        for index in range(200):
            connection = socket.create_connection(("127.0.0.1", port), timeout=5)
            if index % 2:  # half a request, never finished
                connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n")
            idle.append(connection)
        time.sleep(0.5)  # the server has taken them all
        started = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            assert response.status == 200
        assert time.monotonic() - started < 2
    finally:
        for connection in idle:
            connection.close()


def test_the_server_closes_connections_that_stay_silent(
    broker: LocalBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 1 s instead of 30 s of silence, checked every second instead of every 5 s.
    monkeypatch.setattr("services.web.server.IDLE_CONNECTION_S", 1)
    monkeypatch.setattr("services.web.server.CLEANUP_INTERVAL_S", 1)
    with running_relay(broker, tmp_path / "web") as (relay, _app):
        port = relay.settings.web_port
        silent = socket.create_connection(("127.0.0.1", port), timeout=10)
        half = socket.create_connection(("127.0.0.1", port), timeout=10)
        half.sendall(b"GET /healthz HTTP/1.1\r\n")
        started = time.monotonic()
        try:
            for connection in (silent, half):
                assert connection.recv(1024) == b""  # closed by the server
            assert time.monotonic() - started < 6
        finally:
            silent.close()
            half.close()
