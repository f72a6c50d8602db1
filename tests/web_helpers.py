"""Helpers for the web relay tests: real frames of the shared footage, a publishing client, a relay in
process for Flask's test client, and a logged-in session."""

from __future__ import annotations

import functools
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import paho.mqtt.client as mqtt
from flask import Flask
from flask.testing import FlaskClient
from paho.mqtt.enums import CallbackAPIVersion

from scripts.localbroker import ADMIN_USER, LocalBroker, free_port
from services.common import schemas, topics
from services.common.service import create_handler
from services.common.settings import setup_logging
from services.web.relay import WebRelay
from services.web.settings import WebSettings
from tests.support import PERSON_VIDEO

PASSWORD = "correct horse battery staple"
USERNAME = "owner"


@functools.cache
def footage_frames(count: int = 12, first: int = 120, step: int = 5) -> tuple[bytes, ...]:
    """JPEGs (640x480) of the shared person clip, people in view; consecutive ones differ."""
    capture = cv2.VideoCapture(str(PERSON_VIDEO))
    capture.set(cv2.CAP_PROP_POS_FRAMES, first)
    frames: list[bytes] = []
    index = 0
    while len(frames) < count:
        ok, image = capture.read()
        assert ok, "could not read the shared footage"
        if index % step == 0:
            image = cv2.resize(image, (640, 480))
            frames.append(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes())
        index += 1
    capture.release()
    return tuple(frames)


class Publisher:
    """An admin MQTT client that publishes frames (with their user properties), states and events."""

    def __init__(self, broker: LocalBroker) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.username_pw_set(ADMIN_USER, broker.passwords[ADMIN_USER])
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.seq = 0

    def frame(self, camera: str, jpeg: bytes) -> None:
        meta = schemas.FrameMeta(captured_ms=int(time.time() * 1000), seq=self.seq, width=640, height=480)
        self.seq += 1
        self.client.publish(topics.frame(camera), jpeg, qos=0, properties=meta.to_properties())

    def send(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def announce(self, camera: str, online: bool = True) -> None:
        info = schemas.CameraInfo(
            camera=camera,
            source_kind="file",
            source=PERSON_VIDEO.name,
            state="streaming",
            width=640,
            height=480,
            fps=10.0,
            software_version="test",
            updated_at=time.time(),
        )
        self.send(topics.info(camera), info.to_json(), retain=True)
        self.send(topics.status(camera), topics.ONLINE if online else topics.OFFLINE, retain=True)

    def forget(self, camera: str) -> None:
        """Clear the retained camera topics so the shared broker does not keep test cameras forever."""
        for topic in (topics.status(camera), topics.info(camera)):
            self.send(topic, b"", retain=True)

    @contextmanager
    def streaming(self, camera: str, fps: float = 10.0) -> Iterator[None]:
        """Publish the footage frames in a loop at ``fps`` while the block runs."""
        stop = threading.Event()

        def run() -> None:
            frames = footage_frames(count=40, step=2)  # 4 s of distinct pictures before the loop
            index = 0
            while not stop.wait(1 / fps):
                self.frame(camera, frames[index % len(frames)])
                index += 1

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def detection(
    camera: str, event_id: str, kind: str = "start", snapshot: bytes | None = None, started_at: float = 0.0
) -> bytes:
    started = started_at or time.time()
    event = schemas.DetectionEvent(
        type=kind,
        event_id=event_id,
        camera=camera,
        label="person",
        score=0.7,
        top_score=0.8 if kind != "start" else 0.7,
        box=(0.3, 0.2, 0.5, 0.9),
        zones=[],
        started_at=started,
        ended_at=started + 5 if kind == "end" else None,
        frame_time=started,
        detected_at=started + 0.03,
        snapshot=schemas.DetectionEvent.encode_snapshot(snapshot) if snapshot else None,
    )
    return event.to_json()


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


def wait_until(condition: Any, timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} not met within {timeout} s")
