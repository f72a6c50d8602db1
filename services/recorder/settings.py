"""The recorder's settings: where clips go, how much video around an event, what to record, for how long."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field, field_validator

from services.common.jpeg import MAX_IMAGE_PIXELS
from services.common.settings import AbsolutePath, CommaList, ServiceSettings
from services.common.topics import label_slug, validate_camera_id


class RecorderSettings(ServiceSettings):
    """Settings of ``python -m services.recorder``."""

    section: ClassVar[str] = "Recorder: event clips and continuous recording"

    record_dir: AbsolutePath = Field(
        Path("data/recordings"),
        validate_default=True,
        description="Where clips and segments are written (/data/recordings in the image); the web relay "
        "reads it as WEB_RECORD_DIR.",
    )
    record_pre_s: float = Field(
        5.0, ge=0.0, le=60.0, description="Seconds of video kept before an event's first sighting."
    )
    record_post_s: float = Field(
        5.0, ge=0.0, le=300.0, description="Seconds of video kept after an event ends."
    )
    record_max_s: float = Field(
        600.0, ge=10.0, le=86400.0, description="A clip longer than this is closed and a new one started."
    )
    record_cameras: CommaList = Field(
        [], description="Cameras to record, comma-separated; empty = every camera."
    )
    record_labels: CommaList = Field(
        [], description="Labels whose events make clips, comma-separated; empty = every label."
    )
    record_continuous: bool = Field(
        False, description="Also record every frame, in segments of RECORD_SEGMENT_S seconds."
    )
    record_segment_s: float = Field(
        300.0, ge=10.0, le=86400.0, description="Length of a continuous recording segment, seconds."
    )
    record_retain_days: float = Field(
        2.0, gt=0.0, le=3650.0, description="Days continuous segments are kept."
    )
    record_events_retain_days: float = Field(
        30.0, gt=0.0, le=3650.0, description="Days event clips are kept."
    )
    record_max_gb: float | None = Field(
        None,
        gt=0.0,
        description="Most gigabytes RECORD_DIR may hold: past it the oldest continuous segments are deleted "
        "first, then the oldest clips; empty = no limit.",
    )
    record_max_frame_pixels: int = Field(
        MAX_IMAGE_PIXELS, ge=1, description="Frames with more pixels than this are refused as bad input."
    )
    record_stats_interval: float = Field(
        30.0, gt=0.0, le=3600.0, description="Seconds between sentrycam/recorder/stats messages."
    )

    @field_validator("record_cameras")
    @classmethod
    def camera_ids(cls, value: list[str]) -> list[str]:
        return [validate_camera_id(camera) for camera in value]

    @field_validator("record_labels")
    @classmethod
    def labels(cls, value: list[str]) -> list[str]:
        return [label_slug(label) for label in value]
