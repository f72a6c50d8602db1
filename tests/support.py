"""Test helpers every test file shares: the one admin MQTT client, service processes, the shared footage as
frames, clips and JPEGs, and the one detection event builder."""

from __future__ import annotations

import functools
import hashlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties

from scripts.localbroker import ADMIN_USER, LocalBroker
from services.common import schemas, topics
from services.common.settings import ServiceSettings

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = Path(os.environ.get("SHARED_DIR", REPO_ROOT.parent / "shared")).resolve()
MEDIA_DIR = SHARED_DIR / "media"
MODEL_DIR = SHARED_DIR / "models" / "ssd_mobilenet_v1_coco_quant"
PERSON_VIDEO = MEDIA_DIR / "video" / "one-by-one-person-detection.mp4"
CAR_VIDEO = MEDIA_DIR / "video" / "car-detection.mp4"

# Drops root for a child process: util-linux's setpriv, on every Debian.
UNPRIVILEGED = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]

# Settings a developer may have exported that must not leak into the services under test.
_LEAKY_PREFIXES = ("MQTT_", "CAMERA_", "ALARM_", "DETECTOR_", "NOTIFY_", "SMTP_", "EMAIL_", "WEB_", "HA_")


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    properties: Properties | None
    at: float = field(default_factory=time.time)


def read_frames(video: Path, first: int = 0, last: int | None = None) -> list[np.ndarray]:
    """Frames ``first`` to ``last`` (inclusive; to the end when None) of a video, read one by one: seeking
    an MP4 lands on key frames, not on the frame asked for."""
    capture = cv2.VideoCapture(str(video))
    frames: list[np.ndarray] = []
    index = 0
    while last is None or index <= last:
        ok, frame = capture.read()
        if not ok:
            break
        if index >= first:
            frames.append(frame)
        index += 1
    capture.release()
    assert last is None or len(frames) == last - first + 1, f"{video} has no frame {last}"
    return frames


def jpeg(image: np.ndarray, quality: int = 80) -> bytes:
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return bytes(encoded.tobytes())


@functools.cache
def footage_frames(count: int = 12, first: int = 120, step: int = 5) -> tuple[bytes, ...]:
    """JPEGs (640x480) of the shared person clip, people in view; consecutive ones differ."""
    frames = read_frames(PERSON_VIDEO, first, first + count * step - 1)[::step]
    return tuple(jpeg(cv2.resize(image, (640, 480))) for image in frames)


def write_clip(path: Path, frames: list[np.ndarray], fps: float) -> Path:
    """Real frames into a short video file, for what the long shared clips are too long for."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()
    assert path.stat().st_size > 0
    return path


# The box of the test events' person (normalized x0, y0, x1, y1), where the web tests look for it.
EVENT_BOX = (0.41, 0.22, 0.55, 0.93)


def detection_event(
    camera: str,
    event_id: str,
    snapshot: bytes | None = None,
    *,
    kind: str = "start",
    label: str = "person",
    started_at: float | None = None,
    score: float = 0.71,
    top_score: float | None = None,
    ended_at: float | None = None,
) -> bytes:
    """A detector's event message as JSON; ``started_at`` defaults to now, an end's ``ended_at`` to 5 s
    after it."""
    started = time.time() if started_at is None else started_at
    if kind == "end" and ended_at is None:
        ended_at = started + 5
    return schemas.DetectionEvent(
        type=kind,
        event_id=event_id,
        camera=camera,
        label=label,
        score=score,
        top_score=score if top_score is None else top_score,
        box=EVENT_BOX,
        started_at=started,
        ended_at=ended_at if kind == "end" else None,
        frame_time=started,
        detected_at=started + 0.03,
        snapshot=schemas.DetectionEvent.encode_snapshot(snapshot) if snapshot else None,
    ).to_json()


def tracked_object(
    object_id: int,
    last_seen: float,
    zones: dict[str, float] | None = None,
    *,
    first_seen: float | None = None,
    box: tuple[float, float, float, float] = EVENT_BOX,
    score: float = 0.8,
    stationary: bool = False,
    seen_before: bool = False,
) -> schemas.TrackedObject:
    """One tracked object as the detector lists it in the message of the frame captured at ``last_seen``
    (first seen then too, unless ``first_seen``); ``zones``: those it stands in, each with when it entered."""
    return schemas.TrackedObject(
        id=object_id,
        box=box,
        score=score,
        zones=zones or {},
        stationary=stationary,
        seen_before=seen_before,
        first_seen=last_seen if first_seen is None else first_seen,
        last_seen=last_seen,
    )


def tracked_event(
    camera: str,
    event_id: str,
    objects: list[schemas.TrackedObject],
    zones: list[str] | None = None,
    *,
    kind: str = "start",
    label: str = "person",
    started_at: float,
    frame_time: float | None = None,
    snapshot: bytes | None = None,
) -> bytes:
    """A detector's event message listing its tracked objects, as the detector sends it: the best object's
    box and score, ``zones`` every zone entered so far (by default those its objects stand in), the frame
    it describes at ``frame_time`` (by default the last sighting), an end at that frame."""
    best = max(objects, key=lambda tracked: tracked.score, default=None)
    if frame_time is None:
        frame_time = max(tracked.last_seen for tracked in objects)
    if zones is None:
        zones = list(dict.fromkeys(zone for tracked in objects for zone in tracked.zones))
    return schemas.DetectionEvent(
        type=kind,
        event_id=event_id,
        camera=camera,
        label=label,
        score=best.score if best else 0.8,
        top_score=best.score if best else 0.8,
        box=best.box if best else EVENT_BOX,
        zones=zones,
        objects=objects,
        started_at=started_at,
        ended_at=frame_time if kind == "end" else None,
        frame_time=frame_time,
        detected_at=frame_time + 0.03,
        snapshot=schemas.DetectionEvent.encode_snapshot(snapshot) if snapshot else None,
    ).to_json()


def camera_info(camera: str) -> schemas.CameraInfo:
    """What a camera streaming the shared person clip says on ``cam/<id>/info``."""
    return schemas.CameraInfo(
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


def wait_until(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """The first true value of ``condition()``, polled until ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} not met within {timeout} s")


class Collector:
    """The tests' admin MQTT client: records what arrives on its filters, and publishes what a camera or
    another service would (frames with their metadata, retained states, events).

    The admin connects to the broker's admin listener, where any number of admin clients may be connected at
    once; any other ``user`` to the production listener, which binds the client id to the login (so
    ``client_id`` counts only for the admin, or with ``port``). ``port`` picks the listener."""

    def __init__(
        self,
        broker: LocalBroker | dict[str, str],
        *filters: str,
        user: str = ADMIN_USER,
        client_id: str = "",
        port: int | None = None,
    ) -> None:
        """``broker``: a broker of the tests, or a login as the runner's admin.env holds it (MQTT_HOST,
        MQTT_PORT, MQTT_USERNAME, MQTT_PASSWORD). It subscribes again on every connect, so it follows the
        traffic across a restart of the broker (which forgets it)."""
        login = broker if isinstance(broker, dict) else broker.env(user)
        if port is not None:
            login = {**login, "MQTT_PORT": str(port)}
        self.messages: list[Received] = []
        self.seq = 0
        self._filters = filters
        self._changed = threading.Condition()
        self.subscribed = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self._client.username_pw_set(login["MQTT_USERNAME"], login["MQTT_PASSWORD"])
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *_args: self.subscribed.set()
        self._client.on_disconnect = lambda *_args: self.subscribed.clear()
        self._client.on_message = self._on_message
        # Back on a restarted broker within 0.2 s: before the services, whose first retry is after 1 s.
        self._client.reconnect_delay_set(0.1, 0.2)  # type: ignore[arg-type]  # paho takes fractions too
        self._client.connect(login["MQTT_HOST"], int(login["MQTT_PORT"]))
        self._client.loop_start()
        if filters:
            assert self.subscribed.wait(5), "subscription not acknowledged"

    def _on_connect(self, client: mqtt.Client, *_args: Any) -> None:
        if self._filters:
            client.subscribe([(f, 1) for f in self._filters])

    def _on_message(self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._changed:
            self.messages.append(
                Received(
                    message.topic,
                    bytes(message.payload),
                    bool(message.retain),
                    getattr(message, "properties", None),
                )
            )
            self._changed.notify_all()

    def on(self, topic: str, since: float = 0.0) -> list[Received]:
        """What arrived on ``topic`` (a filter), at ``since`` (epoch seconds) or later."""
        with self._changed:
            return [m for m in self.messages if mqtt.topic_matches_sub(topic, m.topic) and m.at >= since]

    def wait_for(
        self,
        topic: str,
        predicate: Callable[[Received], bool] = lambda _m: True,
        timeout: float = 10.0,
        what: str = "",
    ) -> Received:
        """The first message on ``topic`` (a filter) that satisfies ``predicate``, waiting if needed."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for message in self.messages:
                    if mqtt.topic_matches_sub(topic, message.topic) and predicate(message):
                        return message
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = sorted({m.topic for m in self.messages})
                    raise TimeoutError(
                        f"no {what or 'message'} matching on {topic} within {timeout} s; topics seen: {seen}"
                    )
                self._changed.wait(remaining)

    def wait_count(self, topic: str, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(found := self.on(topic)) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(found)} of {count} messages on {topic} within {timeout} s")
            time.sleep(0.02)
        return found

    def online(self, topic: str, since: float, timeout: float = 20.0) -> Received:
        """A live (not retained) ``online`` on a status topic after ``since``: that client (re)connected."""
        return self.wait_for(
            topic,
            lambda m: m.payload == b"online" and not m.retain and m.at >= since,
            timeout,
            what=f"live online since {since:.1f}",
        )

    def events(
        self, camera: str, kind: str | None = None, label: str = "person"
    ) -> list[schemas.DetectionEvent]:
        """The detection events received for ``camera`` and ``label``, of one ``kind`` or all."""
        found = [schemas.DetectionEvent.parse(m.payload) for m in self.on(topics.event(camera, label))]
        return [event for event in found if kind is None or event.type == kind]

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> None:
        self._client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(5)

    def publish_raw(self, topic: str, payload: bytes, **options: Any) -> mqtt.MQTTMessageInfo:
        """paho's own publish, for what the helpers refuse to send (no metadata, odd properties)."""
        return self._client.publish(topic, payload, **options)

    def frame(self, camera: str, jpeg: bytes, captured_ms: int | None = None) -> None:
        """One frame as the camera sends it: the JPEG with its metadata properties, QoS 0; captured now
        unless ``captured_ms`` says when."""
        captured = int(time.time() * 1000) if captured_ms is None else captured_ms
        meta = schemas.FrameMeta(captured_ms=captured, seq=self.seq, width=640, height=480)
        self.seq += 1
        self._client.publish(topics.frame(camera), jpeg, qos=0, properties=meta.to_properties())

    def announce(self, camera: str, online: bool = True) -> None:
        """A camera's retained info and status, as the camera service publishes them."""
        self.publish(topics.info(camera), camera_info(camera).to_json(), retain=True)
        self.publish(topics.status(camera), topics.ONLINE if online else topics.OFFLINE, retain=True)

    def forget(self, camera: str) -> None:
        """Clear the retained camera topics so the shared broker does not keep test cameras forever."""
        for topic in (topics.status(camera), topics.info(camera)):
            self.publish(topic, b"", retain=True)

    @contextmanager
    def streaming(
        self, camera: str, fps: float = 10.0, frames: Sequence[bytes] | None = None
    ) -> Iterator[None]:
        """Publish ``frames`` (default: footage, 4 s of distinct pictures) in a loop at ``fps`` while the
        block runs, each captured now."""
        stop = threading.Event()
        pictures = frames if frames is not None else footage_frames(count=40, step=2)

        def run() -> None:
            index = 0
            while not stop.wait(1 / fps):
                self.frame(camera, pictures[index % len(pictures)])
                index += 1

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def service_settings(broker: LocalBroker, user: str) -> ServiceSettings:
    """The shared settings of a service logged in to ``broker`` as ``user``, for an in-process client."""
    return ServiceSettings(
        mqtt_host=broker.host,
        mqtt_port=broker.port_for(user),
        mqtt_username=user,
        mqtt_password=broker.passwords[user],
    )


def relay_mqtt_env(broker: LocalBroker, data_dir: Path) -> dict[str, str]:
    """The MQTT_* settings of a web relay keeping its events in ``data_dir``: a login of its own with the
    ``web`` user's rights, one per data directory. The broker binds client ids to logins, so relays that all
    used ``web`` would share one persistent session (a relay would get the events queued while another test's
    relay was away) and drop each other's connection; this way a relay keeps its own session across its
    restarts, as it did when its client id was its own."""
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:8]
    return broker.env(broker.login_like("web", f"web-{digest}"))


def service_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_LEAKY_PREFIXES)}
    env.update(PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


class ServiceProcess:
    """``python -m services.<name>`` as a real child process, the way the Dockerfiles start it."""

    def __init__(
        self, service: str, env: dict[str, str], workdir: Path, *, unprivileged: bool = False
    ) -> None:
        """``unprivileged``: run as ``nobody`` when the tests run as root (as CI does), for checks of
        permissions that root would ignore."""
        self.service = service
        self._prefix = UNPRIVILEGED if unprivileged and os.geteuid() == 0 else []
        self.log_path = workdir / f"{service}-{time.monotonic_ns()}.log"
        self._env = service_env(env)
        # The working directory holds no .env, so only the given settings count. pytest's directories are
        # root's only: an unprivileged service works in an empty one of its own.
        self._workdir = workdir
        if self._prefix:
            self._workdir = Path(tempfile.mkdtemp())
            self._workdir.chmod(0o755)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [*self._prefix, sys.executable, "-m", f"services.{self.service}"],
            env=self._env,
            cwd=self._workdir,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        return self

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if match := re.search(pattern, self.log):
                return match
            if self.process is not None and self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not in the {self.service} log:\n{self.log[-3000:]}")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, as ``docker stop`` sends it; returns the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"{self.service} did not stop on SIGTERM:\n{self.log[-3000:]}") from None
        self._log.close()
        return code

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self._log.close()

    def wait(self, timeout: float = 15.0) -> int:
        assert self.process is not None
        code = self.process.wait(timeout=timeout)
        self._log.close()
        return code
