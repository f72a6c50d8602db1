"""Detector parts called directly, on the real model and real footage: fast, no broker."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import zipfile
from collections.abc import Callable
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import pytest

from scripts import fetch_model
from services.detector import model as model_module
from services.detector.model import Detection, Detector, ModelError, map_outputs, read_labels
from services.detector.motion import MotionGate
from services.detector.scene import CameraRules, SceneConfigError, load_scene_config, zones_of
from services.detector.tracker import CameraTracker, Confirmation
from tests.detector_support import read_frames
from tests.support import CAR_VIDEO, MEDIA_DIR, MODEL_DIR, PERSON_VIDEO, REPO_ROOT, service_env

MODEL = MODEL_DIR / "detect.tflite"
LABELMAP = MODEL_DIR / "labelmap.txt"
COCO_LABELS = MODEL_DIR / "coco_labels.txt"
PERSON_IMAGES = ("astronaut.png", "grace_hopper.bmp", "camera.png")
NO_PERSON_IMAGES = ("chelsea.png", "coffee.png")
DEFAULTS = Confirmation(
    threshold=0.5,
    min_score=0.4,
    frames=4,
    window=6,
    min_area=0.002,
    max_area=1.0,
    end_after_s=10.0,
    update_interval_s=5.0,
    better_view_margin=0.03,
)


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
    foot_x, foot_y = person.foot
    around = [
        [foot_x - 0.1, foot_y - 0.1],
        [foot_x + 0.1, foot_y - 0.1],
        [foot_x + 0.1, 1.0],
        [foot_x - 0.1, 1.0],
    ]
    elsewhere = [[0.0, 0.0], [0.2, 0.0], [0.2, 0.2], [0.0, 0.2]]
    assert zones_of(person, CameraRules()) == []
    assert zones_of(person, CameraRules.model_validate({"zones": {"door": around}})) == ["door"]
    assert zones_of(person, CameraRules.model_validate({"zones": {"corner": elsewhere}})) is None
    assert zones_of(person, CameraRules.model_validate({"masks": [around]})) is None
    assert zones_of(person, CameraRules.model_validate({"masks": [elsewhere]})) == []
    # A box whose top is inside a zone but whose foot is not does not count.
    head_only = [[0.0, 0.0], [1.0, 0.0], [1.0, person.box[1] + 0.05], [0.0, person.box[1] + 0.05]]
    assert zones_of(person, CameraRules.model_validate({"zones": {"top": head_only}})) is None


def test_scene_config_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "scene.yaml"
    path.write_text(
        "cameras:\n  front:\n    objects: [person, Traffic Light]\n    threshold: 0.6\n"
        "    zones:\n      door: [[0, 0.5], [0.5, 0.5], [0.5, 1]]\n"
        "    masks:\n      - [[0, 0], [1, 0], [1, 0.1]]\n"
    )
    rules = load_scene_config(path).cameras["front"]
    assert rules.objects == ["person", "traffic_light"]
    assert rules.threshold == 0.6 and list(rules.zones) == ["door"] and len(rules.masks) == 1
    for bad in (
        "cameras:\n  Front!: {}\n",
        "cameras:\n  a:\n    zones:\n      z: [[0, 0], [2, 0], [1, 1]]\n",
        "[",
        "x: 1\n",
    ):
        path.write_text(bad)
        with pytest.raises(SceneConfigError):
            load_scene_config(path)


# ---- confirmation on the real footage


def run_tracker(detections: list[list[Detection]], fps: float) -> list[tuple[int, str]]:
    tracker = CameraTracker("t", DEFAULTS, CameraRules(), ["person"])
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


# ---- motion gate


def test_motion_gate_ignores_a_static_scene_and_lighting_jumps_but_sees_a_person() -> None:
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
        assert not any(lit.should_infer(jump(f), 2.0, tracking=False) for f in frames[20:40]), name
    walking_in = [gate.should_infer(f, 60.0 + i, tracking=False) for i, f in enumerate(frames[50:80])]
    assert sum(walking_in) >= 15
    # Tracking and the periodic forced inference run the model on a static frame anyway.
    assert gate.should_infer(frames[10], 200.0, tracking=True)
    periodic = MotionGate(0.12, 0.005, force_interval_s=5.0)
    periodic.should_infer(frames[0], 0.0, tracking=False)
    assert not periodic.should_infer(frames[1], 1.0, tracking=False)
    assert periodic.should_infer(frames[2], 5.5, tracking=False)


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
