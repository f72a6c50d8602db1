"""Settings of the detector service."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field, field_validator, model_validator

from services.common import schemas, topics
from services.common.hass import HassSettings
from services.common.settings import AbsolutePath, CommaList, OptionalFile, OptionalPath


class DetectorSettings(HassSettings):
    """What the detector looks for, where, and how sure it must be before it says so."""

    section: ClassVar[str] = "Detector"

    detector_model: OptionalPath = Field(
        None,
        description="Path to the .tflite model; empty = /models/detect.tflite, then models/detect.tflite "
        "(python -m scripts.fetch_model downloads it).",
    )
    detector_labels: OptionalFile = Field(
        None,
        description="Label file of the model; empty = labelmap.txt or coco_labels.txt next to the model.",
    )
    detector_threads: int = Field(2, ge=1, le=64, description="CPU threads the interpreter may use.")
    detector_objects: CommaList = Field(
        default_factory=lambda: ["person"],
        description="Labels that make events, comma-separated, e.g. person,car,dog.",
    )
    detector_threshold: float = Field(
        0.5, gt=0.0, le=1.0, description="Smoothed (median) score an object needs to become an event."
    )
    detector_min_score: float = Field(
        0.4,
        gt=0.0,
        le=1.0,
        description="Score from which a single frame counts as a sighting towards confirmation and keeps an "
        "event alive.",
    )
    detector_confirm_frames: int = Field(
        4,
        ge=1,
        le=50,
        description="M: sightings needed within the last K processed frames to start an event.",
    )
    detector_confirm_window: int = Field(
        6, ge=1, le=50, description="K: how many of the latest processed frames the confirmation looks at."
    )
    detector_min_area: float = Field(
        0.002,
        ge=0.0,
        le=1.0,
        description="Smallest box, as a fraction of the frame area; smaller is ignored.",
    )
    detector_max_area: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="Largest box, as a fraction of the frame area; larger is ignored (1 = no limit: a "
        "close-up portrait fills 90% of the frame).",
    )
    detector_cameras: CommaList = Field(
        default_factory=list,
        description="Camera ids this instance serves, comma-separated; empty = every camera. Give each "
        "detector instance its own cameras to spread the load over several machines.",
    )
    detector_config: OptionalFile = Field(
        None, description="YAML file with per-camera zones, masks and overrides (see docs/detector.md)."
    )
    detector_data_dir: AbsolutePath = Field(
        Path("data/detector"),
        validate_default=True,
        description="Directory where the last good config/set of each camera is kept, so that its zones "
        "survive a restart (see docs/detector.md); a volume in Docker.",
    )
    detector_end_after: float = Field(
        10.0, gt=0.0, le=3600.0, description="Seconds without the object before its event ends."
    )
    detector_update_interval: float = Field(
        5.0, gt=0.0, le=3600.0, description="Seconds between update messages of an open event."
    )
    detector_stationary_s: float = Field(
        30.0,
        gt=0.0,
        le=86400.0,
        description="Seconds without moving after which an object is stationary (a parked car): found "
        "again after its detection flickered off, it does not alert again.",
    )
    detector_motion: bool = Field(
        True, description="Skip inference on frames without motion (a static scene)."
    )
    detector_motion_threshold: float = Field(
        0.12,
        gt=0.0,
        le=1.0,
        description="Change of a pixel of the small equalized grayscale copy (0-1) that counts as motion.",
    )
    detector_motion_area: float = Field(
        0.005, gt=0.0, le=1.0, description="Fraction of the frame that must change to count as motion."
    )
    detector_motion_force_interval: float = Field(
        5.0,
        gt=0.0,
        le=3600.0,
        description="Seconds after which a frame is inferred even without motion, so a still person is seen.",
    )
    detector_reduced_decode: bool = Field(
        True,
        description="Decode frames for the model at the smallest JPEG scale (1/2, 1/4, 1/8) that still "
        "covers the model input; false decodes them whole (snapshots are always drawn on the whole frame).",
    )
    detector_max_frame_bytes: int = Field(
        schemas.MAX_FRAME_BYTES, ge=1024, description="Frames bigger than this are refused as bad input."
    )
    detector_max_frame_pixels: int = Field(
        40_000_000, ge=1, description="Decoded frames with more pixels than this are refused as bad input."
    )
    detector_stats_interval: float = Field(
        30.0, gt=0.0, le=3600.0, description="Seconds between sentrycam/detector/stats messages."
    )
    detector_instance: str = Field(
        "",
        pattern=r"^[A-Za-z0-9_-]{0,32}$",
        description="Name of this detector instance in stats (each instance also needs a broker login of "
        "its own, see docs/deploy.md); empty = host name and process id.",
    )

    @field_validator("detector_objects")
    @classmethod
    def object_labels(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("name at least one label, e.g. person")
        return [topics.label_slug(label) for label in value]

    @field_validator("detector_cameras")
    @classmethod
    def camera_ids(cls, value: list[str]) -> list[str]:
        return [topics.validate_camera_id(camera) for camera in value]

    @model_validator(mode="after")
    def consistent(self) -> DetectorSettings:
        if self.detector_confirm_frames > self.detector_confirm_window:
            raise ValueError("DETECTOR_CONFIRM_FRAMES (M) must not exceed DETECTOR_CONFIRM_WINDOW (K)")
        if self.detector_min_area >= self.detector_max_area:
            raise ValueError("DETECTOR_MIN_AREA must be smaller than DETECTOR_MAX_AREA")
        if self.detector_min_score > self.detector_threshold:
            raise ValueError("DETECTOR_MIN_SCORE must not exceed DETECTOR_THRESHOLD")
        return self
