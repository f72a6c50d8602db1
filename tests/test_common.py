"""The shared library: topic contract, schemas, settings, and the MQTT client against a real broker."""

from __future__ import annotations

import json
import logging
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from pydantic import Field, SecretStr, ValidationError

from scripts.localbroker import LocalBroker
from services.camera.settings import CameraSettings
from services.common import schemas, topics
from services.common.acks import PendingAck, Redeliver
from services.common.jpeg import check_jpeg, check_snapshot, jpeg_size
from services.common.logs import RateLimitedLog
from services.common.mqtt import MqttClient, Route
from services.common.settings import ServiceSettings, describe_error
from services.detector.settings import DetectorSettings
from services.notifier.settings import NotifierSettings
from services.recorder.settings import RecorderSettings
from services.web.settings import WebSettings
from tests.support import (
    PERSON_VIDEO,
    REPO_ROOT,
    Collector,
    camera_info,
    detection_event,
    jpeg,
    read_frames,
    service_env,
)


@pytest.mark.parametrize(
    "bad", ["", "Front", "front/door", "+", "#", "a" * 33, "-front", "fr ont", "..", "ü"]
)
def test_camera_ids_that_could_escape_a_topic_level_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="camera id"):
        topics.frame(bad)


def test_topics_follow_the_contract() -> None:
    assert topics.frame("front") == "cam/front/frame"
    assert topics.status("back-yard_2") == "cam/back-yard_2/status"
    assert topics.event("front", "person") == "cam/front/person"
    assert topics.label_state("front", "traffic light") == "cam/front/traffic_light/state"
    assert topics.alarm_set("front") == "cam/front/alarm/set"
    assert topics.service_status("detector") == "sentrycam/detector/status"
    assert topics.camera_of("cam/front/frame") == "front"
    assert topics.camera_of("cam/+/frame") is None
    assert topics.label_of_event("cam/front/person") == "person"
    assert topics.label_of_event("cam/front/frame") is None
    with pytest.raises(ValueError):
        topics.event("front", "frame")


def test_frame_metadata_round_trips_through_user_properties() -> None:
    meta = schemas.FrameMeta(captured_ms=1_700_000_000_123, seq=7, width=640, height=480)
    assert schemas.FrameMeta.from_properties(meta.to_properties()) == meta
    assert schemas.FrameMeta.from_properties(None) is None


def test_alarm_commands_take_json_or_plain_words() -> None:
    assert schemas.AlarmCommand.parse(b"ON").state == "ON"
    assert schemas.AlarmCommand.parse(b" off ").state == "OFF"
    command = schemas.AlarmCommand.parse(b'{"state": "on", "tone": "siren", "duration": 10}')
    assert (command.state, command.tone, command.duration) == ("ON", "siren", 10)
    for bad in (b"LOUD", b"{", b'{"state": "ON", "duration": -1}', b'{"version": 2, "state": "ON"}', b""):
        with pytest.raises(schemas.BadPayload):
            schemas.AlarmCommand.parse(bad)


def test_detection_events_validate_and_carry_the_snapshot() -> None:
    jpeg = b"\xff\xd8\xff\xe0fake\xff\xd9"
    event = schemas.DetectionEvent(
        type="start",
        event_id="front-1",
        camera="front",
        label="person",
        score=0.7,
        top_score=0.7,
        box=(0.1, 0.2, 0.3, 0.9),
        started_at=1.0,
        frame_time=1.0,
        detected_at=1.02,
        snapshot=schemas.DetectionEvent.encode_snapshot(jpeg),
    )
    again = schemas.DetectionEvent.parse(event.to_json())
    assert again.snapshot_jpeg() == jpeg
    with pytest.raises(schemas.BadPayload):
        schemas.DetectionEvent.parse(event.to_json().replace(b'"front"', b'"../etc"'))
    with pytest.raises(schemas.BadPayload):
        schemas.DetectionEvent.parse(b'{"version": 1, "type": "start"}')
    assert schemas.DetectionEvent.parse_on("cam/front/person", event.to_json()) == event
    with pytest.raises(schemas.BadPayload, match="published on cam/back/person"):
        schemas.DetectionEvent.parse_on("cam/back/person", event.to_json())


def replaced(message: schemas.Message, **fields: object) -> bytes:
    """``message`` as JSON with ``fields`` replaced, as a producer outside the contract might send it."""
    return json.dumps({**json.loads(message.to_json()), **fields}).encode()


def test_every_list_and_string_of_an_event_is_bounded() -> None:
    event = schemas.DetectionEvent.parse(
        detection_event("front", "front-1", jpeg(np.zeros((8, 8, 3), np.uint8)))
    )
    name = "z" * schemas.MAX_NAME_CHARS
    for field, value in (
        ("zones", ["door"] * 100_000),  # the message that made the relay's /api/events 8 MB
        ("zones", [name] * (schemas.MAX_ZONES + 1)),
        ("zones", [name + "z"]),
        ("zones", [""]),
        ("label", "p" * (schemas.MAX_NAME_CHARS + 1)),
        ("event_id", "e" * 65),
        ("camera", "c" * 33),
        ("box", [0.1, 0.2, 0.3]),
        ("box", [0.1, 0.2, 0.3, 0.4, 0.5]),
        ("snapshot", "A" * (schemas.MAX_SNAPSHOT_CHARS + 4)),
    ):
        with pytest.raises(schemas.BadPayload, match=f"not a valid DetectionEvent: {field}"):
            schemas.DetectionEvent.parse(replaced(event, **{field: value}))
    # At every bound at once (names of 4-byte characters), an event still fits the broker's message limit.
    largest = event.model_copy(
        update={
            "event_id": "e" * 64,
            "camera": "c" * 32,
            "label": "l" * 32,
            "zones": ["😀" * schemas.MAX_NAME_CHARS] * schemas.MAX_ZONES,
            "snapshot": "A" * schemas.MAX_SNAPSHOT_CHARS,
        }
    )
    assert schemas.DetectionEvent.parse(largest.to_json()) == largest
    assert len(largest.to_json()) <= schemas.MAX_FRAME_BYTES


def test_every_string_of_the_other_messages_is_bounded() -> None:
    info = camera_info("front")
    for field, value in (
        ("source", "rtsp://cam/" + "s" * schemas.MAX_TEXT_CHARS),
        ("error", "e" * (schemas.MAX_TEXT_CHARS + 1)),
        ("software_version", "v" * (schemas.MAX_NAME_CHARS + 1)),
        ("camera", "Front"),
    ):
        with pytest.raises(schemas.BadPayload, match=f"not a valid CameraInfo: {field}"):
            schemas.CameraInfo.parse(replaced(info, **{field: value}))
    # The camera building its info shortens a long error (OpenCV's run to kilobytes) rather than failing.
    built = schemas.CameraInfo.model_validate({**info.model_dump(), "error": "x" * 5000})
    assert built.error is not None and len(built.error) == schemas.MAX_TEXT_CHARS and built.error[-1] == "…"
    assert schemas.CameraInfo.parse(built.to_json()) == built

    with pytest.raises(schemas.BadPayload, match="not a valid AlarmCommand: tone"):
        schemas.AlarmCommand.parse(b'{"state": "ON", "tone": "' + b"t" * 65 + b'"}')

    stats = schemas.DetectorStats(
        instance="detector-a", interval_s=30, cameras={"front": schemas.CameraStats()}, published_at=1.0
    )
    assert schemas.DetectorStats.parse(stats.to_json()) == stats
    cameras: dict[str, object] = {f"cam{index}": {} for index in range(schemas.MAX_STATS_CAMERAS + 1)}
    cases: list[tuple[str, object]] = [
        ("instance", "i" * (schemas.MAX_NAME_CHARS + 1)),
        ("cameras", cameras),
        ("cameras", {"Not/A/Camera": {}}),
    ]
    for name, bad in cases:
        with pytest.raises(schemas.BadPayload, match=f"not a valid DetectorStats: {name}"):
            schemas.DetectorStats.parse(replaced(stats, **{name: bad}))


def test_a_bad_setting_is_named_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MQTT_PORT", "70000")
    with pytest.raises(Exception) as caught:
        ServiceSettings()
    line = describe_error(caught.value)  # type: ignore[arg-type]
    assert line.startswith("invalid setting MQTT_PORT=70000:")
    assert "\n" not in line


def test_a_bad_password_setting_is_not_echoed() -> None:
    env = service_env({"MQTT_PASSWORD": "hunter2", "MQTT_CA_FILE": "/nonexistent/ca.pem"})
    code = "from services.common.settings import *; load_settings(ServiceSettings, 'x')"
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "sentrycam-x: invalid setting MQTT_CA_FILE=/nonexistent/ca.pem: no such file: /nonexistent/ca.pem"
    ]
    assert "hunter2" not in result.stderr


def test_a_refused_secret_key_is_not_echoed_either() -> None:
    class Keyed(ServiceSettings):
        web_secret_key: SecretStr = Field(min_length=32)

    with pytest.raises(ValidationError) as caught:
        Keyed(web_secret_key="short-secret")
    line = describe_error(caught.value)
    assert line.startswith("invalid setting WEB_SECRET_KEY: ") and "short-secret" not in line


def test_rate_limited_log_reports_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    log = RateLimitedLog(logging.getLogger("test"), interval_s=0.2)
    with caplog.at_level(logging.WARNING):
        for _ in range(5):
            log.report("front", "bad frame")
        time.sleep(0.25)
        log.report("front", "bad frame")
    assert [r.getMessage() for r in caplog.records] == [
        "bad frame",
        "bad frame (4 more since the last report)",
    ]


def _client(broker: LocalBroker, monkeypatch: pytest.MonkeyPatch, user: str, status: str) -> MqttClient:
    for key, value in broker.env(user).items():
        monkeypatch.setenv(key, value)
    return MqttClient(
        ServiceSettings(), client_id=f"test-{user}", status_topic=status, logger=logging.getLogger(user)
    )


def test_client_waits_for_a_late_broker_and_resubscribes_after_a_restart(
    own_broker: LocalBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    own_broker.stop()
    client = _client(own_broker, monkeypatch, "detector", topics.service_status("detector"))
    received: list[bytes] = []
    client.serve({topics.ALL_FRAMES: Route(lambda message: received.append(bytes(message.payload)))})
    client.start()
    try:
        time.sleep(1.5)
        assert not client.connected.is_set()
        own_broker.start()
        assert client.connected.wait(10), "did not connect once the broker came up"

        own_broker.restart(down_s=0.5)
        assert client.connected.wait(10), "did not reconnect after the broker restarted"
        watcher = Collector(own_broker, topics.service_status("detector"))
        deadline = time.monotonic() + 5
        while not received and time.monotonic() < deadline:
            watcher.publish(topics.frame("front"), b"frame", qos=0)
            time.sleep(0.1)
        assert received, "subscription was not restored after the reconnect"
        # The old broker sent the will at its shutdown, so the new one starts with a retained "offline": an
        # "online" here is the client's own. The watcher may hear "offline" first, as it can subscribe
        # before the "online" queued just before `connected` is set reaches the broker.
        watcher.wait_for(topics.service_status("detector"), lambda m: m.payload == b"online", what="online")
    finally:
        client.stop()
    assert watcher.wait_for(topics.service_status("detector"), lambda m: m.payload == b"offline")
    watcher.close()


def _nodelay(client: MqttClient) -> bool:
    sock = client.paho.socket()
    assert isinstance(sock, socket.socket)
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


def test_client_sends_without_nagle_delay_also_after_a_reconnect(
    own_broker: LocalBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With Nagle's algorithm on, frames published at a high rate reached subscribers in bursts, up to
    # 20 ms late (docs/benchmarks.md): every connection, first or renewed, must switch it off.
    client = _client(own_broker, monkeypatch, "detector", topics.service_status("detector"))
    client.start()
    try:
        assert client.connected.wait(10)
        assert _nodelay(client)
        first = client.paho.socket()
        own_broker.restart(down_s=0.5)
        deadline = time.monotonic() + 10
        reconnected = False
        while not reconnected and time.monotonic() < deadline:
            time.sleep(0.05)
            reconnected = client.connected.is_set() and client.paho.socket() is not first
        assert reconnected, "did not reconnect"
        assert _nodelay(client)
    finally:
        client.stop()


def test_a_failing_handler_does_not_stop_the_client(
    broker: LocalBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = _client(broker, monkeypatch, "web", topics.service_status("web"))
    received: list[bytes] = []

    def handler(message: object) -> None:
        payload = message.payload  # type: ignore[attr-defined]
        if payload == b"boom":
            raise RuntimeError("handler bug")
        received.append(payload)

    client.serve({topics.status("handlertest"): Route(handler)})
    client.start()
    try:
        assert client.connected.wait(5)
        publisher = Collector(broker)
        publisher.publish(topics.status("handlertest"), b"boom")
        publisher.publish(topics.status("handlertest"), b"online")
        deadline = time.monotonic() + 5
        while not received and time.monotonic() < deadline:
            time.sleep(0.05)
        assert received == [b"online"]
        assert client.handler_errors == 1
        publisher.close()
    finally:
        client.stop()


def test_env_example_lists_every_setting() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scripts.envfile", "--check"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_an_unreachable_broker_is_reported_not_silent(
    own_broker: LocalBroker, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    own_broker.stop()
    client = _client(own_broker, monkeypatch, "notifier", topics.service_status("notifier"))
    with caplog.at_level(logging.WARNING):
        client.start()
        try:
            deadline = time.monotonic() + 5
            while "cannot reach the broker" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            client.stop()
    assert f"cannot reach the broker at 127.0.0.1:{own_broker.port}; retrying with backoff" in caplog.text


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter, as a service process would run."""
    return subprocess.run(
        [sys.executable, "-c", code],
        env=service_env({}),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=20,
    )


STOP_WHILE_WAITING = """
import os, signal, sys
from services.common.service import stop_on_signals
stop = stop_on_signals()
# What stop.wait() does for a moment on every call: hold the event's own lock. A signal arriving then used
# to run a Python handler that called stop.set() in this same thread and deadlocked on that lock.
with stop._cond:
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(1000):
        pass
print("stopped" if stop.wait(5) else "not stopped", flush=True)
"""


def test_a_stop_signal_during_stop_wait_cannot_deadlock() -> None:
    result = run_python(STOP_WHILE_WAITING)
    assert result.stdout.strip() == "stopped", result.stderr


def _session_client(broker: LocalBroker, monkeypatch: pytest.MonkeyPatch, name: str) -> MqttClient:
    """A client with a persistent session, as the services that must not lose a message have."""
    for key, value in broker.env("web").items():
        monkeypatch.setenv(key, value)
    return MqttClient(
        ServiceSettings(),
        client_id=f"test-{name}",
        status_topic=topics.service_status("web"),
        logger=logging.getLogger(name),
        persistent_session_s=60,
    )


def _wait(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def test_a_message_the_handler_could_not_store_comes_again_and_is_handled(
    own_broker: LocalBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = _session_client(own_broker, monkeypatch, "redeliver")
    stored: list[bytes] = []
    attempts: list[bool] = []

    def store(message: mqtt.MQTTMessage) -> None:
        attempts.append(message.dup)
        if len(attempts) == 1:
            raise Redeliver("database is locked")
        stored.append(bytes(message.payload))

    client.serve({topics.status("redeliver"): Route(store, qos=1)})
    client.start()
    publisher = Collector(own_broker)
    try:
        assert client.connected.wait(10)
        publisher.publish(topics.status("redeliver"), b"online", qos=1)
        assert _wait(lambda: stored == [b"online"]), f"not handled again: attempts {attempts}"
        assert attempts == [False, True], "the second delivery must be the broker's redelivery"
        assert client.redeliveries == 1
        # Acknowledged once stored: a restart of the client does not bring it a third time.
        client.stop()
        client = _session_client(own_broker, monkeypatch, "redeliver")
        client.serve({topics.status("redeliver"): Route(store, qos=1)})
        client.start()
        assert client.connected.wait(10)
        time.sleep(1.0)
        assert stored == [b"online"]
    finally:
        publisher.close()
        client.stop()


def test_a_held_acknowledgement_is_sent_only_once_the_other_thread_stored_the_message(
    own_broker: LocalBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = _session_client(own_broker, monkeypatch, "held")
    pending: queue.Queue[tuple[bytes, PendingAck]] = queue.Queue()
    stored: list[bytes] = []

    def receive(message: mqtt.MQTTMessage) -> None:
        pending.put((bytes(message.payload), client.hold_ack(message)))

    def write() -> None:
        payload, ack = pending.get(timeout=10)
        ack.failed("disk full")  # the first write fails
        payload, ack = pending.get(timeout=10)
        stored.append(payload)
        ack.done()

    client.serve({topics.status("held"): Route(receive, qos=1)})
    writer = threading.Thread(target=write)
    writer.start()
    client.start()
    publisher = Collector(own_broker)
    try:
        assert client.connected.wait(10)
        publisher.publish(topics.status("held"), b"offline", qos=1)
        writer.join(15)
        assert stored == [b"offline"]
        assert client.redeliveries == 1
        assert pending.empty()
    finally:
        publisher.close()
        client.stop()


FAILING_SERVICE = """
from services.common.service import Presence, ServiceHandler, StartupError, run_service
from services.common.settings import ServiceSettings

class Broken(ServiceHandler[ServiceSettings]):
    service = "broken"

    @classmethod
    def presence(cls, settings):
        return Presence("broken", "sentrycam/broken/status")

    def __init__(self, settings, client, logger):
        raise StartupError("BROKEN_DIR", "permission denied", "/root/x")

run_service(ServiceSettings, Broken)
"""


def test_a_startup_problem_is_one_line_naming_the_setting_and_exit_code_2() -> None:
    result = run_python(FAILING_SERVICE)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "sentrycam-broken: invalid setting BROKEN_DIR=/root/x: permission denied"
    ]


def test_an_empty_setting_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MQTT_USERNAME", "")
    monkeypatch.setenv("MQTT_PORT", "")
    monkeypatch.setenv("MQTT_CA_FILE", "")
    settings = ServiceSettings()
    assert (settings.mqtt_username, settings.mqtt_port, settings.mqtt_ca_file) == (None, 1883, None)


def forged_jpeg(width: int, height: int) -> bytes:
    """A few hundred bytes whose frame header claims ``width`` x ``height``: a decompression bomb."""
    real = jpeg(np.zeros((8, 8, 3), np.uint8))
    start = real.index(b"\xff\xc0") + 5
    return real[:start] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + real[start + 4 :]


@pytest.mark.parametrize("progressive", [False, True])
def test_the_jpeg_size_is_read_from_the_header_as_the_decoder_sees_it(progressive: bool) -> None:
    for image in read_frames(PERSON_VIDEO, 100, 102):
        small = cv2.resize(image, (333, 187))
        ok, encoded = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)])
        assert ok
        assert jpeg_size(encoded.tobytes()) == (333, 187)


def test_a_jpeg_bomb_is_refused_before_it_is_decoded() -> None:
    bomb = forged_jpeg(32768, 32768)
    assert len(bomb) < 1000
    assert jpeg_size(bomb) == (32768, 32768)
    with pytest.raises(schemas.BadPayload, match="32768x32768 pixels, more than"):
        check_snapshot(bomb)
    with pytest.raises(schemas.BadPayload, match="bytes, more than"):
        check_jpeg(b"\xff\xd8" + bytes(2000), max_bytes=1000, max_pixels=100)
    real = jpeg(read_frames(PERSON_VIDEO, 100, 100)[0])
    for bad in (b"", b"GIF89a", b"\xff\xd8", real[:20], b"\xff\xd8\xff\xc0\x00\x01", forged_jpeg(0, 10)):
        with pytest.raises(schemas.BadPayload):
            jpeg_size(bad)
    assert check_snapshot(real) == (768, 432)


def test_every_path_setting_is_absolute_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resolved once at start, in the settings, for every service: a relative WEB_DATA_DIR (as
    .env.example writes it) once made Flask look for snapshots under the app's folder."""
    monkeypatch.chdir(tmp_path)
    for name in ("labels.txt", "ca.pem", "siren.wav"):
        (tmp_path / name).write_text("x")
    found = {
        "web": WebSettings(_env_file=None, web_record_dir="rec", web_password="long enough password"),
        "recorder": RecorderSettings(_env_file=None),
        "notifier": NotifierSettings(_env_file=None, smtp_ca_file="ca.pem"),
        "detector": DetectorSettings(
            _env_file=None, detector_model="m.tflite", detector_labels="labels.txt", mqtt_ca_file="ca.pem"
        ),
        "camera": CameraSettings(_env_file=None, camera_source="0", alarm_sound="siren.wav"),
    }
    paths = {
        f"{service}.{name}": value
        for service, settings in found.items()
        for name, value in settings.model_dump().items()
        if isinstance(value, Path)
    }
    assert paths == {
        "web.web_data_dir": tmp_path / "data" / "web",
        "web.web_record_dir": tmp_path / "rec",
        "recorder.record_dir": tmp_path / "data" / "recordings",
        "notifier.notify_data_dir": tmp_path / "data",
        "notifier.smtp_ca_file": tmp_path / "ca.pem",
        "detector.detector_model": tmp_path / "m.tflite",
        "detector.detector_labels": tmp_path / "labels.txt",
        "detector.mqtt_ca_file": tmp_path / "ca.pem",
        "detector.detector_data_dir": tmp_path / "data" / "detector",
        "camera.alarm_sound": tmp_path / "siren.wav",
    }
