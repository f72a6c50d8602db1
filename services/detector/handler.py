"""The detector on the broker: what it subscribes to, and what it does with each message on the network
thread. Frames only go into the pipeline's slots (services/detector/pipeline.py); the work is done there."""

from __future__ import annotations

import logging
import os
import socket
import time

import paho.mqtt.client as mqtt

from services.common import schemas, topics
from services.common.jpeg import check_jpeg
from services.common.logs import RateLimitedLog
from services.common.mqtt import MqttClient, Route
from services.common.service import Presence, ServiceHandler
from services.detector import events
from services.detector.const import SERVICE
from services.detector.discovery import HassDiscovery
from services.detector.feed import PendingFrame
from services.detector.live_config import LiveConfigs, SavedConfigs
from services.detector.pipeline import Pipeline
from services.detector.settings import DetectorSettings
from services.detector.startup import load


def instance_name(settings: DetectorSettings) -> str:
    """DETECTOR_INSTANCE, else host name and process id: unique among the instances on one broker."""
    return settings.detector_instance or f"{socket.gethostname()[:20]}-{os.getpid()}"


def payload_problem(payload: bytes, max_bytes: int, max_pixels: int) -> str | None:
    """What makes a frame unusable before it is decoded, if anything: its size in bytes, its markers, and
    the pixels its frame header claims (a forged header of a few hundred bytes can claim 32768x32768, which
    even the quarter-size decode would make 8192x8192)."""
    if len(payload) > max_bytes:
        return f"{len(payload)} bytes, more than DETECTOR_MAX_FRAME_BYTES"
    if not schemas.looks_like_jpeg(payload):
        return f"not a JPEG ({len(payload)} bytes starting {payload[:8]!r})"
    try:
        check_jpeg(payload, max_bytes=max_bytes, max_pixels=max_pixels)
    except schemas.BadPayload as error:
        return str(error)
    return None


class DetectorHandler(ServiceHandler[DetectorSettings]):
    """Frames, detection switches and live configs (zones, masks) of the cameras it serves
    (DETECTOR_CAMERAS, or all), and Home Assistant discovery, which rides on the detector because it knows
    the cameras and their labels."""

    service = SERVICE

    @classmethod
    def presence(cls, settings: DetectorSettings) -> Presence:
        return Presence(
            client_id=f"sentrycam-detector-{instance_name(settings)}",
            status_topic=topics.service_status(SERVICE),
        )

    def __init__(self, settings: DetectorSettings, client: MqttClient, logger: logging.Logger) -> None:
        super().__init__(settings, client, logger)
        loaded = load(settings)
        detector, cameras = loaded.detector, loaded.cameras
        logger.info(
            "model %s (%dx%d, %s, %d threads), objects %s, cameras %s",
            loaded.model_path,
            detector.width,
            detector.height,
            detector.runtime,
            settings.detector_threads,
            ",".join(settings.detector_objects),
            ",".join(settings.detector_cameras) or "all",
        )
        # Shared with the pipeline: one report a minute per camera for every kind of bad frame.
        self._bad_log = RateLimitedLog(logger)
        self._connects = 0  # on the network thread only
        # Refused messages that belong to no camera's stats: detect/set, detect/state and config/set on a
        # malformed camera id. With the camera infos Home Assistant discovery refused, they are the stats'
        # messages_bad.
        self._messages_bad = 0
        self._pipeline = Pipeline(
            settings=settings,
            detector=detector,
            confirmation=loaded.confirmation,
            cameras=cameras,
            client=client,
            instance=instance_name(settings),
            logger=logger,
            bad_log=self._bad_log,
            messages_bad=lambda: self._messages_bad + self._discovery.bad_payloads,
        )
        self._discovery = HassDiscovery(
            client,
            settings.ha_discovery_prefix,
            cameras.default.objects,
            logger.getChild("hass"),
            cameras=settings.detector_cameras,
            camera_labels={camera: config.objects for camera, config in cameras.cameras.items()},
        )
        # Loads the saved configs now, before the broker connects: a restart keeps each camera's zones.
        self._live = LiveConfigs(
            cameras=cameras,
            labels=loaded.labels,
            served=settings.detector_cameras,
            saved=SavedConfigs(settings.detector_data_dir, logger),
            client=client,
            pipeline=self._pipeline,
            discovery=self._discovery,
            logger=logger,
            bad_log=self._bad_log,
        )

    def routes(self) -> dict[str, Route]:
        """Per listed camera, or for every camera with ``+`` wildcards; then Home Assistant's."""
        routes: dict[str, Route] = {}
        listed: list[str | None] = [*self.settings.detector_cameras] or [None]
        for camera in listed:
            routes[topics.camera_frames(camera)] = Route(self.on_frame, qos=0)
            detect_set = topics.detect_set(camera) if camera else topics.ALL_DETECT_SET
            routes[detect_set] = Route(self.on_detect_set, qos=1)
            detect_state = topics.detect_state(camera) if camera else topics.ALL_DETECT_STATE
            routes[detect_state] = Route(self.on_detect_state, qos=1)
            config_set = topics.config_set(camera) if camera else topics.ALL_CONFIG_SET
            routes[config_set] = Route(self.on_config_set, qos=1)
        return {**routes, **self._discovery.routes()}

    def on_connect(self) -> None:
        """On every (re)connect, before ``online``: the retained states again, for a broker that lost them."""
        self._connects += 1
        self._pipeline.republish()
        self._live.republish()

    def start(self) -> None:
        self._pipeline.start()
        self._discovery.start()

    def stop(self) -> None:
        self._pipeline.stop()

    def on_frame(self, message: mqtt.MQTTMessage) -> None:
        arrived = time.monotonic()
        camera = topics.camera_of(message.topic)
        if camera is None:
            self._pipeline.count_bad_camera_id()
            self._bad_log.report("camera-id", f"frame on {message.topic[:80]!r}: not a valid camera id")
            return
        self._live.seen(camera)
        payload = bytes(message.payload)
        settings = self.settings
        problem = payload_problem(
            payload, settings.detector_max_frame_bytes, settings.detector_max_frame_pixels
        )
        usable = problem is None
        try:
            meta = schemas.FrameMeta.from_properties(getattr(message, "properties", None))
        except schemas.BadPayload as error:
            # The frame itself may be fine: count the bad metadata and use the arrival time.
            meta = None
            problem = problem or str(error)
            self._bad_log.report(f"{camera}-meta", f"camera {camera}: {error}")
        captured_at = meta.captured_ms / 1000 if meta is not None else time.time()
        frame = PendingFrame(payload, captured_at, arrived) if usable else None
        self._pipeline.receive(camera, frame, bad=problem is not None)
        if not usable:
            self._bad_log.report(camera, f"camera {camera}: bad frame: {problem}")

    def _bad_camera_id(self, topic: str) -> None:
        self._messages_bad += 1
        self._bad_log.report("command-camera-id", f"message on {topic[:80]!r}: not a valid camera id")

    def on_detect_set(self, message: mqtt.MQTTMessage) -> None:
        camera = topics.camera_of(message.topic)
        if camera is None:
            self._bad_camera_id(message.topic)
            return
        try:
            detecting = schemas.parse_on_off(bytes(message.payload))
        except schemas.BadPayload as error:
            self._pipeline.count_bad_command(camera)
            self._bad_log.report(f"{camera}-detect", f"camera {camera}: bad detect/set: {error}")
            return
        self._pipeline.switch(camera, detecting)
        self.logger.info("detection %s for camera %s", "on" if detecting else "off", camera)
        events.publish_detecting(self.client, camera, detecting)

    def on_detect_state(self, message: mqtt.MQTTMessage) -> None:
        """Our own retained switch, read back once at start so a restart keeps a camera switched off. Only
        on the first connection: after it the switch we hold is the truth (published again on every
        reconnect), and a broker killed between two of its saves hands back an older one."""
        camera = topics.camera_of(message.topic)
        if camera is None:
            self._bad_camera_id(message.topic)
            return
        try:
            detecting = schemas.parse_on_off(bytes(message.payload))
        except schemas.BadPayload as error:
            # Counted whether retained or not: only detectors may publish here, so it is a broken one.
            self._pipeline.count_bad_command(camera)
            self._bad_log.report(f"{camera}-detect", f"camera {camera}: bad detect/state: {error}")
            return
        # Live ones are our own (or another instance's) state coming back.
        if message.retain and self._connects == 1:
            self._pipeline.restore(camera, detecting)

    def on_config_set(self, message: mqtt.MQTTMessage) -> None:
        """A camera's zones, masks and overrides (services/detector/live_config.py), retained or live."""
        camera = topics.camera_of(message.topic)
        if camera is None:
            self._bad_camera_id(message.topic)
            return
        self._live.receive(camera, bytes(message.payload))
