"""Helpers for the web relay tests: a relay in process for Flask's test client, and a logged-in session."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from scripts.localbroker import LocalBroker, free_port
from services.common.service import create_handler
from services.common.settings import setup_logging
from services.web.relay import WebRelay
from services.web.settings import WebSettings

PASSWORD = "correct horse battery staple"
USERNAME = "owner"


def web_settings(broker: LocalBroker, data_dir: Path, **extra: Any) -> WebSettings:
    env = broker.env("web")
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
