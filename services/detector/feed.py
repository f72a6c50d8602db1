"""One camera as the detector's pipeline sees it, and a frame on its way from the broker to the model."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.detector import decode
from services.detector.const import PRIORITY_HEAD_START_S
from services.detector.model import Image
from services.detector.motion import MotionGate
from services.detector.stats import CameraMeter
from services.detector.tracker import CameraTracker

# The order in which cameras' frames go to the model when more arrive than it can infer: a camera with a
# sighting not yet confirmed first (each of its frames it misses adds a frame interval to the time to
# alert), then the cameras with nothing open (a person may be walking in), then those whose event is
# already open (a missed frame only delays an update).
CONFIRMING, IDLE, OPEN = 0, 1, 2


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
    # Monotonic arrival of the oldest frame not yet taken from the slot: a frame that replaces a waiting
    # one keeps its place in the queue, so a camera that lost a frame is not sent to the back as well.
    waiting_since: float = 0.0
    priority: int = IDLE  # CONFIRMING, IDLE or OPEN: set by the worker (update_priority)

    def turn(self) -> float:
        """When this camera's turn comes: lower first (see PRIORITY_HEAD_START_S)."""
        return self.waiting_since + self.priority * PRIORITY_HEAD_START_S

    def update_priority(self) -> None:
        """The tracker's view for the preparing thread: whether to infer every frame, and how urgently."""
        tracker = self.tracker
        self.tracking = tracker.tracking
        self.priority = CONFIRMING if tracker.confirming else OPEN if tracker.open else IDLE


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
