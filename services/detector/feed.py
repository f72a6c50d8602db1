"""One camera as the detector's pipeline sees it, and a frame on its way from the broker to the model."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.detector import decode
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
    image: Image  # as decoded for the model: reduced unless is_whole
    model_input: Image
    is_whole: bool = True

    def whole_image(self) -> Image | None:
        """The whole frame, for a snapshot: the model's picture when it was not reduced, else decoded again
        (only when a change carries a snapshot; boxes are normalized, so they fit either size). None if
        that decode fails: the event goes out without a picture rather than not at all."""
        try:
            return self.image if self.is_whole else decode.whole(self.pending.payload)
        except decode.DecodeError:
            return None
