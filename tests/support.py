"""Test helpers: a collecting MQTT client and service processes, both against the real broker."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties

from scripts.localbroker import ADMIN_USER, LocalBroker
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


class Collector:
    """An MQTT client (as the broker's admin user) that records what arrives on its filters."""

    def __init__(
        self, broker: LocalBroker, *filters: str, user: str = ADMIN_USER, client_id: str = ""
    ) -> None:
        self.messages: list[Received] = []
        self._changed = threading.Condition()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self._client.username_pw_set(user, broker.passwords[user])
        self._client.on_message = self._on_message
        subscribed = threading.Event()
        self._client.on_subscribe = lambda *_args: subscribed.set()
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()
        if filters:
            self._client.subscribe([(f, 1) for f in filters])
            assert subscribed.wait(5), "subscription not acknowledged"

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

    def on(self, topic: str) -> list[Received]:
        with self._changed:
            return [m for m in self.messages if mqtt.topic_matches_sub(topic, m.topic)]

    def wait_for(
        self, topic: str, predicate: Callable[[Received], bool] = lambda _m: True, timeout: float = 10.0
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
                    raise TimeoutError(f"nothing matching on {topic} within {timeout} s; topics seen: {seen}")
                self._changed.wait(remaining)

    def wait_count(self, topic: str, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(found := self.on(topic)) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(found)} of {count} messages on {topic} within {timeout} s")
            time.sleep(0.02)
        return found

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> None:
        self._client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def service_settings(broker: LocalBroker, user: str) -> ServiceSettings:
    """The shared settings of a service logged in to ``broker`` as ``user``, for an in-process client."""
    return ServiceSettings(
        mqtt_host=broker.host,
        mqtt_port=broker.port,
        mqtt_username=user,
        mqtt_password=broker.passwords[user],
    )


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
