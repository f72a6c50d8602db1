"""The web relay as a service: one MQTT session feeds frames, camera states and events to every page."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import paho.mqtt.client as mqtt
from flask import Flask

from services.common import schemas, topics
from services.common.database import STORE_ERRORS
from services.common.jpeg import MAX_IMAGE_PIXELS, check_jpeg
from services.common.logs import RateLimitedLog
from services.common.mqtt import MqttClient, Route
from services.common.service import Presence, ServiceHandler, StartupError
from services.web.app import create_app
from services.web.broadcast import Broadcaster
from services.web.cameras import CameraViews, parse_alarm_result
from services.web.clips import parse_clip
from services.web.const import (
    CLIENT_ID_PREFIX,
    OPEN_EVENT_CHECK_S,
    OPEN_EVENT_TIMEOUT_S,
    RETENTION_INTERVAL_S,
    SERVICE,
    SESSION_EXPIRY_S,
)
from services.web.datadir import open_data_dir
from services.web.event_model import StoredEvent
from services.web.live import FrameHub
from services.web.recordings import open_record_dir
from services.web.server import WaitressServer, WebServer
from services.web.settings import WebSettings
from services.web.system import SystemState
from services.web.writer import EventWriter
from services.web.zones import BrokerRefusals, ZoneConfigs, publish_acknowledged


def client_id(data_dir: Path) -> str:
    """Stable across restarts, so that the broker keeps the relay's session, and the events sent while it
    is away, for it. One per data directory, because those events belong to that directory's timeline. The
    shipped broker replaces it by the login (use_username_as_clientid): there, relays with data of their own
    need a login each; this id keeps them apart on a broker that does not."""
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:8]
    return f"{CLIENT_ID_PREFIX}-{digest}"


class WebRelay(ServiceHandler[WebSettings]):
    service: ClassVar[str] = SERVICE

    @classmethod
    def presence(cls, settings: WebSettings) -> Presence:
        # A persistent session: events published while the relay is down, or that it could not store,
        # wait on the broker instead of missing from the timeline.
        return Presence(
            client_id=client_id(settings.web_data_dir),
            status_topic=topics.service_status(SERVICE),
            persistent_session_s=SESSION_EXPIRY_S,
        )

    def __init__(self, settings: WebSettings, client: MqttClient, logger: logging.Logger) -> None:
        super().__init__(settings, client, logger)
        self.hub = FrameHub()
        self.views = CameraViews(self.hub)
        self.broadcaster = Broadcaster()
        self.armed: str | None = None
        self.zones = ZoneConfigs()
        self._refusals = BrokerRefusals(client.paho)
        self.bad_payloads = 0
        self._bad_log = RateLimitedLog(logger)
        self._broker_was_connected = False
        self.record_dir = open_record_dir(settings)  # None: no playback
        data = open_data_dir(settings, logger)
        self.store = data.store
        record_root = self.record_dir.root if self.record_dir else None
        self.system = SystemState(settings.web_data_dir, self.store.snapshot_dir, record_root)
        self.writer = EventWriter(self.store, logger, on_stored=self._event_stored, on_bad=self._bad)
        self.app = create_app(self, data.secret_key, data.sessions)
        try:
            self.server = self.create_server(self.app)
        except StartupError:
            self.store.close()
            raise

    def create_server(self, app: Flask) -> WebServer:
        """The server, already listening; bench/web_cheroot.py serves the app with another one."""
        return WaitressServer(app, self.settings, self.logger)

    def routes(self) -> dict[str, Route]:
        # One subscription for frames, status, info and events (cam/<id>/<level>): overlapping filters
        # would make the broker send every frame twice.
        return {
            topics.ALL_CAMERA_MESSAGES: Route(self._on_camera_message, qos=1),
            topics.ALL_CAMERA_STATES: Route(self._on_camera_state, qos=1),
            topics.ALL_ALARM_RESULTS: Route(self._on_alarm_result, qos=1),
            # The zone editor: cam/<id>/config/state comes with the states above, config/set overlaps none.
            topics.ALL_CONFIG_SET: Route(lambda message: self._on_config(message, self.zones.on_set), qos=1),
            topics.ARMED_STATE: Route(self._on_armed_state, qos=1),
            # The system page: sentrycam/<service>/status and .../stats (neither overlaps armed/state).
            topics.ALL_SERVICE_STATUS: Route(self._on_system, qos=1),
            topics.ALL_SERVICE_STATS: Route(self._on_system, qos=0),
        }

    def start(self) -> None:
        self.writer.start()
        threading.Thread(target=self.server.run, name="http-server", daemon=True).start()
        addresses = ", ".join(self.server.addresses())
        self.logger.info("serving on %s (data in %s)", addresses, self.settings.web_data_dir)

    def run(self, stop: threading.Event) -> None:
        next_retention = next_open_check = 0.0
        while not stop.wait(1.0):
            self.check_broker()
            clocks = self.views.fresh_frame_times()
            if clocks:  # the cards' clocks: the capture time of each camera's newest frame
                self.broadcaster.send("clock", clocks)
            if time.monotonic() >= next_open_check:
                self.close_silent_events()
                next_open_check = time.monotonic() + OPEN_EVENT_CHECK_S
            if time.monotonic() >= next_retention:
                self._apply_retention()
                next_retention = time.monotonic() + RETENTION_INTERVAL_S

    def stop(self) -> None:
        # Ends every live stream and event stream, so that their server threads are free.
        self.hub.close()
        self.broadcaster.send("stopping", None)  # wakes each event stream, which then sees the hub closed

    def close(self) -> None:
        self.writer.drain()
        self.server.close()
        self.store.close()

    @property
    def broker_connected(self) -> bool:
        return self.client.connected.is_set()

    def check_broker(self) -> None:
        """Tell open pages when the broker connection comes or goes (called every second)."""
        connected = self.broker_connected
        if connected != self._broker_was_connected:
            self._broker_was_connected = connected
            self.broadcaster.send("broker", {"connected": connected})

    def close_silent_events(self, now: float | None = None) -> None:
        """Close the open events without any message for ``OPEN_EVENT_TIMEOUT_S`` (their end was lost).
        Not while the broker is away: the relay then cannot hear of them."""
        if not self.broker_connected:
            return
        silent_since = (time.time() if now is None else now) - OPEN_EVENT_TIMEOUT_S
        try:
            closed = self.store.close_stale(silent_since)
        except STORE_ERRORS as error:
            self.logger.warning("open events not checked this time: %s", error)
            return
        for event in closed:
            self.broadcaster.send("event", event)
            self._camera_changed(self.views.end_box(event.camera, event.label))

    def _apply_retention(self) -> None:
        try:
            self.store.apply_retention(
                self.settings.web_retention_days * 86400, int(self.settings.web_retention_mb * 1024 * 1024)
            )
        except STORE_ERRORS as error:
            # A locked database now is no reason to stop serving; the next round tries again.
            self.logger.warning("retention skipped this time: %s", error)

    # -- state for the pages and the API -------------------------------------------------------------

    def cameras(self) -> list[dict[str, Any]]:
        return self.views.all()

    def camera(self, camera: str) -> dict[str, Any] | None:
        return self.views.get(camera)

    def status(self) -> dict[str, Any]:
        return {"broker_connected": self.broker_connected, "armed": self.armed, "cameras": self.cameras()}

    # -- controls ------------------------------------------------------------------------------------

    def set_armed(self, armed: bool) -> None:
        self.client.publish(topics.ARMED_SET, schemas.on_off(armed), qos=1)

    def set_detect(self, camera: str, enabled: bool) -> None:
        self.client.publish(topics.detect_set(camera), schemas.on_off(enabled), qos=1)

    def set_alarm(self, camera: str, command: schemas.AlarmCommand) -> None:
        self.client.publish(topics.alarm_set(camera), command.to_json(), qos=1)

    def set_config(self, camera: str, change: schemas.CameraConfigSet) -> schemas.CameraConfigSet:
        """Publish the camera's config/set with ``change`` applied, once the broker acknowledged it;
        zones.PublishFailed otherwise. The detector's verdict follows on config/state."""
        config = self.zones.merged(camera, change)
        publish_acknowledged(self.client, self._refusals, topics.config_set(camera), config.to_json())
        return config

    # -- MQTT handlers (paho's network thread) -------------------------------------------------------

    def _bad(self, topic: str, why: str) -> None:
        self.bad_payloads += 1
        self._bad_log.report(topic, f"bad payload on {topic}: {why}")

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
        elif topic == topics.clip(camera):
            self._on_clip(message, payload)
        elif topics.label_of_event(topic) is not None:
            self._on_event(message, payload)

    def _on_frame(self, camera: str, message: mqtt.MQTTMessage, payload: bytes) -> None:
        # Browsers decode what the relay forwards: a forged header (a 631-byte JPEG claiming 32768x32768
        # pixels) goes no further. The header only is read, nothing decoded.
        try:
            check_jpeg(payload, max_bytes=schemas.MAX_FRAME_BYTES, max_pixels=MAX_IMAGE_PIXELS)
        except schemas.BadPayload as error:
            self._bad(message.topic, str(error))
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
        if len(payload) > schemas.MAX_WORD_BYTES:  # not decoded: 5 MB of junk took 50 MB as text
            self._bad(topics.status(camera), f"expected online or offline, got {len(payload)} bytes")
            return
        text = payload.decode("utf-8", "replace").strip()
        if text not in (topics.ONLINE, topics.OFFLINE):
            self._bad(topics.status(camera), f"expected online or offline, got {text[:40]!r}")
            return
        self._camera_changed(self.views.update(camera, status=text))

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
        self._camera_changed(self.views.update(camera, info=info.model_dump(mode="json")))

    def _on_camera_state(self, message: mqtt.MQTTMessage) -> None:
        camera = topics.camera_of(message.topic)
        if camera is None:
            self._bad(message.topic, "not a camera topic")
            return
        if message.topic == topics.config_state(camera):
            self._on_config(message, self.zones.on_state)
            return
        is_detect = message.topic == topics.detect_state(camera)
        if not is_detect and message.topic != topics.alarm_state(camera):
            self._on_label_state(camera, message)
            return
        try:
            value = schemas.on_off(schemas.parse_on_off(bytes(message.payload)))
        except schemas.BadPayload as error:
            self._bad(message.topic, str(error))
            return
        if is_detect:
            self._camera_changed(self.views.update(camera, detect=value))
        else:
            self._camera_changed(self.views.update(camera, alarm=value))

    def _on_alarm_result(self, message: mqtt.MQTTMessage) -> None:
        if not message.payload:  # a cleared retained message
            return
        try:
            camera, result = parse_alarm_result(message.topic, bytes(message.payload))
        except schemas.BadPayload as error:
            self._bad(message.topic, str(error))
            return
        self._camera_changed(self.views.update(camera, alarm_result=result))

    def _on_config(self, message: mqtt.MQTTMessage, store: Callable[[str, bytes], None]) -> None:
        try:
            store(message.topic, bytes(message.payload))
        except schemas.BadPayload as error:
            self._bad(message.topic, str(error))

    def _on_label_state(self, camera: str, message: mqtt.MQTTMessage) -> None:
        """``cam/<id>/<label>/state``: OFF closes that label's open events. The detector publishes it at
        every event's end and, retained, for every label of a camera when it (re)starts, so an event whose
        end was lost is closed at the latest when the detector comes back. Both set the "now" badges."""
        label = topics.label_of_state(message.topic)
        payload = bytes(message.payload)
        if label is None or not payload:  # another state topic; a cleared retained message
            return
        try:
            on = schemas.parse_on_off(payload)
        except schemas.BadPayload as error:
            self._bad(message.topic, str(error))
            return
        self._camera_changed(self.views.label_state(camera, label, on))
        if not on:
            # Applied by the writer after the event messages that came before it; acknowledged once done.
            self.writer.label_off(camera, label, self.client.hold_ack(message))

    def _on_armed_state(self, message: mqtt.MQTTMessage) -> None:
        try:
            self.armed = schemas.on_off(schemas.parse_on_off(bytes(message.payload)))
        except schemas.BadPayload as error:
            self._bad(message.topic, str(error))
            return
        self.broadcaster.send("armed", {"armed": self.armed})

    def _on_system(self, message: mqtt.MQTTMessage) -> None:
        try:
            self.system.on_message(message.topic, bytes(message.payload), bool(message.retain))
        except schemas.BadPayload as error:
            self._bad(message.topic, str(error))

    def _on_event(self, message: mqtt.MQTTMessage, payload: bytes) -> None:
        try:
            event = schemas.DetectionEvent.parse_on(message.topic, payload)
        except schemas.BadPayload as error:
            self._bad(message.topic, str(error))
            return  # acknowledged: the same bytes would be just as bad again
        self._camera_changed(self.views.event_box(event))
        # Acknowledged by the writer once stored, so a failed write brings the event again.
        self.writer.put(event, self.client.hold_ack(message))

    def _on_clip(self, message: mqtt.MQTTMessage, payload: bytes) -> None:
        try:
            clip = parse_clip(message.topic, payload)
        except schemas.BadPayload as error:
            self._bad(message.topic, str(error))
            return
        self.writer.put_clip(clip, self.client.hold_ack(message))  # acknowledged once stored

    def _event_stored(self, event: StoredEvent) -> None:
        self.broadcaster.send("event", event)

    def _camera_changed(self, camera: dict[str, Any] | None) -> None:
        if camera is not None:
            self.broadcaster.send("camera", camera)
