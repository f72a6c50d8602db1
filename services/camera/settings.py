"""Settings of the camera service (``CAMERA_*`` and ``ALARM_*``)."""

from __future__ import annotations

import importlib.util
import shlex
from pathlib import Path
from typing import ClassVar, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import cv2
from pydantic import Field, field_validator

from services.camera.const import DEFAULT_ALARM_SOUND
from services.common.schemas import CameraId
from services.common.settings import OptionalFile, ServiceSettings

SourceKind = Literal["device", "file", "stream", "picamera"]

STREAM_SCHEMES = ("rtsp", "rtsps", "http", "https")
PICAMERA = "picamera"
PICAMERA_MISSING = (
    "picamera needs the picamera2 module, which is not importable here "
    "(Raspberry Pi OS: sudo apt install python3-picamera2, and a venv made with --system-site-packages)"
)
# Query parameters some IP cameras take credentials in; their values never leave the process.
SECRET_WORDS = ("pass", "pwd", "secret", "token", "key", "auth")


def source_kind(source: str) -> SourceKind:
    """What kind of source the setting names; ValueError when it names nothing usable."""
    if source.isdigit() or source.startswith("/dev/"):
        if not source.isdigit() and not Path(source).exists():
            raise ValueError(f"no such device: {source}")
        return "device"
    if source == PICAMERA:
        if importlib.util.find_spec("picamera2") is None:
            raise ValueError(PICAMERA_MISSING)
        return "picamera"
    scheme = urlsplit(source).scheme.lower()
    if scheme in STREAM_SCHEMES:
        if not urlsplit(source).hostname:
            raise ValueError("stream URL has no host")
        urlsplit(source).port  # noqa: B018  # raises ValueError for a port that is no port (rtsp://cam:99999)
        return "stream"
    if "://" in source:
        raise ValueError(f"unknown source kind {scheme!r}: use rtsp://, http(s)://, a device or a file")
    if not Path(source).is_file():
        raise ValueError(
            "no such video file (use 0 or /dev/video0 for a webcam, rtsp:// for an IP camera, "
            "picamera for the Pi camera)"
        )
    return "file"


def check_video_file(path: str) -> None:
    """A file is there for good or not at all, so one that holds no readable video is a bad setting
    (a device or a stream may come back later and is retried instead)."""
    capture = cv2.VideoCapture(path)
    try:
        if not capture.isOpened() or not capture.read()[0]:
            raise ValueError("not a video file OpenCV can read")
    finally:
        capture.release()


def redact(source: str) -> str:
    """The source as it may be shown and published: passwords and credential parameters replaced."""
    parts = urlsplit(source)
    if parts.scheme.lower() not in STREAM_SCHEMES:
        return source
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username}:***@{netloc.rsplit('@', 1)[1]}"
    query = urlencode(
        [
            (key, "***" if any(word in key.lower() for word in SECRET_WORDS) else value)
            for key, value in parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="*",
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class CameraSettings(ServiceSettings):
    """What the camera captures, how it publishes, and how it sounds the alarm."""

    section: ClassVar[str] = "Camera (services/camera)"

    camera_id: CameraId = Field(
        "front", description="This camera's id in topics (cam/<id>/...): 1-32 of a-z 0-9 _ -."
    )
    camera_source: str = Field(
        "0",
        min_length=1,
        description=(
            "What to capture: 0, 1... (webcam index), /dev/videoN, rtsp:// or http(s):// URL (IP camera), "
            "picamera (Raspberry Pi camera), or a video file."
        ),
    )
    camera_loop: bool = Field(False, description="Replay a video file from the start when it ends.")
    camera_fps: float = Field(
        5.0,
        gt=0,
        le=60,
        description="Publish at most this many frames per second (never faster than the source).",
    )
    camera_width: int | None = Field(
        None,
        ge=16,
        le=7680,
        description="Resize frames to this width, keeping the aspect; empty = as captured.",
    )
    camera_jpeg_quality: int = Field(80, ge=1, le=100, description="JPEG quality of published frames, 1-100.")
    camera_timeout: float = Field(
        10.0,
        ge=1,
        le=120,
        description=(
            "Seconds a stream may take to open or to send its next frame (and a live source to deliver "
            "one) before it counts as lost and is reopened."
        ),
    )
    camera_reconnect_max: float = Field(
        30.0,
        ge=1,
        le=600,
        description="Longest wait, in seconds, between attempts to reopen a failed source (1, 2, 4... s).",
    )
    alarm_sound: OptionalFile = Field(
        None, description="Sound file the alarm plays; empty = the bundled siren (services/camera/sounds)."
    )
    alarm_player: str = Field(
        "aplay -q",
        min_length=1,
        description="Command that plays a sound file, given the file as its last argument.",
    )
    alarm_duration: float = Field(
        10.0, gt=0, le=600, description="Seconds the alarm sounds when the command gives no duration."
    )
    alarm_cooldown: float = Field(
        30.0, ge=0, le=3600, description="Seconds after an alarm ends during which ON commands are ignored."
    )

    @field_validator("camera_source")
    @classmethod
    def usable_source(cls, value: str) -> str:
        if source_kind(value.strip()) == "file":
            check_video_file(value.strip())
        return value.strip()

    @field_validator("alarm_player")
    @classmethod
    def player_command(cls, value: str) -> str:
        try:
            words = shlex.split(value)
        except ValueError as error:
            raise ValueError(f"cannot split the command: {error}") from error
        if not words:
            raise ValueError("empty command")
        return value

    @property
    def kind(self) -> SourceKind:
        return source_kind(self.camera_source)

    @property
    def sound(self) -> Path:
        return self.alarm_sound or DEFAULT_ALARM_SOUND

    @property
    def player_argv(self) -> list[str]:
        return shlex.split(self.alarm_player)
