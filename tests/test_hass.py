"""Home Assistant discovery: configs Home Assistant accepts, and a Home Assistant-like subscriber that finds
the cameras, their pictures and their sensors on the real broker."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import cv2
import jinja2
import pytest
from pydantic import ValidationError

from scripts.localbroker import LocalBroker
from services.common import hass, schemas, topics
from services.common.mqtt import MqttClient
from services.detector.discovery import HassDiscovery
from tests.camera_support import camera_settings
from tests.support import MODEL_DIR, PERSON_VIDEO, Collector, ServiceProcess, camera_info, service_settings

# What Home Assistant's MQTT platforms accept, from its documentation (integrations/<platform>.mqtt) and
# homeassistant/components/mqtt/abbreviations.py. Full names with the abbreviations we might meet.
ABBREVIATIONS = {
    "avty": "availability",
    "avty_mode": "availability_mode",
    "avty_t": "availability_topic",
    "cmd_t": "command_topic",
    "cont_type": "content_type",
    "def_ent_id": "default_entity_id",
    "dev": "device",
    "dev_cla": "device_class",
    "ent_cat": "entity_category",
    "ic": "icon",
    "img_t": "image_topic",
    "o": "origin",
    "obj_id": "object_id",
    "pl_avail": "payload_available",
    "pl_not_avail": "payload_not_available",
    "pl_off": "payload_off",
    "pl_on": "payload_on",
    "stat_cla": "state_class",
    "stat_t": "state_topic",
    "sup_dur": "support_duration",
    "sup_vol": "support_volume_set",
    "t": "topic",
    "uniq_id": "unique_id",
    "unit_of_meas": "unit_of_measurement",
    "val_tpl": "value_template",
}
DEVICE_ABBREVIATIONS = {"ids": "identifiers", "mf": "manufacturer", "mdl": "model", "sw": "sw_version"}
COMMON_KEYS = {
    "availability": list,
    "availability_mode": str,
    "default_entity_id": str,
    "device": dict,
    "entity_category": str,
    "icon": str,
    "name": (str, type(None)),
    "object_id": str,
    "origin": dict,
    "unique_id": str,
}
PLATFORMS: dict[str, dict[str, Any]] = {
    "camera": {"required": {"topic"}, "keys": {"topic": str, "image_encoding": str}},
    "image": {"required": {"image_topic"}, "keys": {"image_topic": str, "content_type": str}},
    "binary_sensor": {
        "required": {"state_topic"},
        "keys": {"state_topic": str, "payload_on": str, "payload_off": str, "device_class": str},
        "device_classes": {"occupancy", "motion", "presence"},
    },
    "siren": {
        "required": {"command_topic"},
        "keys": {
            "command_topic": str,
            "state_topic": str,
            "payload_on": str,
            "payload_off": str,
            "support_duration": bool,
            "support_volume_set": bool,
            "json_attributes_topic": str,  # Home Assistant's MQTT siren takes it (the alarm's result)
        },
    },
    "switch": {
        "required": {"command_topic"},
        "keys": {"command_topic": str, "state_topic": str, "payload_on": str, "payload_off": str},
    },
    "sensor": {
        "required": {"state_topic"},
        "keys": {
            "state_topic": str,
            "value_template": str,
            "unit_of_measurement": str,
            "state_class": str,
            "device_class": str,
        },
        "device_classes": {"duration", "frequency"},
    },
}
DEVICE_KEYS = {"identifiers", "name", "manufacturer", "model", "sw_version", "hw_version", "via_device"}
TOPIC_KEYS = {"topic", "image_topic", "state_topic", "command_topic", "json_attributes_topic"}


def expand(config: dict[str, Any], table: dict[str, str]) -> dict[str, Any]:
    """Abbreviations to full names, as Home Assistant does; a key given both ways is an error."""
    expanded: dict[str, Any] = {}
    for key, value in config.items():
        full = table.get(key, key)
        if full in expanded:
            raise ValueError(f"{full} given twice (once abbreviated)")
        expanded[full] = value
    return expanded


def problems(component: str, object_id: str, config: dict[str, Any]) -> list[str]:
    """What Home Assistant would refuse or warn about in one discovery config."""
    if component not in PLATFORMS:
        return [f"unknown component {component}"]
    platform = PLATFORMS[component]
    found: list[str] = []
    try:
        config = expand(config, ABBREVIATIONS)
    except ValueError as error:
        return [str(error)]
    allowed = {**COMMON_KEYS, **platform["keys"]}
    found += [f"unknown key {key}" for key in config if key not in allowed]
    found += [
        f"missing {key}"
        for key in sorted(platform["required"] | {"unique_id", "device"})
        if key not in config
    ]
    for key, value in config.items():
        if key in allowed and not isinstance(value, allowed[key]):
            found.append(f"{key} has type {type(value).__name__}")
    for key in TOPIC_KEYS & config.keys():
        if not isinstance(config[key], str) or not config[key] or set("+#") & set(config[key]):
            found.append(f"{key} {config[key]!r} is not a topic name")
    if "device_class" in config and config["device_class"] not in platform.get("device_classes", set()):
        found.append(f"device_class {config['device_class']} not for {component}")
    if config.get("entity_category") not in (None, "config", "diagnostic"):
        found.append(f"entity_category {config['entity_category']}")
    if not re.fullmatch(r"[a-z0-9_]+", str(config.get("object_id", ""))):
        found.append(f"object_id {config.get('object_id')!r} is not an entity id slug")
    if config.get("default_entity_id") != f"{component}.{config.get('object_id')}":
        found.append("default_entity_id is not <component>.<object_id>")
    if config.get("availability_mode", "all") not in {"all", "any", "latest"}:
        found.append("availability_mode")
    for entry in config.get("availability", []):
        if (
            not isinstance(entry, dict)
            or "topic" not in entry
            or set(entry)
            - {
                "topic",
                "payload_available",
                "payload_not_available",
                "value_template",
            }
        ):
            found.append(f"availability entry {entry}")
    device = expand(config.get("device", {}), DEVICE_ABBREVIATIONS)
    found += [f"unknown device key {key}" for key in device if key not in DEVICE_KEYS]
    if not device.get("identifiers"):
        found.append("device without identifiers")
    if not re.fullmatch(r"[A-Za-z0-9_-]+", object_id):
        found.append(f"topic object id {object_id!r}")
    return found


def all_entities(camera: str, labels: list[str]) -> list[hass.Entity]:
    return hass.camera_entities(camera_info(camera), labels) + hass.hub_entities()


def test_every_discovery_config_is_one_home_assistant_accepts() -> None:
    entities = all_entities("back-yard", ["person", "car"])
    report = {e.topic("homeassistant"): problems(e.component, e.object_id, e.config) for e in entities}
    assert {topic: found for topic, found in report.items() if found} == {}
    unique_ids = [e.config["unique_id"] for e in entities]
    assert len(unique_ids) == len(set(unique_ids))
    components = sorted(e.component for e in entities)
    assert components == sorted(
        ["camera", "siren", "switch", "switch", "sensor", "sensor"] + ["binary_sensor", "image"] * 2
    )
    assert "homeassistant/binary_sensor/sentrycam_back-yard/person/config" in report
    occupancy = next(e.config for e in entities if e.component == "binary_sensor")
    assert occupancy["default_entity_id"] == "binary_sensor.sentrycam_back_yard_person"
    assert occupancy["device_class"] == "occupancy"
    # Entity ids must not change between runs: they are derived from the camera id and label only.
    again = all_entities("back-yard", ["person", "car"])
    assert [e.config for e in again] == [e.config for e in entities]


def test_the_validator_catches_what_home_assistant_refuses() -> None:
    good = hass.hub_entities()[0]
    assert problems(good.component, good.object_id, good.config) == []
    broken = [
        {k: v for k, v in good.config.items() if k != "unique_id"},
        {**good.config, "stat_t": "sentrycam/armed/state"},
        {**good.config, "state_topic": "cam/+/alarm/state"},
        {**good.config, "availability": [{"payload_available": "online"}]},
        {**good.config, "device": {"name": "no identifiers"}},
        {**good.config, "default_entity_id": "sensor.sentrycam_armed"},
        {**good.config, "payload_on": True},
        {**good.config, "colour": "red"},
    ]
    assert all(problems(good.component, good.object_id, config) for config in broken)


def test_discovery_prefix_setting() -> None:
    assert hass.HassSettings().ha_discovery_prefix == "homeassistant"
    assert hass.HassSettings(ha_discovery_prefix="off").ha_discovery_prefix == ""
    assert hass.HassSettings(ha_discovery_prefix="").ha_discovery_prefix == ""
    assert hass.HassSettings(ha_discovery_prefix="ha/test").ha_discovery_prefix == "ha/test"
    for bad in ("home/#", "/leading", "with space"):
        with pytest.raises(ValidationError):
            hass.HassSettings(ha_discovery_prefix=bad)


def jpeg_from_footage() -> bytes:
    capture = cv2.VideoCapture(str(PERSON_VIDEO))
    ok, image = capture.read()
    capture.release()
    assert ok, f"cannot read {PERSON_VIDEO}"
    ok, encoded = cv2.imencode(".jpg", image)
    assert ok
    return bytes(encoded.tobytes())


class HomeAssistantLike:
    """Does what Home Assistant's MQTT integration does: read the discovery prefix as the homeassistant
    user, then subscribe to the topics each config names."""

    def __init__(self, broker: LocalBroker, prefix: str, camera: str) -> None:
        self.prefix = prefix
        self.camera = camera
        self.discovery = Collector(broker, f"{prefix}/#", user="homeassistant")
        self.broker = broker

    def configs(self, count: int) -> dict[str, dict[str, Any]]:
        """The latest non-empty config per topic of this camera and the hub, waiting for ``count``."""
        deadline = time.monotonic() + 10
        while True:
            latest: dict[str, bytes] = {}
            for message in self.discovery.on(f"{self.prefix}/+/+/+/config"):
                if f"/sentrycam_{self.camera}/" in message.topic or "/sentrycam/" in message.topic:
                    latest[message.topic] = message.payload
            found = {topic: json.loads(payload) for topic, payload in latest.items() if payload}
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def follow(self, configs: dict[str, dict[str, Any]]) -> Collector:
        named = {c[key] for c in configs.values() for key in TOPIC_KEYS - {"command_topic"} if key in c}
        # A login of its own next to `discovery`: the broker binds the client id to the login.
        follower = self.broker.login_like("homeassistant", "homeassistant-follow")
        return Collector(self.broker, *sorted(named), user=follower)

    def close(self) -> None:
        self.discovery.close()


def test_a_home_assistant_like_subscriber_finds_the_camera_and_follows_its_entities(
    broker: LocalBroker,
) -> None:
    camera = f"ha-{uuid.uuid4().hex[:8]}"
    prefix = hass.DEFAULT_PREFIX
    camera_login = broker.camera_env(camera)
    jpeg = jpeg_from_footage()
    home_assistant = HomeAssistantLike(broker, prefix, camera)
    detector = MqttClient(
        service_settings(broker, "detector"),
        client_id=f"hass-test-{camera}",
        status_topic=topics.service_status("detector"),
        logger=logging.getLogger("hass-test"),
    )
    # Served by this detector: only `camera`; another camera's info must not make entities here.
    discovery = HassDiscovery(detector, prefix, ["person"], logging.getLogger("hass-test"), cameras=[camera])
    detector.serve(discovery.routes())
    not_served = f"{camera}-x"
    admin = Collector(broker)
    discovery.start()
    detector.start()
    camera_side = Collector(broker, user=camera_login["MQTT_USERNAME"])
    try:
        assert detector.connected.wait(10)
        admin.publish(topics.info(not_served), camera_info(not_served).to_json())
        camera_side.publish(topics.info(camera), camera_info(camera).to_json(), retain=True)
        expected = len(all_entities(camera, ["person"]))
        configs = home_assistant.configs(expected)
        assert len(configs) == expected
        assert not [t for t, c in configs.items() if problems(t.split("/")[-4], t.split("/")[-2], c)]
        followed = home_assistant.follow(configs)
        try:
            # The camera's picture, and what the detector publishes for the label.
            camera_side.publish(topics.frame(camera), jpeg, qos=0)
            detector.publish(topics.label_snapshot(camera, "person"), jpeg, qos=1, retain=True)
            detector.publish(topics.label_state(camera, "person"), topics.ON, qos=1, retain=True)
            for config in configs.values():
                picture_topic = config.get("topic") or config.get("image_topic")
                if picture_topic:
                    received = followed.wait_for(picture_topic)
                    assert schemas.looks_like_jpeg(received.payload)
            occupancy = [c for c in configs.values() if c.get("device_class") == "occupancy"]
            assert occupancy
            for config in occupancy:
                assert followed.wait_for(config["state_topic"]).payload in {b"ON", b"OFF"}
            # The siren's attributes: what the camera did with the last alarm command.
            (siren,) = [c for c in configs.values() if "support_duration" in c]
            result = schemas.AlarmResult(
                camera=camera, result="cooling_down", cooldown_left_s=18.0, at=time.time()
            )
            camera_side.publish(siren["json_attributes_topic"], result.to_json(), retain=True)
            attributes = json.loads(followed.wait_for(siren["json_attributes_topic"]).payload)
            assert (attributes["result"], attributes["cooldown_left_s"]) == ("cooling_down", 18.0)
        finally:
            followed.close()

        # Home Assistant restarts: it says "online" and gets every config again.
        seen = len(home_assistant.discovery.messages)
        home_assistant.discovery.publish(topics.hass_status(prefix), topics.ONLINE)
        home_assistant.discovery.wait_count(f"{prefix}/#", seen + expected + 1)

        # Removing the camera: its info cleared, its entities go (empty retained configs).
        camera_side.publish(topics.info(camera), b"", retain=True)
        for topic in configs:
            if f"/sentrycam_{camera}/" in topic:
                home_assistant.discovery.wait_for(topic, lambda m: m.payload == b"")
        assert discovery.bad_payloads == 0
        camera_side.publish(topics.info(camera), b"{not json", retain=False)
        home_assistant.discovery.publish(topics.hass_status(prefix), "offline")
        deadline = time.monotonic() + 5
        while discovery.bad_payloads == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert discovery.bad_payloads == 1
        assert not [
            m.topic for m in home_assistant.discovery.messages if f"/sentrycam_{not_served}/" in m.topic
        ]
    finally:
        for retained in (
            topics.label_state(camera, "person"),
            topics.label_snapshot(camera, "person"),
            topics.alarm_result(camera),
        ):
            admin.publish(retained, b"", retain=True)  # the detector's topics: no camera may clear them
        camera_side.close()
        admin.close()
        detector.stop()
        home_assistant.close()


def test_with_the_real_camera_and_detector_home_assistant_sees_pictures_and_occupancy(
    broker: LocalBroker, service: Callable[[str, dict[str, str]], ServiceProcess]
) -> None:
    """The whole path: the camera service streams the person video, the detector service (with the real
    model) publishes discovery and its states, and the Home Assistant-like subscriber follows them."""
    camera = f"hae2e-{uuid.uuid4().hex[:8]}"
    home_assistant = HomeAssistantLike(broker, hass.DEFAULT_PREFIX, camera)
    service(
        "detector",
        {
            **broker.env("detector"),
            "DETECTOR_MODEL": str(MODEL_DIR / "detect.tflite"),
            "DETECTOR_CAMERAS": camera,
            "DETECTOR_OBJECTS": "person",
            "DETECTOR_STATS_INTERVAL": "1",
            "DETECTOR_INSTANCE": camera,
        },
    )
    service("camera", camera_settings(broker, camera, CAMERA_FPS="8", CAMERA_LOOP="true"))
    try:
        expected = len(all_entities(camera, ["person"]))
        configs = home_assistant.configs(expected)
        assert len(configs) == expected, sorted(configs)
        followed = home_assistant.follow(configs)
        try:
            for config in configs.values():
                picture_topic = config.get("topic") or config.get("image_topic")
                if picture_topic:
                    received = followed.wait_for(picture_topic, timeout=30)
                    assert schemas.looks_like_jpeg(received.payload), picture_topic
                if config.get("device_class") == "occupancy":
                    assert followed.wait_for(config["state_topic"], timeout=30).payload in {b"ON", b"OFF"}
            # The sensors' templates, rendered as Home Assistant does, give numbers for this camera.
            stats = followed.wait_for(
                topics.DETECTOR_STATS,
                lambda m: (
                    camera in json.loads(m.payload)["cameras"]
                    and json.loads(m.payload)["cameras"][camera]["inferences"] > 0
                ),
                timeout=30,
            )
            for config in configs.values():
                if "value_template" in config:
                    value = jinja2.Template(config["value_template"]).render(
                        value_json=json.loads(stats.payload)
                    )
                    assert float(value) >= 0, (config["unique_id"], value)
        finally:
            followed.close()
    finally:
        home_assistant.close()
