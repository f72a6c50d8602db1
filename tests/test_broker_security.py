"""The production broker config (mosquitto/), run by the real Mosquitto: logins, the ACL, and TLS."""

from __future__ import annotations

import logging
import ssl
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from scripts import mqtt_users
from scripts.localbroker import ADMIN_USER, LocalBroker
from services.common import topics
from services.common.mqtt import MqttClient
from services.common.settings import ServiceSettings
from tests.support import REPO_ROOT, Collector


def unique_camera(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def connect_result(broker: LocalBroker, user: str | None, password: str | None) -> ReasonCode:
    """The broker's answer to a CONNECT with these credentials."""
    answered = threading.Event()
    result: list[ReasonCode] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if user is not None:
        client.username_pw_set(user, password)

    def on_connect(_c: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
        result.append(reason)
        answered.set()

    client.on_connect = on_connect
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        assert answered.wait(5), "no CONNACK"
    finally:
        client.disconnect()
        client.loop_stop()
    return result[0]


def test_anonymous_and_wrong_password_are_refused(broker: LocalBroker) -> None:
    assert connect_result(broker, None, None).is_failure
    assert connect_result(broker, "detector", "not-the-password").is_failure
    assert not connect_result(broker, "detector", broker.passwords["detector"]).is_failure


def delivered(broker: LocalBroker, topic: str, *, sender: str, receiver: str, barrier: str) -> bool:
    """Whether a message ``sender`` publishes on ``topic`` reaches ``receiver``. The sender then publishes
    on ``barrier``, which both may use: that message arriving first proves the other was dropped."""
    reader = Collector(broker, topic, barrier, user=receiver)
    writer = Collector(broker, user=sender)
    try:
        marker = uuid.uuid4().hex
        writer.publish(topic, marker)
        writer.publish(barrier, marker)
        reader.wait_for(barrier, lambda m: m.payload == marker.encode())
        return any(m.payload == marker.encode() for m in reader.on(topic))
    finally:
        writer.close()
        reader.close()


def can_write(broker: LocalBroker, user: str, topic: str) -> bool:
    """Whether what ``user`` publishes on ``topic`` reaches the admin; the user's own status topic, which
    it always may publish on, bounds the wait."""
    return delivered(broker, topic, sender=user, receiver=ADMIN_USER, barrier=topics.service_status(user))


def can_read(broker: LocalBroker, user: str, topic: str) -> bool:
    """Whether ``user`` receives what the admin publishes on ``topic``; the admin's next message, on the
    user's status topic, bounds the wait."""
    return delivered(broker, topic, sender=ADMIN_USER, receiver=user, barrier=topics.service_status(user))


def test_a_camera_stays_inside_its_own_topics(broker: LocalBroker) -> None:
    mine, other = unique_camera("own"), unique_camera("other")
    broker.camera_env(mine)
    broker.camera_env(other)
    user = mqtt_users.camera_user(mine)
    assert can_write(broker, user, topics.frame(mine))
    assert can_write(broker, user, topics.info(mine))
    assert not can_write(broker, user, topics.frame(other))
    assert not can_write(broker, user, topics.alarm_set(other))
    assert not can_write(broker, user, topics.ARMED_SET)
    assert can_read(broker, user, topics.alarm_set(mine))
    assert not can_read(broker, user, topics.alarm_set(other))
    assert not can_read(broker, user, topics.frame(other))
    assert not can_read(broker, user, topics.ARMED_STATE)


def test_every_service_user_can_do_its_job_and_no_more(broker: LocalBroker) -> None:
    cam = unique_camera("svc")
    jobs = {
        "detector": {
            "read": [topics.frame(cam), topics.info(cam), topics.status(cam), topics.detect_set(cam)],
            "write": [
                topics.event(cam, "person"),
                topics.label_state(cam, "person"),
                topics.label_snapshot(cam, "person"),
                topics.detect_state(cam),
                topics.DETECTOR_STATS,
                topics.hass_config("homeassistant", "camera", f"sentrycam_{cam}", "frame"),
            ],
            "not write": [topics.ARMED_SET, topics.alarm_set(cam)],
        },
        "notifier": {
            "read": [topics.event(cam, "person"), topics.ARMED_SET, topics.info(cam)],
            "write": [topics.alarm_set(cam), topics.ARMED_STATE],
            "not write": [topics.frame(cam), topics.detect_set(cam)],
        },
        "web": {
            "read": [topics.frame(cam), topics.label_snapshot(cam, "person"), topics.DETECTOR_STATS],
            "write": [topics.alarm_set(cam), topics.detect_set(cam), topics.ARMED_SET],
            "not write": [topics.frame(cam), topics.ARMED_STATE, topics.label_state(cam, "person")],
        },
        "homeassistant": {
            "read": [
                topics.frame(cam),
                topics.label_state(cam, "person"),
                topics.hass_status("homeassistant"),
            ],
            "write": [topics.alarm_set(cam), topics.detect_set(cam), topics.ARMED_SET],
            "not write": [topics.frame(cam), topics.label_state(cam, "person"), topics.ARMED_STATE],
        },
    }
    refused = []
    for user, job in jobs.items():
        refused += [f"{user} cannot read {t}" for t in job["read"] if not can_read(broker, user, t)]
        refused += [f"{user} cannot write {t}" for t in job["write"] if not can_write(broker, user, t)]
        refused += [f"{user} may write {t}" for t in job["not write"] if can_write(broker, user, t)]
    assert refused == []


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca(directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", f"/CN={name}", "-keyout", str(directory / "ca.key"), "-out", str(directory / "ca.crt"),
    )  # fmt: skip
    return directory / "ca.crt"


def make_server_cert(ca_dir: Path, host: str) -> None:
    """server.key and server.crt for ``host`` (an IP address here), signed by the CA in ``ca_dir``."""
    key, csr, crt = ca_dir / "server.key", ca_dir / "server.csr", ca_dir / "server.crt"
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={host}", "-keyout", str(key), "-out", str(csr)
    )
    extensions = ca_dir / "san.ext"
    extensions.write_text(f"subjectAltName=IP:{host}\n")
    openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca_dir / "ca.crt"), "-CAkey", str(ca_dir / "ca.key"),
        "-CAcreateserial", "-days", "2", "-extfile", str(extensions), "-out", str(crt),
    )  # fmt: skip
    key.chmod(0o644)  # mosquitto runs as the test's user and must read it


def test_tls_listener_serves_the_projects_ca_and_refuses_a_wrong_one(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    make_ca(certs, "SentryCam test CA")
    make_server_cert(certs, "127.0.0.1")
    wrong_ca = make_ca(tmp_path / "wrong", "Someone else's CA")
    broker = LocalBroker(tmp_path / "broker")
    tls_port = broker.enable_tls(certs)
    broker.start()
    try:
        # A service, configured the documented way, talks to the TLS listener.
        settings = ServiceSettings(
            mqtt_host="127.0.0.1",
            mqtt_port=tls_port,
            mqtt_username="notifier",
            mqtt_password=broker.passwords["notifier"],
            mqtt_tls=True,
            mqtt_ca_file=certs / "ca.crt",
        )
        client = MqttClient(
            settings,
            client_id="tls-test",
            status_topic=topics.service_status("notifier"),
            logger=logging.getLogger("tls-test"),
        )
        watcher = Collector(broker, topics.ARMED_STATE)
        client.start()
        try:
            assert client.connected.wait(10), "no TLS connection"
            client.publish(topics.ARMED_STATE, "OFF", qos=1).wait_for_publish(5)
            assert watcher.wait_for(topics.ARMED_STATE).payload == b"OFF"
        finally:
            client.stop()
            watcher.close()

        stranger = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        stranger.username_pw_set(ADMIN_USER, broker.passwords[ADMIN_USER])
        stranger.tls_set(ca_certs=str(wrong_ca), cert_reqs=ssl.CERT_REQUIRED)
        with pytest.raises(ssl.SSLCertVerificationError):
            stranger.connect("127.0.0.1", tls_port)
    finally:
        broker.stop()


def test_camera_users_get_their_acl_block_and_removal_drops_it(tmp_path: Path) -> None:
    acl = tmp_path / "acl"
    acl.write_text("user web\ntopic read cam/#\n\n# BEGIN cameras\n# END cameras\n")
    output = subprocess.run(
        [sys.executable, "-m", "scripts.mqtt_users", "camera", "porch", "--config-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
    ).stdout
    assert "CAMERA_ID=porch\nMQTT_USERNAME=cam-porch\nMQTT_PASSWORD=" in output
    assert "user cam-porch\ntopic write cam/porch/#\ntopic read cam/porch/alarm/set\n" in acl.read_text()
    assert "cam-porch:" in (tmp_path / "passwd").read_text()
    services = subprocess.run(
        [sys.executable, "-m", "scripts.mqtt_users", "services", "--config-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
    ).stdout
    for service in ("detector", "notifier", "web"):
        assert f"\n{service.upper()}_MQTT_PASSWORD=" in services
    assert "\n# Home Assistant's MQTT integration: user homeassistant, password " in services
    removed = subprocess.run(
        [
            sys.executable,
            "-m",
            "scripts.mqtt_users",
            "camera",
            "porch",
            "--remove",
            "--config-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
    ).stdout
    assert "mosquitto_pub" in removed and "-t cam/porch/info -r -n" in removed
    assert "cam-porch" not in acl.read_text()
    assert "cam-porch:" not in (tmp_path / "passwd").read_text()
    assert acl.read_text().startswith("user web\ntopic read cam/#\n")
