"""Home Assistant discovery, carried by the detector: it knows the cameras it serves and their labels.

What is published is built in services/common/hass.py; this class decides when: for each camera that
announces itself on the retained ``cam/<id>/info``, again whenever Home Assistant says ``online`` on
``<prefix>/status``, and empty (which makes Home Assistant delete the entities) when a camera's info is
cleared.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping

import paho.mqtt.client as mqtt

from services.common import schemas, topics
from services.common.hass import Entity, camera_device, camera_entities, hub_entities
from services.common.logs import RateLimitedLog
from services.common.mqtt import MqttClient, Route


class HassDiscovery:
    """Publishes discovery for the hub and every camera that shows up, on the given client.

    Its :meth:`routes` join the subscription table of the service that carries it (the detector).
    """

    def __init__(
        self,
        client: MqttClient,
        prefix: str,
        labels: Iterable[str],
        logger: logging.Logger,
        *,
        cameras: Iterable[str] = (),
        camera_labels: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        """``labels`` get a sensor and a snapshot on every camera, unless ``camera_labels`` names other
        labels for a camera; ``cameras`` limits discovery to those (a detector that serves only them)."""
        self._client = client
        self._prefix = prefix
        self._labels = [topics.label_slug(label) for label in labels]
        self._camera_labels = {
            camera: [topics.label_slug(label) for label in own]
            for camera, own in (camera_labels or {}).items()
        }
        self._only = set(cameras)
        self._logger = logger
        self._bad_log = RateLimitedLog(logger)
        self._cameras: dict[str, schemas.CameraInfo] = {}
        self._lock = threading.Lock()
        self.bad_payloads = 0

    def routes(self) -> dict[str, Route]:
        if not self._prefix:
            return {}
        return {
            topics.ALL_INFO: Route(self._on_info, qos=1),
            topics.hass_status(self._prefix): Route(self._on_hass_status, qos=1),
        }

    def start(self) -> None:
        if not self._prefix:
            self._logger.info("Home Assistant discovery is off")
            return
        # The hub needs no camera; it is published once connected, and the retained config stays.
        self._publish(hub_entities())

    def _labels_of(self, camera: str) -> list[str]:
        with self._lock:
            return self._camera_labels.get(camera, self._labels)

    def set_labels(self, camera: str, labels: Iterable[str]) -> None:
        """The camera now looks for ``labels`` (a config taken live): the entities of labels it no longer
        looks for are removed, those of new ones published, if the camera has announced itself."""
        wanted = [topics.label_slug(label) for label in labels]
        with self._lock:
            before = self._camera_labels.get(camera, self._labels)
            self._camera_labels[camera] = wanted
            info = self._cameras.get(camera)
        if not self._prefix or info is None or before == wanted:
            return
        self._logger.info("camera %s looks for %s now: republishing its discovery", camera, ",".join(wanted))
        current = camera_entities(info, wanted)
        kept = {entity.topic(self._prefix) for entity in current}
        for entity in camera_entities(info, before):
            if entity.topic(self._prefix) not in kept:
                self._client.publish(entity.topic(self._prefix), b"", qos=1, retain=True)
        self._publish(current)

    def _publish(self, entities: Iterable[Entity]) -> None:
        for entity in entities:
            self._client.publish(entity.topic(self._prefix), schemas.dumps(entity.config), qos=1, retain=True)

    def _on_info(self, message: mqtt.MQTTMessage) -> None:
        camera = topics.camera_of(message.topic)
        if camera is None or (self._only and camera not in self._only):
            return
        if not message.payload:
            self._remove(camera)
            return
        try:
            info = schemas.CameraInfo.parse(bytes(message.payload))
        except schemas.BadPayload as error:
            self._bad(message.topic, str(error))
            return
        if info.camera != camera:
            self._bad(message.topic, f"info names camera {info.camera!r}")
            return
        with self._lock:
            known = self._cameras.get(camera)
            self._cameras[camera] = info
        # Info is republished on every state change; the configs change only with the device's identity.
        if known is None or camera_device(known) != camera_device(info):
            self._logger.info("publishing Home Assistant discovery for camera %s", camera)
            self._publish(camera_entities(info, self._labels_of(info.camera)))

    def _remove(self, camera: str) -> None:
        with self._lock:
            info = self._cameras.pop(camera, None)
        if info is None:
            return
        self._logger.info("removing camera %s from Home Assistant", camera)
        for entity in camera_entities(info, self._labels_of(info.camera)):
            self._client.publish(entity.topic(self._prefix), b"", qos=1, retain=True)

    def _bad(self, topic: str, why: str) -> None:
        self.bad_payloads += 1
        self._bad_log.report(topic, f"ignored a bad message on {topic} ({self.bad_payloads} so far): {why}")

    def _on_hass_status(self, message: mqtt.MQTTMessage) -> None:
        said = message.payload.strip().lower()
        if said == topics.OFFLINE.encode():
            return
        if said != topics.ONLINE.encode():
            self._bad(message.topic, f"expected online or offline, got {bytes(message.payload[:40])!r}")
            return
        with self._lock:
            cameras = list(self._cameras.values())
        self._logger.info("Home Assistant is online: republishing discovery for %d camera(s)", len(cameras))
        self._publish(hub_entities())
        for info in cameras:
            self._publish(camera_entities(info, self._labels_of(info.camera)))
