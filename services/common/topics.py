"""The topic contract. Every topic string in SentryCam is built here and nowhere else (see docs/mqtt.md)."""

from __future__ import annotations

import re

CAMERA_ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
LABEL_RE = re.compile(r"[a-z0-9][a-z0-9_]{0,31}")

# Words under cam/<id>/ that are not detection labels, so no label may take them.
RESERVED_WORDS = frozenset({"frame", "status", "info", "alarm", "detect", "clip", "config"})

ONLINE = "online"
OFFLINE = "offline"
ON = "ON"
OFF = "OFF"

ARMED_SET = "sentrycam/armed/set"
ARMED_STATE = "sentrycam/armed/state"
DETECTOR_STATS = "sentrycam/detector/stats"
RECORDER_STATS = "sentrycam/recorder/stats"
NOTIFIER_STATS = "sentrycam/notifier/stats"
# Every service's status and every service's stats (the web relay's system page): sentrycam/<service>/...,
# neither overlapping sentrycam/armed/state.
ALL_SERVICE_STATUS = "sentrycam/+/status"
ALL_SERVICE_STATS = "sentrycam/+/stats"

ALL_FRAMES = "cam/+/frame"
ALL_INFO = "cam/+/info"
ALL_CLIPS = "cam/+/clip"
ALL_DETECT_SET = "cam/+/detect/set"
ALL_DETECT_STATE = "cam/+/detect/state"
ALL_CONFIG_SET = "cam/+/config/set"
ALL_CONFIG_STATE = "cam/+/config/state"
ALL_ALARM_RESULTS = "cam/+/alarm/result"  # overlaps neither of the two below
# Every cam/<id>/<level> message (frames, status, info and every label's events) in one filter, and every
# cam/<id>/<level>/state: a consumer of all of them avoids overlapping filters, for which the broker would
# deliver each frame twice.
ALL_CAMERA_MESSAGES = "cam/+/+"
ALL_CAMERA_STATES = "cam/+/+/state"


def validate_camera_id(camera_id: str) -> str:
    """Refuse anything that could escape its topic level or a file name (wildcards, slashes, dots)."""
    if not CAMERA_ID_RE.fullmatch(camera_id):
        raise ValueError(
            f"camera id {camera_id!r} must be 1-32 of a-z 0-9 _ -, starting with a letter or digit"
        )
    return camera_id


def label_slug(label: str) -> str:
    """A model label as a topic level: ``traffic light`` becomes ``traffic_light``."""
    slug = re.sub(r"[^a-z0-9]+", "_", label.strip().lower()).strip("_")
    if not LABEL_RE.fullmatch(slug) or slug in RESERVED_WORDS:
        raise ValueError(f"label {label!r} cannot be used as a topic level")
    return slug


def _cam(camera_id: str, *levels: str) -> str:
    return "/".join(("cam", validate_camera_id(camera_id), *levels))


def frame(camera_id: str) -> str:
    return _cam(camera_id, "frame")


def status(camera_id: str) -> str:
    return _cam(camera_id, "status")


def info(camera_id: str) -> str:
    return _cam(camera_id, "info")


def clip(camera_id: str) -> str:
    """The recorder's announcements of one camera's clips (``cam/<id>/clip``)."""
    return _cam(camera_id, "clip")


def alarm_set(camera_id: str) -> str:
    return _cam(camera_id, "alarm", "set")


def alarm_state(camera_id: str) -> str:
    return _cam(camera_id, "alarm", "state")


def alarm_result(camera_id: str) -> str:
    return _cam(camera_id, "alarm", "result")


def detect_set(camera_id: str) -> str:
    return _cam(camera_id, "detect", "set")


def detect_state(camera_id: str) -> str:
    return _cam(camera_id, "detect", "state")


def config_set(camera_id: str) -> str:
    """A camera's zones, masks and overrides, written by the web relay or Home Assistant (retained)."""
    return _cam(camera_id, "config", "set")


def config_state(camera_id: str) -> str:
    """What the detector uses for the camera now, and why the latest config/set was refused (retained)."""
    return _cam(camera_id, "config", "state")


def event(camera_id: str, label: str) -> str:
    """Detection events for one label: ``cam/<id>/person``."""
    return _cam(camera_id, label_slug(label))


def label_state(camera_id: str, label: str) -> str:
    return _cam(camera_id, label_slug(label), "state")


def label_snapshot(camera_id: str, label: str) -> str:
    return _cam(camera_id, label_slug(label), "snapshot")


def all_events(label: str) -> str:
    """Filter for one label's events on every camera: ``cam/+/person``."""
    return f"cam/+/{label_slug(label)}"


def camera_frames(camera_id: str | None) -> str:
    """Frames of one camera, or of all of them when ``camera_id`` is None."""
    return ALL_FRAMES if camera_id is None else frame(camera_id)


def camera_messages(camera_id: str | None) -> str:
    """Every ``cam/<id>/<level>`` message of one camera, or of all of them when ``camera_id`` is None."""
    return ALL_CAMERA_MESSAGES if camera_id is None else _cam(camera_id, "+")


def service_status(service: str) -> str:
    return f"sentrycam/{service}/status"


def camera_of(topic: str) -> str | None:
    """The camera id of a ``cam/<id>/...`` topic, or None when the topic is not one of ours."""
    parts = topic.split("/")
    if len(parts) < 3 or parts[0] != "cam" or not CAMERA_ID_RE.fullmatch(parts[1]):
        return None
    return parts[1]


def label_of_event(topic: str) -> str | None:
    """The label of an event topic ``cam/<id>/<label>``, or None for any other topic."""
    parts = topic.split("/")
    if len(parts) != 3 or camera_of(topic) is None or parts[2] in RESERVED_WORDS:
        return None
    return parts[2] if LABEL_RE.fullmatch(parts[2]) else None


def label_of_state(topic: str) -> str | None:
    """The label of ``cam/<id>/<label>/state``, or None for any other topic (detect and alarm states)."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[3] != "state":
        return None
    return label_of_event("/".join(parts[:3]))


# Home Assistant MQTT discovery (services/common/hass.py); the prefix is a setting.
HASS_NAME_RE = re.compile(r"[a-zA-Z0-9_-]+")


def hass_status(prefix: str) -> str:
    """Where Home Assistant says ``online`` when it starts, asking for the discovery configs again."""
    return f"{prefix}/status"


def hass_config(prefix: str, component: str, node_id: str, object_id: str) -> str:
    """A per-component discovery topic: ``<prefix>/<component>/<node_id>/<object_id>/config``."""
    for level in (component, node_id, object_id):
        if not HASS_NAME_RE.fullmatch(level):
            raise ValueError(f"{level!r} cannot be a discovery topic level")
    return f"{prefix}/{component}/{node_id}/{object_id}/config"
