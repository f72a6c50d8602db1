"""The production broker config (mosquitto/), run by the real Mosquitto: logins, the ACL, and TLS."""

from __future__ import annotations

import logging
import ssl
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from scripts import mqtt_users
from scripts.localbroker import ADMIN_USER, LocalBroker
from services.common import topics
from services.common.mqtt import MqttClient
from services.common.settings import ServiceSettings
from services.notifier.const import CLIENT_ID as NOTIFIER_CLIENT_ID
from tests.support import REPO_ROOT, Collector


def unique_camera(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def connect_result(
    broker: LocalBroker, user: str | None, password: str | None, port: int | None = None
) -> ReasonCode:
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
    client.connect(broker.host, port or broker.port)
    client.loop_start()
    try:
        assert answered.wait(5), "no CONNACK"
    finally:
        client.disconnect()
        client.loop_stop()
    return result[0]


def test_anonymous_and_wrong_password_are_refused(broker: LocalBroker) -> None:
    assert connect_result(broker, None, None).is_failure
    assert connect_result(broker, None, None, port=broker.admin_port).is_failure  # the tests' own listener
    assert connect_result(broker, "detector", "not-the-password").is_failure
    assert not connect_result(broker, "detector", broker.passwords["detector"]).is_failure


def delivered(
    broker: LocalBroker, topic: str, *, sender: str, receiver: str, barrier: str, retain: bool
) -> bool:
    """Whether a message ``sender`` publishes on ``topic`` reaches ``receiver``. The sender then publishes
    on ``barrier``, which both may use: that message arriving first proves the other was dropped (the broker
    keeps one publisher's order)."""
    reader = Collector(broker, topic, barrier, user=receiver)
    writer = Collector(broker, user=sender)
    try:
        marker = uuid.uuid4().hex
        writer.publish(topic, marker, retain=retain)
        writer.publish(barrier, marker)
        reader.wait_for(barrier, lambda m: m.payload == marker.encode())
        return any(m.payload == marker.encode() for m in reader.on(topic))
    finally:
        writer.close()
        reader.close()


def can_write(broker: LocalBroker, user: str, topic: str, *, retain: bool = False) -> bool:
    """Whether what ``user`` publishes on ``topic`` reaches the admin; the user's own status topic, which
    it always may publish on, bounds the wait."""
    barrier = topics.service_status(user)
    return delivered(broker, topic, sender=user, receiver=ADMIN_USER, barrier=barrier, retain=retain)


def can_read(broker: LocalBroker, user: str, topic: str) -> bool:
    """Whether ``user`` receives what the admin publishes on ``topic``; the admin's next message, on the
    user's status topic, bounds the wait."""
    barrier = topics.service_status(user)
    return delivered(broker, topic, sender=ADMIN_USER, receiver=user, barrier=barrier, retain=False)


def retained_on(broker: LocalBroker, topic: str) -> list[bytes]:
    """What the broker keeps retained on ``topic``, as a new subscriber gets it: retained messages are sent
    on subscribing, before anything published after the subscription, such as the marker here."""
    barrier = f"sentrycam/test/{uuid.uuid4().hex}"
    reader = Collector(broker, topic, barrier)
    try:
        reader.publish(barrier, b"marker")
        reader.wait_for(barrier)
        return [m.payload for m in reader.on(topic) if m.retain]
    finally:
        reader.close()


# The cameras of the ACL tests on the session broker: their logins are made once, on first use. Their
# names are fixed (no other test uses them), so that every pytest-xdist worker collects the same tests.
OWN, OTHER = "acl-own", "acl-other"
DISCOVERY = topics.hass_config("homeassistant", "binary_sensor", f"sentrycam_{OWN}", "person")


def login(broker: LocalBroker, who: str) -> str:
    """The user name of ``who``: a service user, ``camera`` (the camera OWN), or ``detector-b`` (a further
    detector instance)."""
    if who == "camera":
        broker.camera_env(OWN)
        broker.camera_env(OTHER)
        return mqtt_users.camera_user(OWN)
    if who == "detector-b":
        broker.detector_env("b")
        return mqtt_users.detector_user("b")
    return who


# Every login's job, each line proven (docs/mqtt.md, "Who may do what"): what it publishes reaches the admin,
# what the admin publishes where it reads reaches it.
JOBS: dict[str, dict[str, list[str]]] = {
    "camera": {
        "write": [
            topics.frame(OWN),
            topics.status(OWN),
            topics.info(OWN),
            topics.alarm_state(OWN),
            topics.alarm_result(OWN),
        ],
        "read": [topics.alarm_set(OWN)],
    },
    "detector": {
        "write": [
            topics.event(OWN, "person"),
            topics.label_state(OWN, "person"),
            topics.label_snapshot(OWN, "person"),
            topics.detect_state(OWN),
            topics.config_state(OWN),
            topics.DETECTOR_STATS,
            topics.service_status("detector"),
            DISCOVERY,
        ],
        "read": [
            topics.frame(OWN),
            topics.info(OWN),
            topics.detect_set(OWN),
            topics.detect_state(OWN),
            topics.config_set(OWN),
            topics.hass_status("homeassistant"),
        ],
    },
    # A further instance: the same job, and the status all instances share.
    "detector-b": {
        "write": [
            topics.event(OWN, "person"),
            topics.label_state(OWN, "person"),
            topics.detect_state(OWN),
            topics.config_state(OWN),
            topics.DETECTOR_STATS,
            topics.service_status("detector"),
            DISCOVERY,
        ],
        "read": [topics.frame(OWN), topics.detect_set(OWN), topics.detect_state(OWN), topics.config_set(OWN)],
    },
    "notifier": {
        "write": [topics.alarm_set(OWN), topics.ARMED_STATE, topics.NOTIFIER_STATS],
        "read": [topics.event(OWN, "person"), topics.alarm_result(OWN), topics.ARMED_SET, topics.ARMED_STATE],
    },
    "recorder": {
        "write": [topics.clip(OWN), topics.RECORDER_STATS, topics.service_status("recorder")],
        "read": [topics.frame(OWN), topics.event(OWN, "person"), topics.event(OTHER, "car")],
    },
    "web": {
        "write": [topics.alarm_set(OWN), topics.detect_set(OWN), topics.ARMED_SET, topics.config_set(OWN)],
        "read": [
            topics.frame(OWN),
            topics.config_state(OWN),
            topics.clip(OWN),
            topics.status(OWN),
            topics.info(OWN),
            topics.event(OWN, "person"),
            topics.label_snapshot(OWN, "person"),
            topics.detect_state(OWN),
            topics.alarm_state(OWN),
            topics.alarm_result(OWN),
            topics.ARMED_STATE,
            topics.DETECTOR_STATS,
            topics.NOTIFIER_STATS,
            topics.RECORDER_STATS,
            topics.service_status("notifier"),
        ],
    },
    "homeassistant": {
        "write": [
            topics.alarm_set(OWN),
            topics.detect_set(OWN),
            topics.ARMED_SET,
            topics.hass_status("homeassistant"),
            topics.config_set(OWN),
        ],
        "read": [
            topics.frame(OWN),
            topics.config_state(OWN),
            topics.label_state(OWN, "person"),
            topics.label_snapshot(OWN, "person"),
            topics.detect_state(OWN),
            topics.alarm_state(OWN),
            topics.alarm_result(OWN),
            topics.ARMED_STATE,
            topics.DETECTOR_STATS,
            DISCOVERY,
        ],
    },
}


@pytest.mark.parametrize("who", list(JOBS))
def test_every_login_can_do_its_job(broker: LocalBroker, who: str) -> None:
    user = login(broker, who)
    refused = [f"cannot write {t}" for t in JOBS[who]["write"] if not can_write(broker, user, t)]
    refused += [f"cannot read {t}" for t in JOBS[who]["read"] if not can_read(broker, user, t)]
    assert refused == []


# Hole 3 of issue 11: every publish a login must not make, each refused by the shipped ACL. (login, topic,
# retained): a retained forgery must not be kept either.
FORBIDDEN = [
    # A camera forging events: real emails and the deterrent would follow.
    ("camera", topics.event(OWN, "person"), False),
    ("camera", topics.label_state(OWN, "person"), True),
    ("camera", topics.label_snapshot(OWN, "person"), True),
    # A retained detect/state OFF would silence detection after the detector's next restart.
    ("camera", topics.detect_state(OWN), True),
    ("camera", topics.detect_set(OWN), False),
    ("camera", topics.frame(OTHER), False),
    ("camera", topics.info(OTHER), True),
    ("camera", topics.ARMED_SET, False),
    ("camera", topics.ARMED_STATE, True),
    ("camera", topics.alarm_set(OWN), False),
    ("camera", topics.alarm_set(OTHER), False),
    ("camera", topics.alarm_result(OTHER), True),
    ("camera", topics.DETECTOR_STATS, False),
    # Zones and masks are the owner's (the web relay, Home Assistant): a camera clearing them, or claiming
    # that the detector uses them, would silence the zones an alert rule names.
    ("camera", topics.config_set(OWN), True),
    ("camera", topics.config_state(OWN), True),
    ("camera", topics.NOTIFIER_STATS, True),
    ("camera", DISCOVERY, True),
    # The detector: no camera status, no alarm, no commands, no arming. (Frames and info: see
    # test_a_deny_line_also_refuses_reading.)
    ("detector", topics.status(OWN), True),
    ("detector", topics.alarm_set(OWN), False),
    ("detector", topics.alarm_state(OWN), True),
    ("detector", topics.alarm_result(OWN), True),
    ("detector", topics.detect_set(OWN), False),
    ("detector", topics.ARMED_SET, False),
    ("detector", topics.ARMED_STATE, True),
    ("detector", topics.NOTIFIER_STATS, True),
    ("detector", topics.config_set(OWN), True),  # it reads the owner's zones, it does not write them
    ("detector-b", topics.config_set(OWN), True),
    ("detector-b", topics.status(OWN), True),
    ("detector-b", topics.alarm_set(OWN), False),
    ("detector-b", topics.ARMED_SET, False),
    # The notifier: no events, frames, detection switches, arming commands or discovery configs.
    ("notifier", topics.event(OWN, "person"), False),
    ("notifier", topics.frame(OWN), False),
    ("notifier", topics.detect_set(OWN), False),
    ("notifier", topics.detect_state(OWN), True),
    ("notifier", topics.ARMED_SET, False),
    ("notifier", DISCOVERY, True),
    ("notifier", topics.alarm_result(OWN), True),  # what a camera did is the camera's to say
    ("notifier", topics.config_set(OWN), True),
    # The detector may not forge clip announcements (the relay would list a file it never recorded).
    ("detector", topics.clip(OWN), False),
    # The recorder: only its clips, stats and status; no events, frames, commands, arming or discovery.
    ("recorder", topics.event(OWN, "person"), False),
    ("recorder", topics.label_state(OWN, "person"), True),
    ("recorder", topics.frame(OWN), False),
    ("recorder", topics.info(OWN), True),
    ("recorder", topics.status(OWN), True),
    ("recorder", topics.alarm_set(OWN), False),
    ("recorder", topics.detect_set(OWN), False),
    ("recorder", topics.ARMED_SET, False),
    ("recorder", topics.DETECTOR_STATS, False),
    ("recorder", topics.NOTIFIER_STATS, True),
    ("recorder", topics.service_status("detector"), False),  # not retained: a real detector's may be there
    ("recorder", DISCOVERY, True),
    ("recorder", topics.config_set(OWN), True),
    # The web relay: only its three controls.
    ("web", topics.event(OWN, "person"), False),
    ("web", topics.label_state(OWN, "person"), True),
    ("web", topics.frame(OWN), False),
    ("web", topics.detect_state(OWN), True),
    ("web", topics.alarm_state(OWN), True),
    ("web", topics.alarm_result(OWN), True),
    ("web", topics.ARMED_STATE, True),
    ("web", DISCOVERY, True),
    ("web", topics.NOTIFIER_STATS, True),  # the system page shows the notifier's, it does not make them
    ("web", topics.config_state(OWN), True),  # what the detector uses is the detector's to say
    # Home Assistant: its controls and its own discovery prefix, nothing SentryCam's services say.
    ("homeassistant", topics.event(OWN, "person"), False),
    ("homeassistant", topics.label_state(OWN, "person"), True),
    ("homeassistant", topics.frame(OWN), False),
    ("homeassistant", topics.detect_state(OWN), True),
    ("homeassistant", topics.ARMED_STATE, True),
    ("homeassistant", topics.alarm_result(OWN), True),
    ("homeassistant", topics.config_state(OWN), True),
]


@pytest.mark.parametrize(
    ("who", "topic", "retain"), FORBIDDEN, ids=[f"{who}-{topic}" for who, topic, _ in FORBIDDEN]
)
def test_a_login_cannot_publish_outside_its_role(
    broker: LocalBroker, who: str, topic: str, retain: bool
) -> None:
    user = login(broker, who)
    assert not can_write(broker, user, topic, retain=retain)
    if retain:
        assert retained_on(broker, topic) == []
    # The control: the same login's own kind of publish does arrive, through the same path.
    assert can_write(broker, user, JOBS[who]["write"][0])


def test_a_camera_reads_only_its_own_alarm_commands(broker: LocalBroker) -> None:
    user = login(broker, "camera")
    assert can_read(broker, user, topics.alarm_set(OWN))
    for topic in (topics.alarm_set(OTHER), topics.frame(OTHER), topics.ARMED_STATE, topics.detect_set(OWN)):
        assert not can_read(broker, user, topic), topic


def test_a_deny_line_also_refuses_reading(own_broker: LocalBroker) -> None:
    """Why the detector may still publish frames and info (docs/mqtt.md, "Who may do what"): its event
    grant cam/+/+ covers them, and in Mosquitto 2.0 a `topic deny` line, which wins over that grant, also
    stops the messages the login reads there. It works for what the detector never reads (a camera's status,
    the alarm topics, tested above); for frames it would blind the detector, as this login shows."""
    acl = own_broker.workdir / "acl"
    probe = "deny-probe"
    rules = ["topic read cam/+/frame", "topic write cam/+/+", "topic deny cam/+/frame"]
    acl.write_text(acl.read_text() + "\n".join(["", f"user {probe}", *rules]) + "\n")
    own_broker.add_user(probe)
    camera = unique_camera("deny")
    assert can_write(own_broker, probe, topics.event(camera, "person"))
    assert not can_write(own_broker, probe, topics.frame(camera))
    assert not can_read(own_broker, probe, topics.frame(camera))


class Session:
    """A raw MQTT v5 connection that records whether the broker dropped it, and what it receives."""

    def __init__(
        self,
        broker: LocalBroker,
        user: str,
        client_id: str,
        *,
        port: int | None = None,
        ca_file: Path | None = None,
        keep_session: bool = False,
    ) -> None:
        self.dropped = threading.Event()
        self.received: list[bytes] = []
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self._client.username_pw_set(user, broker.passwords[user])
        if ca_file is not None:
            self._client.tls_set(ca_certs=str(ca_file), cert_reqs=ssl.CERT_REQUIRED)
        self._client.on_connect = lambda *_args: self._connected.set()
        self._client.on_disconnect = lambda *_args: self.dropped.set()
        self._client.on_subscribe = lambda *_args: self._subscribed.set()
        self._client.on_message = lambda _c, _u, message: self.received.append(bytes(message.payload))
        properties = None
        if keep_session:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = 3600
        self._client.connect(
            broker.host, port or broker.port, clean_start=not keep_session, properties=properties
        )
        self._client.loop_start()
        assert self._connected.wait(5), f"{user} did not connect"

    def subscribe(self, topic_filter: str) -> None:
        self._client.subscribe(topic_filter, qos=1)
        assert self._subscribed.wait(5)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def intrude(broker: LocalBroker, user: str, client_ids: list[str], **options: Any) -> None:
    """Connect as ``user`` with each of these client ids in turn, with a clean start (which wipes a session
    of that client id), and leave."""
    for client_id in client_ids:
        Session(broker, user, client_id, **options).close()


def notifier_session_survives_a_camera(broker: LocalBroker) -> tuple[bool, bool]:
    """A camera login connects with the notifier's client id while the notifier is connected, and again
    while it is away with a QoS 1 event queued in its persistent session. Returns (the notifier stayed
    connected, the queued event reached it when it came back)."""
    camera = unique_camera("intruder")
    intruder = broker.camera_env(camera)["MQTT_USERNAME"]
    event_topic = topics.event(camera, "person")
    admin = Collector(broker)
    notifier = Session(broker, "notifier", NOTIFIER_CLIENT_ID, keep_session=True)
    try:
        notifier.subscribe(topics.all_events("person"))
        intrude(broker, intruder, [NOTIFIER_CLIENT_ID, "notifier"])
        stayed = not notifier.dropped.wait(1.0)
        notifier.close()
        admin.publish(event_topic, b"queued while away", qos=1)
        intrude(broker, intruder, [NOTIFIER_CLIENT_ID, "notifier"])
        notifier = Session(broker, "notifier", NOTIFIER_CLIENT_ID, keep_session=True)
        deadline = time.monotonic() + 3
        while b"queued while away" not in notifier.received and time.monotonic() < deadline:
            time.sleep(0.05)
        return stayed, b"queued while away" in notifier.received
    finally:
        notifier.close()
        admin.close()


def camera_stays_connected(broker: LocalBroker, **options: Any) -> bool:
    """Camera b connects with camera a's client ids (the one its service uses, and its login) while a is
    connected: whether a stays connected."""
    first, second = unique_camera("first"), unique_camera("second")
    first_user = broker.camera_env(first)["MQTT_USERNAME"]
    second_user = broker.camera_env(second)["MQTT_USERNAME"]
    victim = Session(broker, first_user, f"camera-{first}", **options)
    try:
        intrude(broker, second_user, [f"camera-{first}", first_user], **options)
        return not victim.dropped.wait(1.0)
    finally:
        victim.close()


def test_a_login_cannot_take_over_another_logins_client_id(own_broker: LocalBroker) -> None:
    """Hole 2 of issue 11: the broker makes every login's client id its user name."""
    assert notifier_session_survives_a_camera(own_broker) == (True, True)
    assert camera_stays_connected(own_broker)


def test_without_the_binding_a_camera_could_take_over_the_notifier(tmp_path: Path) -> None:
    """The test above fails on the old config (mosquitto.conf without use_username_as_clientid)."""
    broker = LocalBroker(tmp_path / "broker")
    config = broker.config_file.read_text()
    assert "use_username_as_clientid true" in config
    broker.config_file.write_text(config.replace("use_username_as_clientid true", ""))
    broker.start()
    try:
        assert notifier_session_survives_a_camera(broker) == (False, False)
        assert not camera_stays_connected(broker)
    finally:
        broker.stop()


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

        # The TLS listener binds client ids to logins too.
        assert camera_stays_connected(broker, port=tls_port, ca_file=certs / "ca.crt")

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
    assert (
        "user cam-porch\ntopic write cam/porch/frame\ntopic write cam/porch/status\n"
        "topic write cam/porch/info\ntopic write cam/porch/alarm/state\ntopic write cam/porch/alarm/result\n"
        "topic read cam/porch/alarm/set\n"
    ) in acl.read_text()
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


def mqtt_users_cli(*args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "scripts.mqtt_users", *args],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
    ).stdout


def test_a_detector_instance_gets_the_detectors_rules_under_its_own_login(tmp_path: Path) -> None:
    shipped = (mqtt_users.CONFIG_DIR / "acl").read_text()
    (tmp_path / "acl").write_text(shipped)
    config = ["--config-dir", str(tmp_path)]
    output = mqtt_users_cli("detector", "garage", *config)
    assert "DETECTOR_INSTANCE=garage\nMQTT_USERNAME=detector-garage\nMQTT_PASSWORD=" in output
    mqtt_users_cli("camera", "porch", *config)
    lines = (tmp_path / "acl").read_text().splitlines()
    rules = mqtt_users.user_rules(lines, "detector")
    assert "topic write cam/+/+" in rules and "topic deny cam/+/alarm/#" in rules
    begin, end = lines.index("# BEGIN detectors"), lines.index("# END detectors")
    assert lines[begin + 1 : end] == ["user detector-garage", *rules]
    assert "detector-garage:" in (tmp_path / "passwd").read_text()
    mqtt_users_cli("detector", "garage", "--remove", *config)
    assert (tmp_path / "acl").read_text() == shipped.replace(
        "# BEGIN cameras\n", "# BEGIN cameras\n" + "\n".join(mqtt_users.camera_acl_block("porch")) + "\n"
    )
    assert "detector-garage:" not in (tmp_path / "passwd").read_text()
    bad = subprocess.run(
        [sys.executable, "-m", "scripts.mqtt_users", "detector", "Bad/Name", *config],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    assert bad.returncode == 2 and "detector name 'Bad/Name'" in bad.stderr
