"""A camera's zones, masks and overrides taken live from cam/<id>/config/set: the real detector process, the
real broker with the project's ACL (the web relay's and Home Assistant's logins), the real model on real
footage (docs/detector.md, "Live zones")."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from scripts import mqtt_users
from scripts.localbroker import LocalBroker
from services.common import schemas, topics
from services.detector.scene import (
    CameraConfig,
    CameraConfigs,
    SceneConfig,
    SceneConfigError,
    load_scene_config,
    resolved,
)
from tests.detector_support import MODEL, FramePublisher, wait_stats
from tests.support import PERSON_VIDEO, Collector, ServiceProcess, jpeg, read_frames
from tests.test_detector import run_detector
from tests.test_detector_service import start_detector

Start = Callable[[str, dict[str, str]], ServiceProcess]
Collect = Callable[..., Collector]

# Frames 100-139 of the person footage: one person standing at the table, the foot of the box near
# (0.58, 0.91). TABLE holds that foot, GATE (the top-left corner) does not.
TABLE = [(0.4, 0.6), (0.8, 0.6), (0.8, 1.0), (0.4, 1.0)]
GATE = [(0.0, 0.0), (0.3, 0.0), (0.3, 0.3), (0.0, 0.3)]


@pytest.fixture
def login(broker: LocalBroker) -> Iterator[Callable[[str], Collector]]:
    """A client logged in as a production user (``web``, ``homeassistant``, a camera's), closed after the
    test: the broker binds each login to one connection."""
    made: list[Collector] = []

    def make(user: str) -> Collector:
        made.append(Collector(broker, user=user))
        return made[-1]

    yield make
    for each in made:
        each.close()


def person_frames() -> list[bytes]:
    return [jpeg(frame) for frame in read_frames(PERSON_VIDEO, 100, 139)[::2]]


def person_event(seen: Collector, publisher: FramePublisher, frames: list[bytes]) -> schemas.DetectionEvent:
    """Streams the person until an event starts, returns its start once that event has ended (the camera
    falls quiet for DETECTOR_END_AFTER), so the next call makes a new one."""
    camera, since = publisher.camera_id, time.time()
    topic = topics.event(camera, "person")
    for frame in frames:
        publisher.send(frame)
        time.sleep(0.2)
        if any(b'"start"' in m.payload for m in seen.on(topic, since)):
            break
    start = schemas.DetectionEvent.parse(
        seen.wait_for(topic, lambda m: b'"start"' in m.payload and m.at >= since).payload
    )
    seen.wait_for(topic, lambda m: b'"end"' in m.payload and m.at >= since, timeout=20)
    return start


def zones_of(event: schemas.DetectionEvent) -> list[str]:
    """The event's zones, which its one object must agree with."""
    assert len(event.objects) == 1 and list(event.objects[0].zones) == event.zones
    return event.zones


def state(
    seen: Collector, camera: str, predicate: Callable[[schemas.CameraConfigState], bool], since: float = 0.0
) -> schemas.CameraConfigState:
    message = seen.wait_for(
        topics.config_state(camera),
        lambda m: m.at >= since and bool(m.payload) and predicate(schemas.CameraConfigState.parse(m.payload)),
        timeout=20,
        what="config/state",
    )
    return schemas.CameraConfigState.parse(message.payload)


def refused_with(reason: str) -> Callable[[schemas.CameraConfigState], bool]:
    return lambda s: reason in (s.error or "")


def config_set(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def detector_settings(camera: str, data_dir: Path, **more: str) -> dict[str, str]:
    return {
        "detector_cameras": camera,
        "detector_motion": "false",
        "detector_end_after": "1",
        "detector_data_dir": str(data_dir),
        **more,
    }


# Each refused with its reason on config/state: (payload, a part of the reason).
BAD = [
    (config_set(zones={"table": [[0.1, 0.1], [0.5, 0.5]]}), "zones.table: List should have at least 3 items"),
    (config_set(zone={"table": TABLE}), "zone: Extra inputs are not permitted"),
    # Valid JSON padded over the bound: only the size check refuses it.
    (
        config_set(zones={"gate": GATE}).ljust(schemas.MAX_CONFIG_BYTES + 1),
        f"more than {schemas.MAX_CONFIG_BYTES}",
    ),
    (b'{"zones": {"gate": [[0, 0], [0.3, 0], [0.3, 0.3]]', "Invalid JSON"),
    (config_set(min_area=0.5, max_area=0.2), "min_area 0.5 must be smaller than max_area 0.2"),
    (config_set(min_area=0.3, max_area=0.3), "min_area 0.3 must be smaller than max_area 0.3"),
    (config_set(objects=["unicorn"]), "the model has no label unicorn"),
    (config_set(zones={"line": [[0.1, 0.1], [0.2, 0.2], [0.3, 0.3]]}), "zones.line: the polygon has no area"),
    (config_set(masks={"line": [[0.1, 0.1], [0.2, 0.2], [0.3, 0.3]]}), "masks.line: the polygon has no area"),
    # Only DETECTOR_CONFIG takes the older unnamed list of masks.
    (config_set(masks=[TABLE]), "masks: Input should be a valid dictionary"),
]


def test_a_zone_set_live_is_on_the_next_event_and_bad_ones_are_refused_keeping_it(
    broker: LocalBroker,
    service: Start,
    collector: Collect,
    login: Callable[[str], Collector],
    tmp_path: Path,
) -> None:
    camera = "cfg-live"
    seen = collector(f"cam/{camera}/#", topics.DETECTOR_STATS)
    start_detector(service, collector, broker, **detector_settings(camera, tmp_path / "data"))
    # At start, for the camera it serves: the settings' config, from the file (no DETECTOR_CONFIG here).
    first = state(seen, camera, lambda s: True)
    assert (first.source, first.zones, first.objects, first.error) == ("file", {}, ["person"], None)
    publisher, frames = FramePublisher(broker, camera), person_frames()
    assert zones_of(person_event(seen, publisher, frames)) == []

    web = login("web")  # the zone editor's login
    web.publish(topics.config_set(camera), config_set(zones={"table": TABLE}), retain=True)
    taken = state(seen, camera, lambda s: s.source == "topic")
    assert list(taken.zones) == ["table"] and taken.error is None and taken.threshold == 0.5
    # No restart: the next event stands in the new zone.
    assert zones_of(person_event(seen, publisher, frames)) == ["table"]

    for payload, reason in BAD:
        web.publish(topics.config_set(camera), payload, retain=True)
        refused = state(seen, camera, refused_with(reason))
        assert refused.source == "topic" and list(refused.zones) == ["table"], refused
    wait_stats(seen, camera, lambda s: s.commands_bad == len(BAD))
    # The last good config still applies.
    assert zones_of(person_event(seen, publisher, frames)) == ["table"]

    # A named mask over where the person stands: on config/state by its name, and no event.
    web.publish(
        topics.config_set(camera), config_set(zones={"table": TABLE}, masks={"chair": TABLE}), retain=True
    )
    masked = state(seen, camera, lambda s: bool(s.masks))
    assert masked.masks == {"chair": TABLE} and list(masked.zones) == ["table"] and masked.error is None
    since = time.time()
    before = wait_stats(seen, camera, lambda s: True).inferences
    for frame in frames:
        publisher.send(frame)
        time.sleep(0.2)
    wait_stats(seen, camera, lambda s: s.inferences >= before + len(frames) // 2)
    topic = topics.event(camera, "person")
    assert not [m for m in seen.on(topic, since) if b'"start"' in m.payload]
    # The same mask moved away from the person: the person is an event again.
    web.publish(
        topics.config_set(camera), config_set(zones={"table": TABLE}, masks={"chair": GATE}), retain=True
    )
    moved = state(seen, camera, lambda s: s.masks == {"chair": GATE})
    assert moved.error is None
    assert zones_of(person_event(seen, publisher, frames)) == ["table"]
    web.publish(topics.config_set(camera), b"", retain=True)
    publisher.close()


def test_the_config_survives_a_restart_without_the_retained_message_and_bad_saved_files_are_ignored(
    broker: LocalBroker,
    service: Start,
    collector: Collect,
    login: Callable[[str], Collector],
    tmp_path: Path,
) -> None:
    camera, data = "cfg-saved", tmp_path / "data"
    seen = collector(f"cam/{camera}/#")
    settings = detector_settings(camera, data)
    detector = start_detector(service, collector, broker, **settings)
    web = login("web")
    web.publish(topics.config_set(camera), config_set(zones={"table": TABLE}, threshold=0.55), retain=True)
    state(seen, camera, lambda s: s.source == "topic")
    assert json.loads((data / f"{camera}.json").read_text())["zones"] == {"table": [list(p) for p in TABLE]}
    assert sorted(path.name for path in data.iterdir()) == [f"{camera}.json"]  # no temporary file left
    assert detector.stop() == 0
    # The broker loses the retained message while the detector is down (cleared here, as a broker without
    # persistence would after a restart), and two saved files are broken.
    web.publish(topics.config_set(camera), b"", retain=True)
    (data / "cfg-broken.json").write_bytes(b"{not json")
    (data / "cfg-unicorn.json").write_bytes(config_set(objects=["unicorn"]))
    # Masks as an unnamed list (only unreleased work wrote them so): refused like any invalid file.
    (data / "cfg-listed.json").write_bytes(config_set(masks=[GATE]))
    since = time.time()
    detector = start_detector(service, collector, broker, **{**settings, "detector_cameras": ""})
    saved = state(seen, camera, lambda s: s.source == "saved", since)
    assert list(saved.zones) == ["table"] and saved.threshold == 0.55 and saved.error is None
    detector.wait_for_log(r"ignored the saved camera config .*cfg-broken\.json: not a valid CameraConfigSet")
    detector.wait_for_log(r"ignored the saved camera config .*cfg-listed\.json: not a valid CameraConfigSet")
    detector.wait_for_log(r"ignored the saved config of camera cfg-unicorn: objects: the model has no label")
    publisher = FramePublisher(broker, camera)
    assert zones_of(person_event(seen, publisher, person_frames())) == ["table"]
    assert detector.process is not None and detector.process.poll() is None
    publisher.close()


def test_an_empty_config_set_brings_back_the_files_config_and_only_web_and_home_assistant_may_write_it(
    broker: LocalBroker,
    service: Start,
    collector: Collect,
    login: Callable[[str], Collector],
    tmp_path: Path,
) -> None:
    camera = "cfg-file"
    scene = tmp_path / "scene.yaml"
    scene.write_text(
        f"cameras:\n  {camera}:\n    threshold: 0.45\n    zones:\n      door: {json.dumps(TABLE)}\n"
    )
    seen = collector(f"cam/{camera}/#", f"homeassistant/+/sentrycam_{camera}/#")
    settings = detector_settings(camera, tmp_path / "data", detector_config=str(scene))
    start_detector(service, collector, broker, **settings)
    first = state(seen, camera, lambda s: True)
    assert (first.source, list(first.zones), first.threshold) == ("file", ["door"], 0.45)

    seen.announce(camera)  # its Home Assistant entities: one occupancy sensor per label it looks for
    car = topics.hass_config("homeassistant", "binary_sensor", f"sentrycam_{camera}", "car")
    seen.wait_for(topics.hass_config("homeassistant", "binary_sensor", f"sentrycam_{camera}", "person"))
    home_assistant = login("homeassistant")
    home_assistant.publish(topics.config_set(camera), config_set(zones={"gate": GATE}), retain=True)
    # Fields left out keep the file's section (the threshold); the zones given replace its zones.
    taken = state(seen, camera, lambda s: s.source == "topic")
    assert (list(taken.zones), taken.threshold, taken.objects) == (["gate"], 0.45, ["person"])
    # A camera's login may not write it: the broker drops the forgery, and nothing retained stays.
    broker.camera_env(camera)
    forger = login(mqtt_users.camera_user(camera))
    forger.publish(topics.config_set(camera), config_set(zones={"forged": GATE}), retain=True)
    forger.close()  # the frames below go out under the same login, which is one connection at a time
    home_assistant.publish(
        topics.config_set(camera), config_set(zones={"gate": GATE}, objects=["person", "car"])
    )
    state(seen, camera, lambda s: s.objects == ["person", "car"])
    seen.wait_for(car, lambda m: bool(m.payload), what="the car sensor's discovery config")
    assert not [m for m in seen.on(topics.config_state(camera)) if b"forged" in m.payload]
    publisher, frames = FramePublisher(broker, camera), person_frames()
    assert zones_of(person_event(seen, publisher, frames)) == []  # the person is outside the gate

    since = time.time()
    home_assistant.publish(topics.config_set(camera), b"", retain=True)
    back = state(seen, camera, lambda s: s.source == "file", since)
    assert (list(back.zones), back.threshold, back.objects) == (["door"], 0.45, ["person"])
    assert not (tmp_path / "data" / f"{camera}.json").exists()
    seen.wait_for(car, lambda m: m.payload == b"", what="the car sensor removed")
    assert zones_of(person_event(seen, publisher, frames)) == ["door"]
    seen.forget(camera)
    publisher.close()


DEFAULT = CameraConfig(objects=("person",), threshold=0.5, min_area=0.002, max_area=1.0)
LABELS = frozenset({"person", "car", "traffic_light"})


@pytest.mark.parametrize(
    ("section", "reason"),
    [
        ({"min_area": 0.4, "max_area": 0.4}, "min_area 0.4 must be smaller than max_area 0.4"),
        ({"max_area": 0.001}, "min_area 0.002 must be smaller than max_area 0.001"),  # with the default
        ({"objects": ["unicorn"]}, "objects: the model has no label unicorn"),
        ({"objects": []}, "objects: name at least one label"),
        ({"objects": ["config"]}, "cannot be used as a topic level"),
        ({"zones": {" ": GATE}}, "zones: a zone name must not be blank"),
        (
            {"masks": {"street": [[0.1, 0.1], [0.2, 0.2], [0.3, 0.3]]}},
            "masks.street: the polygon has no area",
        ),
        ({"masks": {" ": GATE}}, "masks: a mask name must not be blank"),
    ],
)
def test_a_file_section_and_a_config_set_are_refused_for_the_same_reasons(
    section: dict[str, object], reason: str, tmp_path: Path
) -> None:
    """One check for both (scene.resolved): what the zone editor may not save, the file may not say."""
    with pytest.raises(ValueError, match=reason):
        resolved(DEFAULT, schemas.CameraConfigSet.parse(json.dumps(section).encode()), LABELS)
    path = tmp_path / "scene.yaml"
    path.write_text(json.dumps({"cameras": {"front": section}}))  # JSON is YAML
    with pytest.raises(SceneConfigError, match=f"front.*{reason}"):
        CameraConfigs.resolve(DEFAULT, load_scene_config(path), LABELS)


def test_a_config_set_goes_over_the_cameras_file_section() -> None:
    section = load_section({"threshold": 0.7, "objects": ["Traffic Light"], "zones": {"door": TABLE}})
    message = schemas.CameraConfigSet.parse(config_set(masks={"gate": GATE}, min_area=0.01))
    config = resolved(section, message, LABELS)
    assert (config.objects, config.threshold, config.min_area) == (("traffic_light",), 0.7, 0.01)
    assert list(config.zones) == ["door"] and config.masks == {"gate": GATE}  # zones kept, masks given
    cleared = resolved(section, schemas.CameraConfigSet.parse(config_set(zones={})), LABELS)
    assert cleared.zones == {} and cleared.threshold == 0.7


def load_section(section: dict[str, object]) -> CameraConfig:
    """A camera's DETECTOR_CONFIG section over the settings, as the detector resolves it at start."""
    return resolved(
        DEFAULT, SceneConfig.model_validate({"cameras": {"front": section}}).cameras["front"], LABELS
    )


@pytest.mark.parametrize(
    ("setting", "content", "problem"),
    [
        (
            "DETECTOR_CONFIG",
            "cameras:\n  front:\n    min_area: 0.5\n    max_area: 0.5\n",
            "camera front: min_area",
        ),
        (
            "DETECTOR_CONFIG",
            "cameras:\n  front:\n    masks:\n      street: [[0.1, 0.1], [0.2, 0.2], [0.3, 0.3]]\n",
            "camera front: masks.street: the polygon has no area",
        ),
        (  # the older list of masks: named by its place
            "DETECTOR_CONFIG",
            "cameras:\n  front:\n    masks:\n      - [[0, 0], [1, 0], [1, 1]]\n"
            "      - [[0, 0], [0.5, 0.5], [1, 1]]\n",
            "camera front: masks.mask 2: the polygon has no area",
        ),
        (
            "DETECTOR_CONFIG",
            "cameras:\n  Front:\n    threshold: 0.5\n",
            "cameras.Front: Value error, camera id 'Front' must be",
        ),
        ("DETECTOR_DATA_DIR", "a file, not a directory", "not a directory"),
    ],
)
def test_a_bad_config_file_or_data_dir_stops_the_detector_with_one_line(
    setting: str, content: str, problem: str, tmp_path: Path
) -> None:
    path = tmp_path / "named"
    path.write_text(content)
    result = run_detector({"DETECTOR_MODEL": str(MODEL), setting: str(path)}, tmp_path)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"sentrycam-detector: invalid setting {setting}") and problem in line, line
