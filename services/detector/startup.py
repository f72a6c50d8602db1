"""What the detector loads before it runs: the model, its labels, the event rules and every camera's config.

Each problem the user must fix is a :class:`StartupError` naming the setting to fix: one line and exit
code 2, never a traceback. The files are checked before the model loads, so that a typo costs no time
and its error is the only line (the runtime prints its own lines when a model loads).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.common.service import StartupError
from services.detector.const import BETTER_VIEW_MARGIN
from services.detector.model import (
    Detector,
    ModelError,
    read_labels,
    resolve_labels,
    resolve_model,
    topic_labels,
)
from services.detector.scene import (
    CameraConfig,
    CameraConfigs,
    SceneConfigError,
    load_scene_config,
    unknown_labels,
)
from services.detector.settings import DetectorSettings
from services.detector.tracker import Confirmation


@dataclass(frozen=True)
class Loaded:
    detector: Detector
    model_path: Path
    confirmation: Confirmation
    cameras: CameraConfigs
    labels: frozenset[str]  # the model's, as topic levels: what a camera's config may look for


def load(settings: DetectorSettings) -> Loaded:
    """Raises :class:`StartupError`."""
    try:
        model_path = resolve_model(settings.detector_model)
    except ModelError as error:
        raise StartupError("DETECTOR_MODEL", str(error)) from error
    try:
        labels_path = resolve_labels(settings.detector_labels, model_path)
        labels = frozenset(topic_labels(read_labels(labels_path)).values())
    except ModelError as error:
        raise StartupError("DETECTOR_LABELS", str(error)) from error
    cameras = camera_configs(settings, labels)
    data_dir = settings.detector_data_dir
    if data_dir.exists() and not data_dir.is_dir():
        raise StartupError("DETECTOR_DATA_DIR", "not a directory", data_dir)
    try:
        detector = Detector(model_path, labels_path, settings.detector_threads)
    except ModelError as error:
        raise StartupError("DETECTOR_MODEL", str(error)) from error
    return Loaded(detector, model_path, confirmation(settings), cameras, labels)


def confirmation(settings: DetectorSettings) -> Confirmation:
    return Confirmation(
        min_score=settings.detector_min_score,
        frames=settings.detector_confirm_frames,
        window=settings.detector_confirm_window,
        end_after_s=settings.detector_end_after,
        update_interval_s=settings.detector_update_interval,
        better_view_margin=BETTER_VIEW_MARGIN,
        stationary_s=settings.detector_stationary_s,
    )


def camera_configs(settings: DetectorSettings, labels: frozenset[str]) -> CameraConfigs:
    """DETECTOR_CONFIG over the DETECTOR_* defaults, every label checked against the model's, each section
    as a camera's config/set message is (scene.resolved)."""
    try:
        scene = load_scene_config(settings.detector_config)
    except SceneConfigError as error:
        raise StartupError("DETECTOR_CONFIG", str(error)) from error
    default = CameraConfig(
        objects=tuple(settings.detector_objects),
        threshold=settings.detector_threshold,
        min_area=settings.detector_min_area,
        max_area=settings.detector_max_area,
    )
    unknown = unknown_labels(default.objects, labels)
    if unknown:
        raise StartupError("DETECTOR_OBJECTS", f"the model has no label {unknown}")
    try:
        return CameraConfigs.resolve(default, scene, labels)
    except SceneConfigError as error:
        raise StartupError("DETECTOR_CONFIG", str(error)) from error
