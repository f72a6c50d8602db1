"""Home Assistant MQTT discovery: the entities of every camera, and of the hub, appear by themselves.

The payload builders here are pure functions (configs as dicts, one per entity); the detector publishes them
(services/detector/discovery.py) for each camera that announces itself on the retained ``cam/<id>/info``,
again whenever Home Assistant says ``online`` on ``<prefix>/status``, and empty (which makes Home Assistant
delete the entities) when a camera's info is cleared. See docs/home-assistant.md.

Per-component topics ``<prefix>/<component>/<node_id>/<object_id>/config`` are used, which every Home
Assistant release since 2024 reads. Field names are written out in full (Home Assistant also accepts its
abbreviations); ``object_id`` and ``default_entity_id`` are both set, so entity ids are stable on releases
before and after ``object_id`` was deprecated (2025.10).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import Field, field_validator

from services.common import __version__, schemas, topics
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
        description="Home Assistant's MQTT discovery prefix; `off` publishes no discovery.",
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
            # What became of the last command (result, cooldown_left_s, error, at) as the siren's attributes.
            json_attributes_topic=topics.alarm_result(cam),
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
