"""Message schemas. Every JSON payload carries ``version``; consumers validate what they receive.

Frames are not JSON: ``cam/<id>/frame`` is the bare JPEG, and its metadata rides as MQTT v5 user
properties (see :class:`FrameMeta`).
"""

from __future__ import annotations

import base64
import binascii
import builtins
import json
import math
from typing import Annotated, ClassVar, Literal, Self

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import from_json

from services.common import topics

SCHEMA_VERSION = 1

# Frames bigger than this are refused by consumers; the broker's message_size_limit matches it.
MAX_FRAME_BYTES = 8 * 1024 * 1024

# Every list and string of a JSON message is bounded: a consumer refuses a message over a bound (BadPayload,
# counted), so nothing it stores or passes on (the relay's /api/events, an email) can be blown up by one.
MAX_NAME_CHARS = 64  # labels, zone names, tones, versions, instance names
MAX_TEXT_CHARS = 256  # free text: a camera's source and its error
MAX_ZONES = 32
MAX_OBJECTS = 32  # tracked objects in one event (the model reports at most a few dozen boxes a frame)
MAX_STATS_CAMERAS = 1000  # cameras in one DetectorStats
MAX_STATS_CHANNELS = 64  # channels in one NotifierStats
# The snapshot in an event, base64: room is left for the other (bounded) fields, so that an event always fits
# the broker's message_size_limit (MAX_FRAME_BYTES). MAX_SNAPSHOT_BYTES is the largest JPEG that fits.
MAX_SNAPSHOT_CHARS = MAX_FRAME_BYTES - 64 * 1024
MAX_SNAPSHOT_BYTES = MAX_SNAPSHOT_CHARS // 4 * 3
# Times are epoch seconds from 1970 to 2286: a time beyond (1e17 is the year 3e9) is no date a consumer can
# show or store (time.localtime fails on it, and the relay took that for a full disk and had the event sent
# again for ever).
MAX_EPOCH_S = 10_000_000_000
# ON/OFF words, with room for quotes and white space: a longer payload is refused before it is decoded.
MAX_WORD_BYTES = 64

UnitFloat = Annotated[float, Field(ge=0.0, le=1.0)]
# A camera id that is safe as a topic level (see topics.validate_camera_id).
CameraId = Annotated[str, Field(max_length=32), AfterValidator(topics.validate_camera_id)]
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS)]
# A model label as a settings file writes it (``traffic light``), kept as its topic level (``traffic_light``).
LabelSlug = Annotated[str, AfterValidator(topics.label_slug)]
EpochSeconds = Annotated[float, Field(ge=0.0, le=MAX_EPOCH_S)]
# Validation context of a message received (parsed), as opposed to one a service builds.
RECEIVED = {"received": True}


class BadPayload(ValueError):
    """A message that does not follow the contract; counted and logged by the consumer, never fatal."""


class Message(BaseModel):
    """Base of every JSON message: versioned, strict about unknown versions, lenient about extra fields
    (so an older consumer keeps working when a newer producer adds one). No number is NaN or infinite: JSON
    has neither, and a consumer that passed one on would write JSON that browsers cannot read."""

    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)

    version: Literal[1] = 1
    # A message type whose size the broker's limit (MAX_FRAME_BYTES) does not bound tightly enough: a longer
    # payload is refused before it is decoded.
    max_bytes: ClassVar[int | None] = None

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def parse(cls, payload: bytes) -> Self:
        if cls.max_bytes is not None and len(payload) > cls.max_bytes:
            raise BadPayload(f"{len(payload)} bytes, more than {cls.max_bytes} for a {cls.__name__}")
        try:
            # Read into Python objects first, then validated: pydantic validating the JSON itself copies the
            # whole input into every error, and a 6 MB message with a long list and a few fields missing took
            # a gigabyte of memory. Validated from Python objects, errors only point at the input.
            value = from_json(payload)
        except ValueError as error:
            raise BadPayload(f"not a valid {cls.__name__}: Invalid JSON: {str(error)[:120]}") from error
        try:
            return cls.model_validate(value, context=RECEIVED)
        except ValidationError as error:
            first = error.errors()[0]
            # The location may hold a key from the message: clipped, as it goes into a log line.
            where = ".".join(str(part) for part in first["loc"])[:80]
            raise BadPayload(
                f"not a valid {cls.__name__}: {where + ': ' if where else ''}{first['msg']}"
            ) from error


class FrameMeta(BaseModel):
    """What rides with each frame as MQTT v5 user properties."""

    model_config = ConfigDict(frozen=True)

    captured_ms: int = Field(ge=0, le=MAX_EPOCH_S * 1000, description="Capture time, epoch milliseconds.")
    seq: int = Field(ge=0, description="Sequence number, +1 per published frame, from 0 at camera start.")
    width: int = Field(gt=0)
    height: int = Field(gt=0)

    def to_properties(self) -> Properties:
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.UserProperty = [
            ("captured_ms", str(self.captured_ms)),
            ("seq", str(self.seq)),
            ("width", str(self.width)),
            ("height", str(self.height)),
        ]
        return properties

    @classmethod
    def from_properties(cls, properties: Properties | None) -> FrameMeta | None:
        """The frame's metadata, or None when the publisher sent none (e.g. a third-party camera)."""
        pairs = getattr(properties, "UserProperty", None) if properties is not None else None
        if not pairs:
            return None
        values = dict(pairs)
        try:
            return cls.model_validate({key: int(values[key]) for key in cls.model_fields})
        except (KeyError, ValueError, ValidationError) as error:
            raise BadPayload(f"bad frame properties {values}") from error


def looks_like_jpeg(payload: bytes) -> bool:
    """Cheap check before decoding: JPEG start-of-image and end-of-image markers."""
    return payload[:3] == b"\xff\xd8\xff" and payload.rstrip(b"\x00")[-2:] == b"\xff\xd9"


class CameraInfo(Message):
    """Retained on ``cam/<id>/info``: what the camera is and how its source is doing."""

    camera: CameraId
    source_kind: Literal["device", "file", "stream", "picamera"]
    source: str = Field(max_length=MAX_TEXT_CHARS, description="The source with any password removed.")
    state: Literal["streaming", "reconnecting", "stopped"]
    width: int | None = None
    height: int | None = None
    fps: float = Field(description="Publish rate cap, frames per second.")
    source_fps: float | None = None
    error: str | None = Field(
        None, max_length=MAX_TEXT_CHARS, description="Why the source is reconnecting, when it is."
    )
    software_version: str = Field(max_length=MAX_NAME_CHARS)
    updated_at: EpochSeconds

    @field_validator("source", "error", "software_version", mode="before")
    @classmethod
    def shortened_when_built(cls, value: object, info: ValidationInfo) -> object:
        """The camera building its info shortens a long text (an OpenCV error can run to kilobytes) instead
        of failing; a received message (parsed) with a text over its bound is refused."""
        limit = MAX_NAME_CHARS if info.field_name == "software_version" else MAX_TEXT_CHARS
        received = info.mode == "json" or info.context == RECEIVED
        if not received and isinstance(value, str) and len(value) > limit:
            return value[: limit - 1] + "…"
        return value


def parse_on_off(payload: bytes) -> bool:
    """``ON``/``OFF`` (any case, also ``true``/``false``, ``1``/``0``) as a bool, else BadPayload."""
    if len(payload) > MAX_WORD_BYTES:
        # Not decoded: 5 MB of random bytes took 50 MB as text.
        raise BadPayload(f"expected ON or OFF, got {len(payload)} bytes starting {payload[:20]!r}")
    text = payload.decode("utf-8", "replace").strip().strip('"').upper()
    if text in {"ON", "TRUE", "1"}:
        return True
    if text in {"OFF", "FALSE", "0"}:
        return False
    raise BadPayload(f"expected ON or OFF, got {payload[:40]!r}")


def on_off(value: bool) -> str:
    return topics.ON if value else topics.OFF


class AlarmCommand(Message):
    """``cam/<id>/alarm/set``: like Home Assistant's siren, JSON or plain ``ON``/``OFF``."""

    state: Literal["ON", "OFF"]
    tone: str | None = Field(None, max_length=MAX_NAME_CHARS)
    duration: float | None = Field(None, gt=0, le=600, description="Seconds; none = the camera's default.")

    @field_validator("state", mode="before")
    @classmethod
    def upper_state(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @classmethod
    def parse(cls, payload: bytes) -> AlarmCommand:
        stripped = payload.strip()
        if stripped[:1] == b"{":
            return super().parse(stripped)
        return cls(state="ON" if parse_on_off(stripped) else "OFF")


AlarmOutcome = Literal["sounding", "already_sounding", "cooling_down", "player_failed", "stopped"]


class AlarmResult(Message):
    """Retained on ``cam/<id>/alarm/result``: what the camera did with the last alarm command, so that the
    one who sent it sees why nothing sounds (``alarm/state`` stays the bare ON/OFF a siren takes)."""

    camera: CameraId
    result: AlarmOutcome
    cooldown_left_s: float | None = Field(None, ge=0, le=3600, description="With cooling_down.")
    error: str | None = Field(None, max_length=MAX_TEXT_CHARS, description="With player_failed.")
    at: EpochSeconds

    @field_validator("error", mode="before")
    @classmethod
    def shortened_when_built(cls, value: object, info: ValidationInfo) -> object:
        return CameraInfo.shortened_when_built(value, info)

    def said(self) -> str:
        """In words, as the web page says it: ``cooling down, 18 s``."""
        if self.result == "cooling_down":
            return f"cooling down, {math.ceil(self.cooldown_left_s or 0)} s"
        if self.result == "player_failed":
            return f"the camera could not play the sound: {self.error or 'unknown error'}"
        return self.result.replace("_", " ")


Box = tuple[UnitFloat, UnitFloat, UnitFloat, UnitFloat]
# Zones and masks: polygons of normalized (x, y) points from the frame's top-left corner.
MAX_POLYGON_POINTS = 64
Point = tuple[UnitFloat, UnitFloat]
Polygon = Annotated[list[Point], Field(min_length=3, max_length=MAX_POLYGON_POINTS)]


class TrackedObject(BaseModel):
    """One object the detector follows from frame to frame, as listed in its label's event."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: int = Field(ge=1, description="Unique per camera for as long as the detector runs.")
    box: Box = Field(description="Where it was last seen: x_min, y_min, x_max, y_max, normalized 0-1.")
    score: UnitFloat = Field(description="Its score in the frame it was last seen in.")
    zones: dict[Name, EpochSeconds] = Field(
        default_factory=dict,
        max_length=MAX_ZONES,
        description="The zones it stands in now, each with the capture time of the frame it entered on.",
    )
    stationary: bool = Field(
        False, description="It has not moved for DETECTOR_STATIONARY_S (a parked car, a person waiting)."
    )
    seen_before: bool = Field(
        False,
        description="A stationary object the detector already knew before this event began (a parked car "
        "whose detection flickered off and on): it alone never makes an alert.",
    )
    first_seen: EpochSeconds = Field(description="Capture time of the frame it was first seen in.")
    last_seen: EpochSeconds = Field(description="Capture time of the frame it was last seen in.")


class DetectionEvent(Message):
    """``cam/<id>/<label>``: one object's life from ``start`` through ``update``s to ``end``."""

    type: Literal["start", "update", "end"]
    event_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    camera: CameraId
    label: str = Field(max_length=MAX_NAME_CHARS)
    score: UnitFloat = Field(description="Smoothed (median) score of the latest sighting.")
    top_score: UnitFloat = Field(description="Best smoothed score over the event so far.")
    box: Box = Field(description="x_min, y_min, x_max, y_max, normalized 0-1.")
    zones: list[Name] = Field(
        default_factory=list,
        max_length=MAX_ZONES,
        description="Every zone an object of the event has entered so far, in the order first entered.",
    )
    objects: list[TrackedObject] = Field(
        default_factory=list,
        max_length=MAX_OBJECTS,
        description="The objects of this label in view now (seen within the last second), each with its "
        "own id; on end, those of the last sighting. An update is sent at once when one comes into view, "
        "goes out of it, or enters or leaves a zone.",
    )
    started_at: EpochSeconds = Field(description="Epoch seconds of the first confirming frame's capture.")
    ended_at: EpochSeconds | None = Field(None, description="Epoch seconds; set on end.")
    frame_time: EpochSeconds = Field(
        description="Capture time of the frame this message describes, epoch seconds."
    )
    detected_at: EpochSeconds = Field(
        description="When the detector finished with that frame, epoch seconds."
    )
    snapshot: str | None = Field(
        None,
        max_length=MAX_SNAPSHOT_CHARS,
        description="Annotated JPEG, base64; on start, on updates with a better view, and on updates for "
        "an object arriving or entering or leaving a zone.",
    )

    @field_validator("label")
    @classmethod
    def label_level(cls, value: str) -> str:
        return topics.label_slug(value)

    @classmethod
    def parse_on(cls, topic: str, payload: bytes) -> Self:
        """An event as received on ``topic``: one that names another camera or label is BadPayload."""
        event = cls.parse(payload)
        if topics.event(event.camera, event.label) != topic:
            raise BadPayload(f"event of {event.camera}/{event.label} published on {topic}")
        return event

    def snapshot_jpeg(self) -> bytes | None:
        if self.snapshot is None:
            return None
        try:
            return base64.b64decode(self.snapshot, validate=True)
        except binascii.Error as error:
            raise BadPayload("snapshot is not base64") from error

    @staticmethod
    def encode_snapshot(jpeg: bytes) -> str:
        return base64.b64encode(jpeg).decode("ascii")


MAX_CLIP_EVENTS = 64  # event ids in one clip: overlapping events of one camera share a clip


def _plain_relative_path(path: str) -> str:
    """Relative to RECORD_DIR and plain: no leading slash, no "." or ".." part, nothing to escape."""
    if any(part in {"", ".", ".."} for part in path.split("/")):
        raise ValueError("must be a relative path of plain names")
    return path


ClipPath = Annotated[
    str,
    Field(max_length=MAX_TEXT_CHARS, pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$"),
    AfterValidator(_plain_relative_path),
]


class ClipInfo(Message):
    """``cam/<id>/clip``: a recording's life, from ``recording`` (still being written) to ``done``."""

    camera: CameraId
    clip_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    event_ids: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]] = Field(
        default_factory=list, max_length=MAX_CLIP_EVENTS
    )
    path: ClipPath = Field(description="The MP4 file, relative to RECORD_DIR.")
    started_at: EpochSeconds = Field(description="Capture time of the clip's first frame, epoch seconds.")
    ended_at: EpochSeconds | None = Field(None, description="Capture time of its last frame so far.")
    duration_s: float = Field(ge=0.0, le=MAX_EPOCH_S)
    bytes: int = Field(ge=0, description="Size of the file so far.")  # a field name the issue fixes
    state: Literal["recording", "done"]

    @classmethod
    def parse_on(cls, topic: str, payload: builtins.bytes) -> Self:
        """A clip announcement as received on ``topic``: one that names another camera is BadPayload."""
        clip = cls.parse(payload)
        if topics.clip(clip.camera) != topic:
            raise BadPayload(f"clip of {clip.camera} published on {topic}")
        return clip


class CameraStats(BaseModel):
    frames_in: int = 0
    frames_stale: int = 0
    frames_skipped_motion: int = 0
    frames_bad: int = 0
    inferences: int = 0
    inference_ms_p50: float | None = None
    inference_ms_p95: float | None = None
    fps_in: float = 0.0
    fps_inferred: float = 0.0
    events: int = 0
    detecting: bool = True
    frame_age_ms_p50: float | None = None
    frame_age_ms_p95: float | None = None
    commands_bad: int = 0


class DetectorStats(Message):
    """``sentrycam/detector/stats``, every 30 s."""

    instance: Name
    interval_s: float
    cameras: dict[CameraId, CameraStats] = Field(max_length=MAX_STATS_CAMERAS)
    published_at: float
    frames_bad_camera_id: int = 0
    # Refused messages that are no camera's: camera infos (Home Assistant discovery), detect/set and
    # detect/state on a malformed camera id.
    messages_bad: int = 0


class RecorderCameraStats(BaseModel):
    frames_in: int = 0
    frames_bad: int = 0
    frames_dropped: int = 0  # the recorder fell behind: frames it had no time to write
    frames_written: int = 0
    events: int = 0
    clips: int = 0
    segments: int = 0
    recording: bool = False


class RecorderStats(Message):
    """``sentrycam/recorder/stats``, every RECORD_STATS_INTERVAL seconds and when the disk's state changes."""

    interval_s: float
    published_at: float
    cameras: dict[CameraId, RecorderCameraStats] = Field(max_length=MAX_STATS_CAMERAS)
    disk_ok: bool = True
    disk_error: str | None = Field(None, max_length=MAX_TEXT_CHARS)
    write_errors: int = 0
    used_bytes: int = 0
    free_bytes: int = 0
    files_deleted: int = 0
    frames_bad_camera_id: int = 0
    messages_bad: int = 0


class NotifierChannelStats(BaseModel):
    # "email", "push 2 (tgram)": never a push URL, which holds secrets.
    channel: Name
    pending: int = Field(0, ge=0)
    failed: int = Field(0, ge=0, description="Given up (older than NOTIFY_MAX_AGE).")
    sent: int = Field(0, ge=0, description="Sent, of the alerts the outbox keeps (30 days).")
    last_sent_at: EpochSeconds | None = None
    last_error: str | None = Field(None, max_length=MAX_TEXT_CHARS)


class NotifierStats(Message):
    """``sentrycam/notifier/stats``, retained: on connect and when a figure changes (at most every few s)."""

    published_at: EpochSeconds
    channels: list[NotifierChannelStats] = Field(max_length=MAX_STATS_CHANNELS)
    bad_input: int = 0


def dumps(obj: object) -> bytes:
    """Compact JSON for small non-schema payloads (Home Assistant discovery configs and the like)."""
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


# A camera's configuration message, checked in bytes before it is decoded. The detector's config/state
# holds the same polygons, written its own way (1 as 1.0): twice that is its bound.
MAX_CONFIG_BYTES = 64 * 1024
MAX_CONFIG_STATE_BYTES = 2 * MAX_CONFIG_BYTES


class CameraConfigSet(Message):
    """``cam/<id>/config/set`` (retained; written only by the web relay and Home Assistant): the camera's
    zones, masks and overrides, taken live by the detector. A field left out keeps its value from
    DETECTOR_CONFIG (then the DETECTOR_* settings); ``zones`` and ``masks``, when given, replace the file's.
    Unlike other messages it refuses unknown fields: a misspelt ``zone`` must not be dropped in silence."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    max_bytes: ClassVar[int | None] = MAX_CONFIG_BYTES

    objects: list[Name] | None = Field(None, max_length=MAX_ZONES)
    threshold: float | None = Field(None, gt=0.0, le=1.0)
    min_area: float | None = Field(None, ge=0.0, le=1.0)
    max_area: float | None = Field(None, gt=0.0, le=1.0)
    zones: dict[Name, Polygon] | None = Field(None, max_length=MAX_ZONES)
    masks: dict[Name, Polygon] | None = Field(None, max_length=MAX_ZONES)


class CameraConfigState(Message):
    """``cam/<id>/config/state`` (retained; written by the detector): what the camera's detection uses now,
    where that came from, and why the latest ``config/set`` was refused, if it was."""

    max_bytes: ClassVar[int | None] = MAX_CONFIG_STATE_BYTES

    camera: CameraId
    objects: list[Name] = Field(max_length=MAX_ZONES)
    threshold: float = Field(gt=0.0, le=1.0)
    min_area: UnitFloat
    max_area: UnitFloat
    zones: dict[Name, Polygon] = Field(default_factory=dict, max_length=MAX_ZONES)
    masks: dict[Name, Polygon] = Field(default_factory=dict, max_length=MAX_ZONES)
    source: Literal["file", "topic", "saved"] = Field(
        description="file: DETECTOR_CONFIG and the settings; topic: the latest config/set; saved: the last "
        "good config/set, kept by the detector across restarts."
    )
    error: str | None = Field(
        None, max_length=MAX_TEXT_CHARS, description="Why the latest config/set was refused; null if not."
    )
    updated_at: EpochSeconds
