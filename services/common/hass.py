"""Home Assistant MQTT discovery: the entities of every camera, and of the hub, appear by themselves.

The payload builders are pure functions (configs as dicts, one per entity); :class:`HassDiscovery` publishes
them on an :class:`~services.common.mqtt.MqttClient`: for each camera that announces itself on the retained
``cam/<id>/info``, again whenever Home Assistant says ``online`` on ``<prefix>/status``, and empty (which
makes Home Assistant delete the entities) when a camera's info is cleared. See docs/home-assistant.md.

Per-component topics ``<prefix>/<component>/<node_id>/<object_id>/config`` are used, which every Home
Assistant release since 2024 reads. Field names are written out in full (Home Assistant also accepts its
abbreviations); ``object_id`` and ``default_entity_id`` are both set, so entity ids are stable on releases
before and after ``object_id`` was deprecated (2025.10).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import paho.mqtt.client as mqtt
from pydantic import Field, field_validator

from services.common import __version__, schemas, topics
from services.common.logs import RateLimitedLog
from services.common.mqtt import MqttClient, Route
from services.common.settings import ServiceSettings

DEFAULT_PREFIX = "homeassistant"
HUB_NODE = "sentrycam"
HUB_ID = "sentrycam_hub"
MANUFACTURER = "SentryCam"
ORIGIN = {"name": "SentryCam", "sw_version": __version__}

Config = dict[str, Any]


class HassSettings(ServiceSettings):
    """Home Assistant discovery, published by the detector (it knows the cameras and the labels)."""

    section: ClassVar[str] = "Home Assistant discovery (published by the detector)"

    ha_discovery_prefix: str = Field(
        DEFAULT_PREFIX,
        description="Home Assistant's MQTT discovery prefix; empty or `off` publishes no discovery.",
    )

    @field_validator("ha_discovery_prefix")
    @classmethod
    def topic_prefix(cls, value: str) -> str:
        value = value.strip()
        if value.lower() in {"", "off"}:
            return ""
        if not re.fullmatch(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*", value):
            raise ValueError("must be topic levels of letters, digits, _ and - (no wildcards), or off")
        return value


@dataclass(frozen=True)
class Entity:
    """One discovery config and where it goes."""

    component: str
    node_id: str
    object_id: str
    config: Config

    def topic(self, prefix: str) -> str:
        return topics.hass_config(prefix, self.component, self.node_id, self.object_id)


def slug(text: str) -> str:
    """Entity ids take a-z, 0-9 and _ only (a camera id may have ``-``)."""
    return re.sub(r"[^a-z0-9_]", "_", text.lower())


def availability(*status_topics: str) -> Config:
    """Available only while every named service or camera says ``online`` on its status topic."""
    return {
        "availability": [
            {"topic": t, "payload_available": topics.ONLINE, "payload_not_available": topics.OFFLINE}
            for t in status_topics
        ],
        "availability_mode": "all",
    }


def camera_device(info: schemas.CameraInfo) -> Config:
    return {
        "identifiers": [f"sentrycam_{info.camera}"],
        "name": f"SentryCam {info.camera}",
        "manufacturer": MANUFACTURER,
        "model": f"Camera ({info.source_kind})",
        "sw_version": info.software_version,
        "via_device": HUB_ID,
    }


def hub_device() -> Config:
    return {"identifiers": [HUB_ID], "name": "SentryCam", "manufacturer": MANUFACTURER, "model": "Hub"}


def _entity(
    component: str, node_id: str, object_id: str, name: str | None, device: Config, **fields: Any
) -> Entity:
    entity_id = slug(f"{node_id}_{object_id}")
    config: Config = {
        "name": name,
        "unique_id": f"{node_id}_{object_id}",
        "object_id": entity_id,
        "default_entity_id": f"{component}.{entity_id}",
        "device": device,
        "origin": ORIGIN,
        **fields,
    }
    return Entity(component, node_id, object_id, config)


def camera_entities(info: schemas.CameraInfo, labels: Iterable[str]) -> list[Entity]:
    """Every entity of one camera: its picture, the snapshot and occupancy per label, the deterrent siren,
    the detection switch, and the detector's figures for it."""
    cam = info.camera
    node, device = f"sentrycam_{cam}", camera_device(info)
    camera_up = availability(topics.status(cam))
    detector_up = availability(topics.status(cam), topics.service_status("detector"))
    on_off = {"payload_on": topics.ON, "payload_off": topics.OFF}
    entities = [
        _entity("camera", node, "frame", None, device, topic=topics.frame(cam), **camera_up),
        _entity(
            "siren",
            node,
            "deterrent",
            "Deterrent",
            device,
            command_topic=topics.alarm_set(cam),
            state_topic=topics.alarm_state(cam),
            support_duration=True,
            support_volume_set=False,
            **on_off,
            **camera_up,
        ),
        _entity(
            "switch",
            node,
            "detection",
            "Detection",
            device,
            command_topic=topics.detect_set(cam),
            state_topic=topics.detect_state(cam),
            entity_category="config",
            icon="mdi:motion-sensor",
            **on_off,
            **detector_up,
        ),
    ]
    for label in labels:
        level = topics.label_slug(label)
        title = level.replace("_", " ").capitalize()
        entities += [
            _entity(
                "binary_sensor",
                node,
                level,
                title,
                device,
                state_topic=topics.label_state(cam, level),
                device_class="occupancy",
                **on_off,
                **detector_up,
            ),
            _entity(
                "image",
                node,
                f"{level}_snapshot",
                f"{title} snapshot",
                device,
                image_topic=topics.label_snapshot(cam, level),
                content_type="image/jpeg",
                **detector_up,
            ),
        ]
    stats = "value_json.cameras[{cam!r}].{field} if {cam!r} in value_json.cameras else None"
    for object_id, name, field, unit, extra in (
        ("detector_fps", "Detector frame rate", "fps_inferred", "fps", {}),
        ("inference_time", "Inference time", "inference_ms_p50", "ms", {"device_class": "duration"}),
    ):
        entities.append(
            _entity(
                "sensor",
                node,
                object_id,
                name,
                device,
                state_topic=topics.DETECTOR_STATS,
                value_template="{{ " + stats.format(cam=cam, field=field) + " }}",
                unit_of_measurement=unit,
                state_class="measurement",
                entity_category="diagnostic",
                **extra,
                **availability(topics.service_status("detector")),
            )
        )
    return entities


def hub_entities() -> list[Entity]:
    """The hub: arming, which the notifier owns (it keeps ``sentrycam/armed/state``)."""
    return [
        _entity(
            "switch",
            HUB_NODE,
            "armed",
            "Armed",
            hub_device(),
            command_topic=topics.ARMED_SET,
            state_topic=topics.ARMED_STATE,
            payload_on=topics.ON,
            payload_off=topics.OFF,
            icon="mdi:shield-home",
            **availability(topics.service_status("notifier")),
        )
    ]


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
        return self._camera_labels.get(camera, self._labels)

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
            self.bad_payloads += 1
            self._bad_log.report(f"info:{camera}", f"ignored camera info on {message.topic}: {error}")
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

    def _on_hass_status(self, message: mqtt.MQTTMessage) -> None:
        if message.payload.strip().lower() != topics.ONLINE.encode():
            return
        with self._lock:
            cameras = list(self._cameras.values())
        self._logger.info("Home Assistant is online: republishing discovery for %d camera(s)", len(cameras))
        self._publish(hub_entities())
        for info in cameras:
            self._publish(camera_entities(info, self._labels_of(info.camera)))
