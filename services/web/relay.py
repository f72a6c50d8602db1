"""The relay's MQTT side: one subscription feeds frames, camera states and events to every page."""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

from services.common import schemas, topics
from services.common.mqtt import MqttClient, RateLimitedLog
from services.web.const import CLIENT_ID_PREFIX, SERVICE, SSE_QUEUE_LENGTH
from services.web.events import EventStore
from services.web.live import FrameHub
from services.web.settings import WebSettings


@dataclass
class CameraState:
    camera: str
    status: str | None = None
    info: dict[str, Any] | None = None
    detect: str | None = None
    alarm: str | None = None

    def as_dict(self, hub: FrameHub) -> dict[str, Any]:
        frame = hub.latest(self.camera)
        return {
            "id": self.camera,
            "online": self.status == topics.ONLINE,
            "status": self.status,
            "info": self.info,
            "detect": self.detect,
            "alarm": self.alarm,
            "last_frame_at": frame.arrived_at if frame else None,
        }


class Broadcaster:
    """Server-Sent Event fan-out: one bounded queue per open page; a page that stops reading loses the
    oldest messages, never blocks the MQTT thread."""

    def __init__(self) -> None:
        self._queues: set[queue.Queue[tuple[str, str]]] = set()
        self._lock = threading.Lock()

    def subscribe(self) -> queue.Queue[tuple[str, str]]:
        listener: queue.Queue[tuple[str, str]] = queue.Queue(SSE_QUEUE_LENGTH)
        with self._lock:
            self._queues.add(listener)
        return listener

    def unsubscribe(self, listener: queue.Queue[tuple[str, str]]) -> None:
        with self._lock:
            self._queues.discard(listener)

    def send(self, kind: str, data: object) -> None:
        message = (kind, json.dumps(data, separators=(",", ":")))
        with self._lock:
            listeners = list(self._queues)
        for listener in listeners:
            while True:
                try:
                    listener.put_nowait(message)
                    break
                except queue.Full:
                    with contextlib.suppress(queue.Empty):
                        listener.get_nowait()

    @property
    def listeners(self) -> int:
        with self._lock:
            return len(self._queues)


class WebRelay:
    def __init__(self, settings: WebSettings, logger: logging.Logger, store: EventStore) -> None:
        self.settings = settings
        self.logger = logger
        self.store = store
        self.hub = FrameHub()
        self.broadcaster = Broadcaster()
        self.armed: str | None = None
        self.bad_payloads = 0
        self._cameras: dict[str, CameraState] = {}
        self._lock = threading.Lock()
        self._bad_log = RateLimitedLog(logger)
        self._broker_was_connected = False
        # Events are written by their own thread: fsyncs on a slow SD card must not delay the frames that
        # share paho's network thread. None asks it to finish.
        self._events: queue.Queue[schemas.DetectionEvent | None] = queue.Queue()
        self._writer = threading.Thread(target=self._write_events, name="event-writer", daemon=True)
        self.mqtt = MqttClient(
            settings,
            client_id=f"{CLIENT_ID_PREFIX}-{time.monotonic_ns() % 1_000_000}",
            status_topic=topics.service_status(SERVICE),
            logger=logger,
        )
        # One subscription for frames, status, info and events (cam/<id>/<level>): overlapping filters
        # would make the broker send every frame twice.
        self.mqtt.subscribe(topics.ALL_CAMERA_MESSAGES, self._on_camera_message, qos=1)
        self.mqtt.subscribe(topics.ALL_CAMERA_STATES, self._on_camera_state, qos=1)
        self.mqtt.subscribe(topics.ARMED_STATE, self._on_armed_state, qos=1)

    def start(self) -> None:
        self._writer.start()
        self.mqtt.start()

    def stop(self) -> None:
        self.hub.close()
        self.mqtt.stop()
        # Events already received are written before the relay exits.
        self._events.put(None)
        self._writer.join()

    @property
    def broker_connected(self) -> bool:
        return self.mqtt.connected.is_set()

    def check_broker(self) -> None:
        """Tell open pages when the broker connection comes or goes (called every second)."""
        connected = self.broker_connected
        if connected != self._broker_was_connected:
            self._broker_was_connected = connected
            self.broadcaster.send("broker", {"connected": connected})

    # -- state for the pages and the API -------------------------------------------------------------

    def cameras(self) -> list[dict[str, Any]]:
        with self._lock:
            states = [state for state in self._cameras.values() if state.status or state.info]
        # Online cameras first: the page streams the first few live.
        ordered = sorted(states, key=lambda s: (s.status != topics.ONLINE, s.camera))
        return [state.as_dict(self.hub) for state in ordered]

    def camera(self, camera: str) -> dict[str, Any] | None:
        with self._lock:
            state = self._cameras.get(camera)
        if state is None or not (state.status or state.info):
            return None
        return state.as_dict(self.hub)

    def status(self) -> dict[str, Any]:
        return {"broker_connected": self.broker_connected, "armed": self.armed, "cameras": self.cameras()}

    # -- controls ------------------------------------------------------------------------------------

    def set_armed(self, armed: bool) -> None:
        self.mqtt.publish(topics.ARMED_SET, schemas.on_off(armed), qos=1)

    def set_detect(self, camera: str, enabled: bool) -> None:
        self.mqtt.publish(topics.detect_set(camera), schemas.on_off(enabled), qos=1)

    def set_alarm(self, camera: str, command: schemas.AlarmCommand) -> None:
        self.mqtt.publish(topics.alarm_set(camera), command.to_json(), qos=1)

    # -- MQTT handlers (paho's network thread) -------------------------------------------------------

    def _bad(self, topic: str, why: str) -> None:
        self.bad_payloads += 1
        self._bad_log.report(topic, f"bad payload on {topic}: {why}")

    def _state(self, camera: str) -> CameraState:
        with self._lock:
            return self._cameras.setdefault(camera, CameraState(camera))

    def _on_camera_message(self, message: mqtt.MQTTMessage) -> None:
        topic = message.topic
        camera = topics.camera_of(topic)
        if camera is None:
            self._bad(topic, "not a camera topic")
            return
        payload = bytes(message.payload)
        if topic == topics.frame(camera):
            self._on_frame(camera, message, payload)
        elif topic == topics.status(camera):
            self._on_status(camera, payload)
        elif topic == topics.info(camera):
            self._on_info(camera, payload)
        elif topics.label_of_event(topic) is not None:
            self._on_event(topic, payload)

    def _on_frame(self, camera: str, message: mqtt.MQTTMessage, payload: bytes) -> None:
        if len(payload) > schemas.MAX_FRAME_BYTES or not schemas.looks_like_jpeg(payload):
            self._bad(message.topic, "not a JPEG")
            return
        try:
            meta = schemas.FrameMeta.from_properties(getattr(message, "properties", None))
        except schemas.BadPayload as error:
            self._bad(message.topic, str(error))
            meta = None
        self.hub.put(camera, payload, meta)

    def _on_status(self, camera: str, payload: bytes) -> None:
        if not payload:  # a cleared retained message
            return
        text = payload.decode("utf-8", "replace").strip()
        if text not in (topics.ONLINE, topics.OFFLINE):
            self._bad(topics.status(camera), f"expected online or offline, got {text[:40]!r}")
            return
        self._state(camera).status = text
        self._camera_changed(camera)

    def _on_info(self, camera: str, payload: bytes) -> None:
        if not payload:  # a cleared retained message
            return
        try:
            info = schemas.CameraInfo.parse(payload)
        except schemas.BadPayload as error:
            self._bad(topics.info(camera), str(error))
            return
        if info.camera != camera:
            self._bad(topics.info(camera), f"info names camera {info.camera!r}")
            return
        self._state(camera).info = info.model_dump(mode="json")
        self._camera_changed(camera)

    def _on_camera_state(self, message: mqtt.MQTTMessage) -> None:
        camera = topics.camera_of(message.topic)
        if camera is None:
            return
        is_detect = message.topic == topics.detect_state(camera)
        if not is_detect and message.topic != topics.alarm_state(camera):
            return  # a label's ON/OFF state: the events say more
        try:
            value = schemas.on_off(schemas.parse_on_off(bytes(message.payload)))
        except schemas.BadPayload as error:
            self._bad(message.topic, str(error))
            return
        state = self._state(camera)
        if is_detect:
            state.detect = value
        else:
            state.alarm = value
        self._camera_changed(camera)

    def _on_armed_state(self, message: mqtt.MQTTMessage) -> None:
        try:
            self.armed = schemas.on_off(schemas.parse_on_off(bytes(message.payload)))
        except schemas.BadPayload as error:
            self._bad(message.topic, str(error))
            return
        self.broadcaster.send("armed", {"armed": self.armed})

    def _on_event(self, topic: str, payload: bytes) -> None:
        try:
            event = schemas.DetectionEvent.parse_on(topic, payload)
        except schemas.BadPayload as error:
            self._bad(topic, str(error))
            return
        self._events.put(event)

    def _write_events(self) -> None:
        while (event := self._events.get()) is not None:
            topic = topics.event(event.camera, event.label)
            try:
                stored = self.store.record(event)
            except schemas.BadPayload as error:
                self._bad(topic, str(error))
                continue
            except Exception:
                # A full disk or a broken database must not end the writer: log it and keep going.
                self.logger.exception("could not record event %s", event.event_id)
                continue
            self.broadcaster.send("event", public_event(stored))

    def _camera_changed(self, camera: str) -> None:
        state = self.camera(camera)
        if state is not None:
            self.broadcaster.send("camera", state)


def public_event(event: dict[str, Any]) -> dict[str, Any]:
    """An event without the private file names, with the URLs of its pictures."""
    shown = {key: value for key, value in event.items() if not key.startswith("_")}
    event_id = event["event_id"]
    shown["url"] = f"/events/{event_id}"
    shown["snapshot_url"] = f"/events/{event_id}/snapshot.jpg" if event["_snapshot"] else None
    shown["thumbnail_url"] = f"/events/{event_id}/thumb.jpg" if event["_thumbnail"] else None
    return shown
