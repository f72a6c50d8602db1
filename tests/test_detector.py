"""Detector parts called directly, on the real model and real footage: fast, no broker."""

from __future__ import annotations

import hashlib
import io
import logging
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
import pytest

from scripts import fetch_model
from services.common import schemas
from services.common.mqtt import MqttClient
from services.common.scores import percent
from services.common.service import create_handler
from services.detector import decode, events
from services.detector import model as model_module
from services.detector.const import MOTION_GLOBAL_FRACTION, PRIORITY_HEAD_START_S
from services.detector.feed import CameraFeed
from services.detector.handler import DetectorHandler
from services.detector.model import Detection, Detector, ModelError, map_outputs, read_labels
from services.detector.motion import MotionGate
from services.detector.objects import foot_of, masked, zones_at
from services.detector.scene import (
    CameraConfig,
    CameraConfigs,
    CameraRules,
    SceneConfig,
    SceneConfigError,
    load_scene_config,
)
from services.detector.settings import DetectorSettings
from services.detector.tracker import CameraTracker, Change, Confirmation, OpenEvent
from tests.detector_support import close_up, close_up_cut
from tests.support import (
    CAR_VIDEO,
    MEDIA_DIR,
    MODEL_DIR,
    PERSON_VIDEO,
    REPO_ROOT,
    jpeg,
    read_frames,
    service_env,
)

MODEL = MODEL_DIR / "detect.tflite"
LABELMAP = MODEL_DIR / "labelmap.txt"
COCO_LABELS = MODEL_DIR / "coco_labels.txt"
PERSON_IMAGES = ("astronaut.png", "grace_hopper.bmp", "camera.png")
NO_PERSON_IMAGES = ("chelsea.png", "coffee.png")
DEFAULTS = Confirmation(
    min_score=0.4,
    frames=4,
    window=6,
    end_after_s=10.0,
    update_interval_s=5.0,
    better_view_margin=0.03,
    stationary_s=30.0,
)
PERSON = CameraConfig(objects=("person",), threshold=0.5, min_area=0.002, max_area=1.0)


@cache
def detector() -> Detector:
    return Detector(MODEL, LABELMAP, threads=2)


def image(name: str) -> np.ndarray:
    loaded = cv2.imread(str(MEDIA_DIR / "images" / name), cv2.IMREAD_COLOR)
    assert loaded is not None
    return loaded


def best_person(detections: list[Detection]) -> Detection | None:
    people = [d for d in detections if d.label == "person"]
    return max(people, key=lambda d: d.score, default=None)


# ---- model


def test_both_label_files_give_the_same_names() -> None:
    labelmap, coco = read_labels(LABELMAP), read_labels(COCO_LABELS)
    assert labelmap[0] == coco[0] == "person"
    assert labelmap[2] == coco[2] == "car"
    assert {k: v for k, v in labelmap.items() if v != "???"} == {k: v for k, v in coco.items() if v != "n/a"}


def test_outputs_are_found_by_name_and_by_values_in_any_order() -> None:
    model = detector()
    outputs = model.interpreter.get_output_details()
    by_name = map_outputs(outputs, {})
    assert by_name == model.outputs
    assert [by_name.boxes, by_name.classes, by_name.scores, by_name.count] == [o["index"] for o in outputs]
    # A TF2/EfficientDet-style export: generic names, order scores, boxes, count, classes.
    model.detect(image("astronaut.png"), 0.5)
    values = {o["index"]: model.interpreter.get_tensor(o["index"]) for o in outputs}
    boxes, classes, scores, count = outputs
    renamed = [
        {**scores, "name": "StatefulPartitionedCall:0"},
        {**boxes, "name": "StatefulPartitionedCall:1"},
        {**count, "name": "StatefulPartitionedCall:2"},
        {**classes, "name": "StatefulPartitionedCall:3"},
    ]
    assert map_outputs(renamed, values) == model.outputs


def test_unsupported_or_broken_models_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"not a flatbuffer at all" * 100)
    with pytest.raises(ModelError, match="cannot load"):
        Detector(garbage, LABELMAP, threads=1)
    with pytest.raises(ModelError, match="does not exist"):
        Detector(tmp_path / "missing.tflite", LABELMAP, threads=1)
    monkeypatch.chdir(tmp_path)
    if Path("/models/detect.tflite").exists():
        assert model_module.resolve_model(None) == Path("/models/detect.tflite")
    else:
        with pytest.raises(ModelError, match="fetch_model"):
            model_module.resolve_model(None)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "detect.tflite").write_bytes(b"x")
    assert model_module.resolve_model(None) in {Path("/models/detect.tflite"), Path("models/detect.tflite")}


@pytest.mark.parametrize("name", PERSON_IMAGES)
def test_person_images_score_a_person(name: str) -> None:
    person = best_person(detector().detect(image(name), 0.3))
    assert person is not None and person.score >= 0.55
    assert all(0.0 <= v <= 1.0 for v in person.box)


@pytest.mark.parametrize("name", NO_PERSON_IMAGES)
def test_no_person_images_score_no_person(name: str) -> None:
    person = best_person(detector().detect(image(name), 0.3))
    assert person is None or person.score < 0.4


# ---- zones and masks


def test_zones_and_masks_test_the_bottom_centre_of_the_box() -> None:
    person = best_person(detector().detect(image("astronaut.png"), 0.5))
    assert person is not None
    foot_x, foot_y = foot_of(person.box)
    around = [
        [foot_x - 0.1, foot_y - 0.1],
        [foot_x + 0.1, foot_y - 0.1],
        [foot_x + 0.1, 1.0],
        [foot_x - 0.1, 1.0],
    ]
    elsewhere = [[0.0, 0.0], [0.2, 0.0], [0.2, 0.2], [0.0, 0.2]]

    def zones(polygons: dict[str, list[list[float]]]) -> list[str]:
        return zones_at(person.box, CameraRules.model_validate({"zones": polygons}).zones)

    def is_masked(masks: object) -> bool:
        return masked(person, CameraRules.model_validate({"masks": masks}).masks)

    assert zones({}) == [] and zones({"door": around}) == ["door"] and zones({"corner": elsewhere}) == []
    assert is_masked({"street": around}) and not is_masked({"street": elsewhere})
    assert is_masked([elsewhere, around]) and not is_masked([elsewhere]) and not is_masked({})
    # A box whose top is inside a zone but whose foot is not is not in it.
    head_only = [[0.0, 0.0], [1.0, 0.0], [1.0, person.box[1] + 0.05], [0.0, person.box[1] + 0.05]]
    assert zones({"top": head_only}) == []


def test_scene_config_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "scene.yaml"
    path.write_text(
        "cameras:\n  front:\n    objects: [person, Traffic Light]\n    threshold: 0.6\n"
        "    zones:\n      door: [[0, 0.5], [0.5, 0.5], [0.5, 1]]\n"
        "    masks:\n      - [[0, 0], [1, 0], [1, 0.1]]\n      - [[0, 0.9], [1, 0.9], [1, 1]]\n"
        "  back:\n    masks:\n      street: [[0, 0], [1, 0], [1, 0.1]]\n"
    )
    scene = load_scene_config(path)
    rules = scene.cameras["front"]
    assert rules.objects == ["person", "traffic_light"]
    assert rules.threshold == 0.6 and list(rules.zones) == ["door"]
    # The older list of masks: named by their place.
    assert rules.masks == {"mask 1": [(0, 0), (1, 0), (1, 0.1)], "mask 2": [(0, 0.9), (1, 0.9), (1, 1)]}
    assert scene.cameras["back"].masks == {"street": [(0, 0), (1, 0), (1, 0.1)]}
    for bad, where in (
        (
            "cameras:\n  a:\n    masks:\n      street: [[0, 0], [1, 0]]\n",
            "cameras.a.masks.street: List should",
        ),
        (
            "cameras:\n  a:\n    masks:\n      - [[0, 0], [2, 0], [1, 1]]\n",
            "cameras.a.masks.mask 1.1.0: Input",
        ),
        ("cameras:\n  a:\n    masks: street\n", "cameras.a.masks: Input should be a valid dictionary"),
    ):
        path.write_text(bad)
        with pytest.raises(SceneConfigError) as raised:
            load_scene_config(path)
        assert str(raised.value).startswith(f"{path}: {where}") and "\n" not in str(raised.value), (
            raised.value
        )
    for bad in (
        "cameras:\n  Front!: {}\n",
        "cameras:\n  a:\n    zones:\n      z: [[0, 0], [2, 0], [1, 1]]\n",
        "[",
        "x: 1\n",
    ):
        path.write_text(bad)
        with pytest.raises(SceneConfigError):
            load_scene_config(path)


def test_zones_fit_the_bounds_of_the_event_message(tmp_path: Path) -> None:
    """Every event names its zones, and consumers refuse more than 32 or a name over 64 characters: such
    a config stops the detector at start rather than making events nobody takes."""
    path = tmp_path / "scene.yaml"
    triangle = "[[0, 0], [1, 0], [1, 1]]"

    def zones(names: list[str]) -> str:
        return "cameras:\n  a:\n    zones:\n" + "".join(f"      '{name}': {triangle}\n" for name in names)

    path.write_text(zones([f"z{index}" for index in range(32)] + ["n" * 64]))
    with pytest.raises(SceneConfigError, match=r"cameras\.a\.zones: Dictionary should have at most 32 items"):
        load_scene_config(path)
    path.write_text(zones(["n" * 65]))
    with pytest.raises(SceneConfigError, match="String should have at most 64 characters"):
        load_scene_config(path)
    path.write_text(zones([f"z{index}" for index in range(31)] + ["n" * 64]))
    assert len(load_scene_config(path).cameras["a"].zones) == 32


class RecordingClient:
    """Stands in for the MQTT client where only what is published matters."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: bytes | str, **_options: Any) -> None:
        self.published.append((topic, payload.encode() if isinstance(payload, str) else payload))


def test_a_snapshot_too_big_for_the_event_message_is_left_out_of_it(caplog: pytest.LogCaptureFixture) -> None:
    """The event goes out without the picture rather than over the broker's message limit (or not at all)."""
    noise = np.random.default_rng(1).integers(0, 256, (3000, 3000, 3), np.uint8)  # JPEG of about 7 MB
    person = Detection("person", 0.9, (0.1, 0.1, 0.5, 0.9))
    opened = OpenEvent("big-1-person", 1.0, 0.9, 0.9, person, [], 1.0, 1.0, 1.0)
    client = RecordingClient()
    events.publish_change(
        cast(MqttClient, client),
        logging.getLogger("test"),
        "big",
        Change("start", "person", opened, 1.0, [person], []),
        noise,
    )
    published = dict(client.published)
    message = schemas.DetectionEvent.parse(published["cam/big/person"])
    assert (message.type, message.snapshot) == ("start", None)
    assert len(published["cam/big/person/snapshot"]) > schemas.MAX_SNAPSHOT_BYTES
    assert "snapshot of" in caplog.text and "is too big for the event message; sent without it" in caplog.text


def test_the_snapshot_labels_the_events_box_with_the_events_score() -> None:
    """The score the page and the email say (the event's top_score), said the same way; a trial found the
    label printing the frame's raw score (0.77) next to a page saying 73 %."""
    person = Detection("person", 0.77, (0.1, 0.1, 0.5, 0.9))
    other = Detection("person", 0.552, (0.6, 0.1, 0.9, 0.9))
    opened = OpenEvent("label-1-person", 1.0, 0.725, 0.725, person, [], 1.0, 1.0, 1.0)
    client = RecordingClient()
    change = Change("start", "person", opened, 1.0, [person, other], [])
    image = np.zeros((90, 160, 3), np.uint8)
    events.publish_change(cast(MqttClient, client), logging.getLogger("test"), "label", change, image)
    message = schemas.DetectionEvent.parse(dict(client.published)["cam/label/person"])
    assert percent(message.top_score) == "73 %"
    assert events.box_label(person, person, message.top_score) == "person 73 %"
    assert events.box_label(other, person, message.top_score) == "person 55 %"
    # The detector's label and the relay's page say one score one way: half up, as the browser rounds.
    assert [percent(score) for score in (0.625, 0.005, 0.0, 1.0)] == ["63 %", "1 %", "0 %", "100 %"]


# ---- confirmation on the real footage


def run_tracker(detections: list[list[Detection]], fps: float) -> list[tuple[int, str]]:
    tracker = CameraTracker("t", DEFAULTS, PERSON)
    changes: list[tuple[int, str]] = []
    for index, found in enumerate(detections):
        now = index / fps
        for change in tracker.observe(found, now, now):
            changes.append((index, change.type))
        changes.extend((index, change.type) for change in tracker.expire(now))
    return changes


def test_car_clip_single_frame_false_positive_makes_no_event() -> None:
    detections = [detector().detect(frame, DEFAULTS.min_score) for frame in read_frames(CAR_VIDEO)]
    people = [d for found in detections for d in found if d.label == "person"]
    assert max(d.score for d in people) >= 0.5, (
        "the known false positive (frame 193) scores over the threshold"
    )
    assert run_tracker(detections, 12.5) == []
    # At 5 fps (every other frame, both phases) it stays quiet too.
    assert run_tracker(detections[::2], 6.25) == []
    assert run_tracker(detections[1::2], 6.25) == []


def test_person_clip_starts_after_the_empty_opening_and_ends_after_leaving() -> None:
    # Frames 30-120: empty room until 61, then a person; then empty tail frames for longer than end_after.
    frames = read_frames(PERSON_VIDEO, 30, 120) + read_frames(PERSON_VIDEO, 1360, 1393) * 4
    changes = run_tracker([detector().detect(frame, DEFAULTS.min_score) for frame in frames], 10.0)
    kinds = [kind for _, kind in changes]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("start") == 1
    start_index = changes[0][0] + 30
    assert 62 <= start_index <= 70
    end_index = changes[-1][0]
    assert 90 + 100 <= end_index <= 90 + 102  # 10 s at 10 fps after the last person frame (index 90)


# ---- the tracker's rules, on made-up detections (no model)

# Times are multiples of 1/8 s, so every sum and difference below is exact.
STEP = 0.125
BOX = (0.4, 0.3, 0.6, 0.9)


def person(score: float, box: tuple[float, float, float, float] = BOX) -> Detection:
    return Detection("person", score, box)


def see(tracker: CameraTracker, at: float, *found: Detection) -> list[Change]:
    """One processed frame, captured and processed at ``at``."""
    return tracker.observe(list(found), at, at)


def start_event(tracker: CameraTracker, score: float) -> float:
    """Four sightings STEP apart start the event on the fourth; returns when."""
    for index in range(3):
        assert see(tracker, index * STEP, person(score)) == []
    [start] = see(tracker, 3 * STEP, person(score))
    assert start.type == "start"
    return 3 * STEP


def test_an_event_starts_on_m_of_k_sightings_with_a_median_at_the_threshold() -> None:
    tracker = CameraTracker("t", DEFAULTS, PERSON)
    # Sightings (S) among frames that see nothing or score under DETECTOR_MIN_SCORE: S - - S - S - S has
    # only three in its last six frames, however high they score; the next sighting makes four.
    frames: list[list[Detection]] = [[person(0.9)], [person(0.39)], [], [person(0.9)], [], [person(0.9)]]
    frames += [[person(0.3)], [person(0.9)]]
    for index, found in enumerate(frames):
        assert see(tracker, index * STEP, *found) == [], index
    [start] = see(tracker, 8 * STEP, person(0.9))
    assert start.type == "start" and start.label == "person"
    assert start.event.started_at == 3 * STEP  # the first sighting still in the window
    assert start.frame_time == 8 * STEP and start.detections == [person(0.9)]
    assert start.event.event_id == f"t-{int(3 * STEP * 1000)}-person"

    # The median, not the mean: 0.45 0.45 0.45 0.9 averages 0.5625 but its median is 0.45.
    tracker = CameraTracker("t", DEFAULTS, PERSON)
    for index, score in enumerate([0.45, 0.45, 0.45, 0.9, 0.9]):
        assert see(tracker, index * STEP, person(score)) == [], index
    [start] = see(tracker, 5 * STEP, person(0.9))
    assert start.type == "start" and start.event.score == pytest.approx(0.675)


def test_the_threshold_and_sizes_of_a_camera_come_from_its_effective_config() -> None:
    scene = SceneConfig.model_validate(
        {"cameras": {"strict": {"threshold": 0.8}, "close": {"min_area": 0.5}}}
    )
    configs = CameraConfigs.resolve(PERSON, scene)
    assert configs.of("strict") == CameraConfig(("person",), 0.8, PERSON.min_area, PERSON.max_area)
    assert configs.of("elsewhere") == PERSON
    trackers = {camera: CameraTracker(camera, DEFAULTS, configs.of(camera)) for camera in configs.cameras}
    trackers["other"] = CameraTracker("other", DEFAULTS, configs.of("other"))
    started = {}
    for camera, tracker in trackers.items():
        changes = [change for index in range(4) for change in see(tracker, index * STEP, person(0.7))]
        started[camera] = [change.type for change in changes]
    # 0.7 is under the strict camera's 0.8; the 0.12 box is under the close camera's smallest (0.5).
    assert started == {"strict": [], "close": [], "other": ["start"]}
    strict = CameraTracker("strict", DEFAULTS, configs.of("strict"))
    assert start_event(strict, 0.8) == 3 * STEP


def test_an_open_event_sends_an_update_without_snapshot_every_update_interval_while_seen() -> None:
    tracker = CameraTracker("t", DEFAULTS, PERSON)
    started = start_event(tracker, 0.6)
    # 0.62 is no better view (0.6 + 0.03): nothing until DETECTOR_UPDATE_INTERVAL has passed.
    for at in (1.0, 2.0, 3.0, 4.0, started + DEFAULTS.update_interval_s - STEP):
        assert see(tracker, at, person(0.62)) == [], at
    due = started + DEFAULTS.update_interval_s
    assert see(tracker, due) == []  # nothing seen: no update
    [update] = see(tracker, due + STEP, person(0.62))
    assert update.type == "update" and update.detections == []
    assert update.event.score == pytest.approx(0.62) and update.event.top_score == pytest.approx(0.6)
    # The next one is a whole interval later.
    assert see(tracker, due + 2 * STEP, person(0.62)) == []
    later = due + STEP + DEFAULTS.update_interval_s
    assert [change.type for change in see(tracker, later, person(0.62))] == ["update"]


def test_a_better_view_sends_an_update_with_the_boxes_to_draw() -> None:
    margin = replace(DEFAULTS, better_view_margin=0.125)
    tracker = CameraTracker("t", margin, PERSON)
    started = start_event(tracker, 0.5)
    # The median climbs 0.5, 0.5, 0.5625 (< 0.5 + 0.125): no update yet.
    for index in range(1, 4):
        assert see(tracker, started + index * STEP, person(0.625)) == [], index
    other = person(0.45, (0.0, 0.3, 0.2, 0.9))
    tiny = person(0.95, (0.5, 0.5, 0.51, 0.51))  # under DETECTOR_MIN_AREA: not counted, not drawn
    [update] = see(tracker, started + 4 * STEP, person(0.625), other, tiny)
    # The median reaches 0.625 = best + margin exactly.
    assert update.type == "update" and update.event.top_score == 0.625
    assert update.detections == [person(0.625), other] and update.event.detection == person(0.625)
    # The same view again is not better than the new best.
    assert see(tracker, started + 5 * STEP, person(0.625)) == []


def test_an_event_ends_end_after_seconds_after_its_last_sighting_or_at_once_when_forced() -> None:
    tracker = CameraTracker("t", DEFAULTS, PERSON)
    start_event(tracker, 0.6)
    assert tracker.observe([person(0.6)], 0.875, 1.0) == []  # captured at 0.875, processed at 1.0
    # Frames without the person, or with a score under DETECTOR_MIN_SCORE, do not keep it open.
    # The person out of view for over a second is told at once, in an update listing no object.
    [gone] = see(tracker, 2.0)
    assert (gone.type, gone.objects, gone.detections) == ("update", [], [])
    assert see(tracker, 3.0, person(0.3)) == []
    assert tracker.expire(1.0 + DEFAULTS.end_after_s - STEP) == []
    [end] = tracker.expire(1.0 + DEFAULTS.end_after_s)
    assert end.type == "end" and end.ended_at == 0.875 and end.frame_time == 0.875
    assert end.detections == [] and end.event.score == pytest.approx(0.6)
    assert [o.last_seen for o in end.objects] == [0.875]  # the end lists those of the last sighting
    assert tracker.expire(20.0) == [] and not tracker.tracking
    # A new event needs M sightings again: the old ones were forgotten with the event.
    assert see(tracker, 20.0, person(0.9)) == [] and tracker.tracking

    both = CameraConfig(("person", "car"), 0.5, 0.002, 1.0)
    forced = CameraTracker("f", DEFAULTS, both)
    start_event(forced, 0.6)
    assert forced.expire(0.5) == []
    ends = forced.expire(0.5, force=True)
    assert [(change.type, change.label) for change in ends] == [("end", "person")]
    assert forced.expire(0.5, force=True) == []


def test_a_camera_confirming_a_sighting_goes_before_idle_cameras_and_those_before_open_events() -> None:
    """The order of frames across cameras under load (docs/detector.md): priority from the tracker first,
    then how long the camera has waited; each step of priority counts as PRIORITY_HEAD_START_S of waiting,
    so a camera passed over long enough still gets its turn."""
    feeds = {
        name: CameraFeed(name, CameraTracker(name, DEFAULTS, PERSON), MotionGate(0.12, 0.005, 5.0))
        for name in ("open", "idle", "confirming")
    }
    start_event(feeds["open"].tracker, 0.6)
    see(feeds["confirming"].tracker, 0.0, person(0.9))
    for feed in feeds.values():
        feed.update_priority()
    assert [f.tracking for f in feeds.values()] == [True, False, True]
    feeds["confirming"].waiting_since = 10.0
    feeds["idle"].waiting_since = 9.95  # waited longer, but nothing is on its way to confirmation
    feeds["open"].waiting_since = 9.5  # waited longer still, but its event is already out
    assert [f.camera for f in sorted(feeds.values(), key=CameraFeed.turn)] == ["confirming", "idle", "open"]
    feeds["open"].waiting_since = 10.0 - 2 * PRIORITY_HEAD_START_S - 0.01
    assert min(feeds.values(), key=CameraFeed.turn).camera == "open"


# ---- motion gate


def test_motion_gate_ignores_a_static_scene_and_infers_only_the_frame_of_a_lighting_jump() -> None:
    frames = read_frames(PERSON_VIDEO, 0, 80)
    gate = MotionGate(0.12, 0.005, force_interval_s=1000.0)
    gate.should_infer(frames[0], 0.0, tracking=False)  # first frame: background, inferred
    static = [gate.should_infer(f, 1.0 + i, tracking=False) for i, f in enumerate(frames[1:50])]
    assert not any(static)
    jumps: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "darker": lambda f: cv2.convertScaleAbs(f, alpha=0.6),
        "gamma": lambda f: (255 * (f / 255.0) ** 0.6).astype(np.uint8),
        "lamp on, clipping": lambda f: cv2.convertScaleAbs(f, alpha=1.4, beta=40),
    }
    for name, jump in jumps.items():
        lit = MotionGate(0.12, 0.005, force_interval_s=1000.0)
        lit.should_infer(frames[0], 0.0, tracking=False)
        for frame in frames[1:20]:
            lit.should_infer(frame, 1.0, tracking=False)
        # Equalization undoes the first two; the clipping one changes most of the frame at once: that one
        # frame is inferred (it could be a person filling the picture) and becomes the background.
        inferred = [lit.should_infer(jump(f), 2.0, tracking=False) for f in frames[20:40]]
        assert inferred == [name == "lamp on, clipping"] + [False] * 19, name
    walking_in = [gate.should_infer(f, 60.0 + i, tracking=False) for i, f in enumerate(frames[50:80])]
    assert sum(walking_in) >= 15
    # Tracking and the periodic forced inference run the model on a static frame anyway.
    assert gate.should_infer(frames[10], 200.0, tracking=True)
    periodic = MotionGate(0.12, 0.005, force_interval_s=5.0)
    periodic.should_infer(frames[0], 0.0, tracking=False)
    assert not periodic.should_infer(frames[1], 1.0, tracking=False)
    assert periodic.should_infer(frames[2], 5.5, tracking=False)


def test_motion_gate_infers_the_frame_of_a_cut_to_a_close_up_person() -> None:
    """The gate's view of close_up_cut (tests/detector_support.py): real frames zoomed to a crop where the
    person fills over a third of the picture. The cut changes most of the frame; it is inferred."""
    empty, person = close_up_cut((768, 432), empty=6, person=4)
    gate = MotionGate(0.12, 0.005, force_interval_s=1000.0)
    room = [
        gate.should_infer(decode.for_gate(payload), float(i), tracking=False)
        for i, payload in enumerate(empty)
    ]
    assert room == [True] + [False] * 5  # the first frame (no background yet), then a static room
    assert gate.should_infer(decode.for_gate(person[0]), 10.0, tracking=False)
    assert gate.last_changed_fraction >= MOTION_GLOBAL_FRACTION
    # The person standing still is the new background: no motion on the next frame.
    assert not gate.should_infer(decode.for_gate(person[1]), 10.2, tracking=False)


# ---- decoding no larger than needed


def test_the_reduction_is_the_largest_that_still_covers_the_model_input() -> None:
    factors = tuple(decode.COLOUR)
    assert decode.reduction(768, 432, 300, 300, factors) == 1  # 384x216 would not cover 300 rows
    assert decode.reduction(1280, 720, 300, 300, factors) == 2  # 640x360
    assert decode.reduction(1920, 1080, 300, 300, factors) == 2  # 480x270 at 1/4 would not
    assert decode.reduction(2560, 1440, 300, 300, factors) == 4  # 640x360
    assert decode.reduction(3840, 2160, 300, 300, factors) == 4  # 480x270 at 1/8 would not
    assert decode.reduction(7680, 4320, 300, 300, factors) == 8
    assert decode.reduction(2400, 2401, 300, 300, factors) == 8  # rounded up as libjpeg does: 300x301
    assert decode.reduction(200, 100, 300, 300, factors) == 1  # smaller than the input: whole


def test_reduced_decodes_have_the_sizes_libjpeg_gives_and_the_whole_frame_stays_available() -> None:
    frame = close_up(read_frames(PERSON_VIDEO, 100, 100)[0], (1920, 1080))
    payload = jpeg(frame)
    image, factor = decode.for_model(payload, 300, 300)
    assert factor == 2 and image.shape == (540, 960, 3)
    whole, factor = decode.for_model(payload, 300, 300, reduce=False)
    assert factor == 1 and whole.shape == (1080, 1920, 3)
    assert decode.for_gate(payload).shape == (135, 240)  # 1/8 still leaves three times 64x36
    assert decode.for_gate(jpeg(read_frames(PERSON_VIDEO, 0, 0)[0])).shape == (108, 192)  # 768x432: 1/4
    with pytest.raises(decode.DecodeError):
        decode.for_model(payload[:600], 300, 300)  # the header and a little data: nothing to decode


def test_the_model_finds_the_same_people_on_the_reduced_decode() -> None:
    """Every 20th frame of the first half of the person footage (0-680: the empty room, three people),
    upscaled to 1280x720 as a camera of that size would send it: the person is found (>= 0.5) on the
    same frames whether the model's picture is decoded at half size or whole, and the scores differ
    little. (bench/detector.py compares every frame of the footage.)"""
    frames = read_frames(PERSON_VIDEO, 0, 699)[::20]
    found = {}
    for reduce in (True, False):
        scores = []
        for frame in frames:
            image, _ = decode.for_model(jpeg(cv2.resize(frame, (1280, 720))), 300, 300, reduce=reduce)
            best = best_person(detector().detect(image, 0.3))
            scores.append(best.score if best else 0.0)
        found[reduce] = np.array(scores)
    reduced, whole = found[True], found[False]
    assert int((whole >= 0.5).sum()) >= 20, "the people of the footage are found on the whole frames"
    assert ((reduced >= 0.5) != (whole >= 0.5)).sum() <= 1
    assert float(np.abs(reduced - whole).mean()) < 0.03


# ---- start-up errors and settings


def run_detector(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.detector"],
        env=service_env({"MQTT_HOST": "127.0.0.1", "MQTT_PORT": "1", **env}),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DETECTOR_THRESHOLD": "1.5"}, "DETECTOR_THRESHOLD"),
        ({"DETECTOR_CAMERAS": "front,Bad.Cam"}, "DETECTOR_CAMERAS"),
        ({"DETECTOR_MODEL": "/nonexistent/detect.tflite"}, "DETECTOR_MODEL"),
        ({"DETECTOR_OBJECTS": "person,unicorn"}, "DETECTOR_OBJECTS"),
        ({"DETECTOR_CONFIG": "/nonexistent.yaml"}, "DETECTOR_CONFIG"),
        ({"DETECTOR_CONFIRM_FRAMES": "6", "DETECTOR_CONFIRM_WINDOW": "5"}, "DETECTOR_CONFIRM_FRAMES"),
        ({}, "fetch_model"),
    ],
)
def test_bad_settings_and_models_stop_the_service_with_one_line(
    env: dict[str, str], message: str, tmp_path: Path
) -> None:
    full = {"DETECTOR_MODEL": str(MODEL), **env} if env else {}
    result = run_detector(full, tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_unsupported_model_file_stops_the_service(tmp_path: Path) -> None:
    bogus = tmp_path / "detect.tflite"
    bogus.write_bytes(LABELMAP.read_bytes())
    (tmp_path / "labelmap.txt").write_bytes(LABELMAP.read_bytes())
    result = run_detector({"DETECTOR_MODEL": str(bogus)}, tmp_path)
    assert result.returncode == 2
    assert "cannot load" in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("setting", "name", "content"),
    [
        ("DETECTOR_LABELS", "labels.txt", b""),
        ("DETECTOR_LABELS", "labels.txt", "person\ncar\n".encode("utf-16")),
        ("DETECTOR_LABELS", "labels.txt", b"0 person\n1\n"),
        ("DETECTOR_MODEL", "detect.tflite", np.random.default_rng(7).bytes(200_000)),
        ("DETECTOR_CONFIG", "scene.yaml", b"cameras:\n  front: [\n"),
        ("DETECTOR_CONFIG", "scene.yaml", b"cameras:\n  \xff\xfe: {}\n"),
    ],
)
def test_unusable_files_stop_the_service_with_one_line_naming_the_setting(
    setting: str, name: str, content: bytes, tmp_path: Path
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    result = run_detector(
        {"DETECTOR_MODEL": str(MODEL), "DETECTOR_LABELS": str(LABELMAP), setting: str(path)}, tmp_path
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"sentrycam-detector: invalid setting {setting}"), lines[0]
    assert "Traceback" not in result.stderr


def test_the_subscriptions_are_one_table_per_camera_or_for_all_cameras() -> None:
    logger = logging.getLogger("detector-test")
    listed = DetectorSettings(_env_file=None, detector_model=MODEL, detector_cameras=["a", "b"])
    routes = {
        topic: route.qos for topic, route in create_handler(DetectorHandler, listed, logger).routes().items()
    }
    per_camera = {
        f"cam/{camera}/{level}": qos
        for camera in ("a", "b")
        for level, qos in (("frame", 0), ("detect/set", 1), ("detect/state", 1), ("config/set", 1))
    }
    assert routes == {**per_camera, "cam/+/info": 1, "homeassistant/status": 1}
    every = DetectorSettings(_env_file=None, detector_model=MODEL, ha_discovery_prefix="off")
    routes = {
        topic: route.qos for topic, route in create_handler(DetectorHandler, every, logger).routes().items()
    }
    assert routes == {"cam/+/frame": 0, "cam/+/detect/set": 1, "cam/+/detect/state": 1, "cam/+/config/set": 1}


# ---- fetch_model


def model_zip(tmp_path: Path, model: bytes) -> Path:
    path = tmp_path / "coco_ssd_mobilenet_v1_1.0_quant_2018_06_29.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("detect.tflite", model)
        archive.writestr("labelmap.txt", LABELMAP.read_bytes())
    return path


def test_fetch_model_checks_the_checksum_and_extracts(tmp_path: Path) -> None:
    good = model_zip(tmp_path, MODEL.read_bytes())
    dest = tmp_path / "models"
    assert fetch_model.main(["--dest", str(dest), "--from-zip", str(good)]) == 0
    assert hashlib.sha256((dest / "detect.tflite").read_bytes()).hexdigest() == fetch_model.MODEL_SHA256
    assert (dest / "labelmap.txt").read_bytes() == LABELMAP.read_bytes()
    # The same through a file:// URL, the way a mirror would be used, into a fresh directory.
    mirror = tmp_path / "mirror"
    assert fetch_model.main(["--dest", str(mirror), "--url", good.as_uri()]) == 0
    assert (mirror / "detect.tflite").read_bytes() == MODEL.read_bytes()
    # A tampered model is refused and nothing is written.
    tampered_dir = tmp_path / "tampered"
    tampered_dir.mkdir()
    tampered = model_zip(tampered_dir, MODEL.read_bytes()[:-1] + b"\x00")
    refused = tmp_path / "refused"
    assert fetch_model.main(["--dest", str(refused), "--from-zip", str(tampered)]) == 1
    assert not refused.exists()
    with pytest.raises(fetch_model.FetchError, match="not a zip"):
        fetch_model.extract(b"garbage")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("other.txt", "x")
    with pytest.raises(fetch_model.FetchError, match=r"no detect\.tflite"):
        fetch_model.extract(buffer.getvalue())


def test_fetched_model_is_found_at_the_default_location(tmp_path: Path) -> None:
    """python -m scripts.fetch_model --dest models, then the detector starts with no DETECTOR_MODEL."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "scripts.fetch_model",
            "--dest",
            str(tmp_path / "models"),
            "--from-zip",
            str(model_zip(tmp_path, MODEL.read_bytes())),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env=service_env({}),
    )
    assert result.returncode == 0, result.stderr
    # Started in tmp_path, the detector resolves models/detect.tflite and then fails only at the broker.
    process = subprocess.Popen(
        [sys.executable, "-m", "services.detector"],
        env=service_env({"MQTT_HOST": "127.0.0.1", "MQTT_PORT": "1"}),
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        while line and "model" not in line:
            line = process.stderr.readline()
        assert "models/detect.tflite" in line, line
    finally:
        process.kill()
        process.wait()
