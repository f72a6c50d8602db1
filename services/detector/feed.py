"""One camera as the detector's pipeline sees it, and a frame on its way from the broker to the model."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.detector.model import Image
from services.detector.motion import MotionGate
from services.detector.stats import CameraMeter
from services.detector.tracker import CameraTracker


@dataclass(frozen=True)
class PendingFrame:
    payload: bytes
    captured_at: float  # epoch seconds, from the camera's metadata or the arrival time
    arrived: float  # time.monotonic() at arrival


@dataclass
class CameraFeed:
    """One camera as the pipeline sees it: its slot, its tracker, its motion gate and its stats."""

    camera: str
    tracker: CameraTracker
    gate: MotionGate
    stats: CameraMeter = field(default_factory=CameraMeter)
    slot: PendingFrame | None = None
    detecting: bool = True
    end_all: bool = False  # detection was turned off: the worker ends the open events
    tracking: bool = False  # the tracker's view, copied by the worker for the preparing thread


@dataclass(frozen=True)
class ReadyFrame:
    """A frame decoded, gated and resized for the model, waiting for the interpreter."""

    feed: CameraFeed
    pending: PendingFrame
    image: Image
    model_input: Image
