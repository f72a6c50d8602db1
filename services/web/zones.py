"""Each camera's zones and masks for the zone editor: what the detector says it uses (``config/state``), what
was last asked of it (``config/set``), and the broker's answer to the relay's own publish of a change."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from services.common import schemas, topics
from services.common.mqtt import MqttClient

# How long a save waits for the broker's acknowledgement before it answers that it got none.
PUBLISH_ACK_S = 5.0
# Refusals kept by the broker's acknowledgement; a save reads its own at once, so a few are plenty.
MAX_REFUSALS = 64


@dataclass(frozen=True)
class ConfigView:
    """One camera's configuration as the relay heard it. ``received`` counts the ``config/state`` messages:
    a page that saved waits for one newer than the count it was given, the detector's verdict."""

    state: schemas.CameraConfigState | None = None
    received: int = 0
    received_at: float | None = None
    requested: schemas.CameraConfigSet | None = None  # the retained config/set, whoever wrote it

    def as_dict(self, camera: str) -> dict[str, Any]:
        requested = self.requested.model_dump(mode="json", exclude_none=True) if self.requested else None
        return {
            "camera": camera,
            "state": self.state.model_dump(mode="json") if self.state else None,
            "received": self.received,
            "received_at": self.received_at,
            "requested": requested,
        }


def camera_of(topic: str) -> str:
    camera = topics.camera_of(topic)
    if camera is None:
        raise schemas.BadPayload("not a camera topic")
    return camera


class ZoneConfigs:
    """The latest ``config/state`` and ``config/set`` of every camera, written by the MQTT thread and read
    by the server's threads (views are replaced, never changed in place)."""

    def __init__(self) -> None:
        self._views: dict[str, ConfigView] = {}
        self._lock = threading.Lock()

    def on_state(self, topic: str, payload: bytes) -> None:
        """``cam/<id>/config/state``; BadPayload when too big, not a ``CameraConfigState`` or of another
        camera. An empty (cleared) one forgets the state but still counts as an answer."""
        camera = camera_of(topic)
        state = schemas.CameraConfigState.parse(payload) if payload else None
        if state is not None and state.camera != camera:
            raise schemas.BadPayload(f"config state names camera {state.camera!r}")
        with self._lock:
            view = self._views.get(camera, ConfigView())
            self._views[camera] = ConfigView(state, view.received + 1, time.time(), view.requested)

    def on_set(self, topic: str, payload: bytes) -> None:
        """``cam/<id>/config/set`` (retained): kept so that a save of zones and masks keeps the other fields
        someone else (Home Assistant) set. BadPayload when too big or not a ``CameraConfigSet``."""
        camera = camera_of(topic)
        requested = schemas.CameraConfigSet.parse(payload) if payload else None
        with self._lock:
            view = self._views.get(camera, ConfigView())
            self._views[camera] = ConfigView(view.state, view.received, view.received_at, requested)

    def view(self, camera: str) -> ConfigView:
        with self._lock:
            return self._views.get(camera, ConfigView())

    def merged(self, camera: str, change: schemas.CameraConfigSet) -> schemas.CameraConfigSet:
        """The camera's retained ``config/set`` with the fields ``change`` gives replaced: saving zones
        does not drop a threshold Home Assistant set."""
        kept = self.view(camera).requested
        fields = kept.model_dump(exclude_none=True) if kept else {}
        fields.update(change.model_dump(exclude_unset=True))
        return schemas.CameraConfigSet.model_validate(fields)


class BrokerRefusals:
    """The broker's refusals of the relay's QoS 1 publishes (MQTT v5 PUBACK reason codes: "Not authorized"
    when the ACL does not let the login write the topic), by message id. paho reports them only through
    ``on_publish``, which it calls before it wakes ``wait_for_publish``, so a refusal is here by then."""

    def __init__(self, client: mqtt.Client) -> None:
        self._refused: OrderedDict[int, tuple[float, str]] = OrderedDict()  # mid -> (when, reason)
        self._lock = threading.Lock()
        client.on_publish = self._on_publish

    def _on_publish(
        self, _client: mqtt.Client, _userdata: object, mid: int, reason: ReasonCode, _props: Properties
    ) -> None:
        if not reason.is_failure:
            return
        with self._lock:
            self._refused[mid] = (time.monotonic(), str(reason))
            while len(self._refused) > MAX_REFUSALS:
                self._refused.popitem(last=False)

    def take(self, mid: int, since: float) -> str | None:
        """The refusal of message ``mid`` sent at ``since`` (time.monotonic()) or later: message ids are
        reused, and an older refusal of the same id is no answer to this one."""
        with self._lock:
            when, reason = self._refused.pop(mid, (0.0, ""))
        return reason if reason and when >= since else None


class PublishFailed(Exception):
    """The broker refused a publish or did not acknowledge it in time; the message says which."""


class ConfigTooLarge(ValueError):
    """A change the detector would refuse for its size alone; not sent."""


def publish_acknowledged(client: MqttClient, refusals: BrokerRefusals, topic: str, payload: bytes) -> None:
    """Publish retained at QoS 1 and return once the broker acknowledged it; PublishFailed otherwise."""
    if len(payload) > schemas.MAX_CONFIG_BYTES:
        raise ConfigTooLarge(f"{len(payload)} bytes, over the {schemas.MAX_CONFIG_BYTES} the detector takes")
    since = time.monotonic()
    info = client.publish(topic, payload, qos=1, retain=True)
    try:
        info.wait_for_publish(PUBLISH_ACK_S)
        acknowledged = info.is_published()
    except (RuntimeError, ValueError) as error:  # paho could not queue it, or the connection went meanwhile
        raise PublishFailed(f"not sent to the broker: {error}") from error
    if not acknowledged:
        raise PublishFailed(f"the broker did not acknowledge the change within {PUBLISH_ACK_S:.0f} s")
    refused = refusals.take(info.mid, since)
    if refused:
        raise PublishFailed(f"the broker refused the change: {refused}")
