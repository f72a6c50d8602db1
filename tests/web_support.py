"""Helpers for the web relay tests: a relay in process for Flask's test client, a logged-in session, a
login over real HTTP, a forged JPEG, the process's peak memory, Debian's Chromium (the ``browser`` fixture
is in conftest.py) and a login through it, and real clips with their announcements."""

from __future__ import annotations

import http.client
import re
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from flask import Flask
from flask.testing import FlaskClient
from playwright.sync_api import Page, expect

from scripts.localbroker import LocalBroker, free_port
from services.common import schemas
from services.common.logs import setup_logging
from services.common.service import create_handler
from services.recorder.mp4 import ClipWriter
from services.web.relay import WebRelay
from services.web.settings import WebSettings
from tests.support import jpeg, relay_mqtt_env

PASSWORD = "correct horse battery staple"
USERNAME = "owner"

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def web_settings(broker: LocalBroker, data_dir: Path, **extra: Any) -> WebSettings:
    env = relay_mqtt_env(broker, data_dir)
    values: dict[str, Any] = {
        "mqtt_host": env["MQTT_HOST"],
        "mqtt_port": int(env["MQTT_PORT"]),
        "mqtt_username": env["MQTT_USERNAME"],
        "mqtt_password": env["MQTT_PASSWORD"],
        "web_username": USERNAME,
        "web_password": PASSWORD,
        "web_data_dir": data_dir,
        "web_host": "127.0.0.1",
        "web_port": free_port(),
        **extra,
    }
    return WebSettings(_env_file=None, **values)


@contextmanager
def running_relay(broker: LocalBroker, data_dir: Path, **extra: Any) -> Iterator[tuple[WebRelay, Flask]]:
    """The relay in process, started and stopped as ``run_service`` does, without its main loop: the tests
    call ``check_broker`` themselves. Its server listens too, though the Flask test client needs none."""
    settings = web_settings(broker, data_dir, **extra)
    relay = create_handler(WebRelay, settings, setup_logging("web", "INFO"))
    assert isinstance(relay, WebRelay)
    relay.start()
    relay.client.start()
    try:
        assert relay.client.connected.wait(10), "the relay did not connect to the broker"
        yield relay, relay.app
    finally:
        relay.stop()
        relay.client.stop()
        relay.close()


def csrf_token(html: str) -> str:
    match = re.search(r'name="csrf-token" content="([^"]+)"', html) or re.search(
        r'name="csrf_token" value="([^"]+)"', html
    )
    assert match, "no CSRF token on the page"
    return match.group(1)


def log_in(client: FlaskClient, password: str = PASSWORD) -> tuple[int, str]:
    """Log in through the form like a browser; returns the status and the CSRF token of the session."""
    token = csrf_token(client.get("/login").get_data(as_text=True))
    response = client.post("/login", data={"username": USERNAME, "password": password, "csrf_token": token})
    if response.status_code != 302:
        return response.status_code, token
    return 302, csrf_token(client.get("/").get_data(as_text=True))


def http_login_form(port: int) -> tuple[str, str]:
    """GET /login over HTTP like a browser: the session cookie (``name=value``) and the form's CSRF token."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", "/login")
        response = connection.getresponse()
        html = response.read().decode()
        cookie = (response.getheader("Set-Cookie") or "").split(";", 1)[0]
    finally:
        connection.close()
    assert cookie.startswith("sentrycam_session="), cookie
    return cookie, csrf_token(html)


def http_login(port: int, cookie: str, token: str, password: str) -> int:
    """POST the login form over HTTP; the answer's status."""
    return post_login(port, cookie, token, password)[0]


def http_session(port: int) -> str:
    """A signed-in session over real HTTP: its cookie (``name=value``)."""
    status, cookie = post_login(port, *http_login_form(port), PASSWORD)
    assert status == 302 and cookie.startswith("sentrycam_session="), (status, cookie)
    return cookie


def post_login(port: int, cookie: str, token: str, password: str) -> tuple[int, str]:
    """POST the login form over HTTP; the answer's status and the session cookie it sets, if any."""
    body = urllib.parse.urlencode({"username": USERNAME, "password": password, "csrf_token": token})
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request(
            "POST",
            "/login",
            body=body,
            headers={"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"},
        )
        response = connection.getresponse()
        response.read()
        return response.status, (response.getheader("Set-Cookie") or "").split(";", 1)[0]
    finally:
        connection.close()


def jpeg_bomb(width: int = 32768, height: int = 32768) -> bytes:
    """A few hundred bytes whose frame header claims ``width`` x ``height`` pixels (like ``forged_jpeg`` in
    tests/test_common.py): decoding it would take gigabytes."""
    real = jpeg(np.zeros((8, 8, 3), np.uint8))
    start = real.index(b"\xff\xc0") + 5
    return real[:start] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + real[start + 4 :]


def reset_peak_memory() -> int:
    """Start measuring this process's peak resident memory again; returns the resident memory now, bytes."""
    Path("/proc/self/clear_refs").write_text("5")
    return memory("VmRSS")


def peak_memory() -> int:
    """The most resident memory of this process since ``reset_peak_memory``, bytes."""
    return memory("VmHWM")


def memory(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/self/status")


def browser_log_in(page: Page, base: str) -> None:
    """Log in through the login form in Chromium; lands on the live page."""
    page.goto(f"{base}/")
    expect(page).to_have_url(f"{base}/login?next=/")
    page.fill("input[name=username]", USERNAME)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{base}/")


def write_clip_file(
    path: Path, frames: list[npt.NDArray[np.uint8]], first_ms: int, fps: float = 10.0, done: bool = True
) -> ClipWriter:
    """A real clip as the recorder writes it (its ``ClipWriter``): H.264 in a fragmented MP4, timed by
    capture times ``fps`` apart; ``done`` closes it (remuxed, seekable), else it stays open and growing."""
    height, width = frames[0].shape[:2]
    writer = ClipWriter.open(path, width, height)
    for index, frame in enumerate(frames):
        writer.add(frame, first_ms + round(index * 1000 / fps))
    if done:
        writer.close()
    return writer


def clip_announcement(
    camera: str,
    clip_id: str,
    path: str,
    event_ids: list[str],
    *,
    state: str = "done",
    started_at: float = 1_763_780_000.0,
    duration_s: float = 6.0,
    size: int = 1000,
) -> bytes:
    """The recorder's message on ``cam/<camera>/clip``."""
    return schemas.ClipInfo(
        camera=camera,
        clip_id=clip_id,
        event_ids=event_ids,
        path=path,
        started_at=started_at,
        ended_at=started_at + duration_s,
        duration_s=duration_s,
        bytes=size,
        state=state,
    ).to_json()
