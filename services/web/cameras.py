"""What the relay knows of each camera, from the retained status, info and state topics."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from services.common import schemas, topics
from services.web.const import OPEN_EVENT_TIMEOUT_S
from services.web.live import FrameHub, LiveFrame


@dataclass
class CameraView:
    """One camera as the pages show it; ``detect`` and ``alarm`` stay None until their state is known."""

    camera: str
    status: str | None = None
    info: dict[str, Any] | None = None
    detect: str | None = None
    alarm: str | None = None
    alarm_result: dict[str, Any] | None = None  # what the camera did with the last alarm command
    status_since: float | None = None  # epoch seconds the relay heard the current status
    # Replaced, never changed in place: the pages read them without the lock.
    now: frozenset[str] = frozenset()  # labels whose state is ON ("person now")
    boxes: dict[str, list[float]] = field(default_factory=dict)  # label -> latest box of its open event

    @property
    def announced(self) -> bool:
        """Only a camera that said something of itself is shown; a lone state topic is not enough."""
        return bool(self.status or self.info)

    def as_dict(self, hub: FrameHub) -> dict[str, Any]:
        frame = hub.latest(self.camera)
        return {
            "id": self.camera,
            "online": self.status == topics.ONLINE,
            "status": self.status,
            "info": self.info,
            "detect": self.detect,
            "alarm": self.alarm,
            "alarm_result": self.alarm_result,
            "last_frame_at": frame.arrived_at if frame else None,
            "captured_at": captured_at(frame),
            "last_seen": captured_at(frame) or self.status_since,
            "now": sorted(self.now),
            "boxes": dict(self.boxes),
        }


def captured_at(frame: LiveFrame | None) -> float | None:
    """When the newest frame was taken (its ``captured_ms``), else when it arrived (a camera without
    metadata); None before any frame."""
    if frame is None:
        return None
    return frame.meta.captured_ms / 1000 if frame.meta else frame.arrived_at


def without(boxes: dict[str, list[float]], label: str) -> dict[str, list[float]]:
    return {name: box for name, box in boxes.items() if name != label}


def parse_alarm_result(topic: str, payload: bytes) -> tuple[str, dict[str, Any]]:
    """``cam/<id>/alarm/result``: the camera and the result as the pages show it; BadPayload when the JSON
    is bad or names another camera."""
    camera = topics.camera_of(topic)
    result = schemas.AlarmResult.parse(payload)
    if camera is None or result.camera != camera:
        raise schemas.BadPayload(f"alarm result names camera {result.camera!r}")
    return camera, {**result.model_dump(mode="json"), "said": result.said()}


class CameraViews:
    """Every camera's view, updated by the MQTT thread and read by the server's threads."""

    def __init__(self, hub: FrameHub) -> None:
        self._hub = hub
        self._views: dict[str, CameraView] = {}
        self._clocks: dict[str, float] = {}  # the frame times last sent; only the relay's loop uses it
        self._lock = threading.Lock()

    def update(
        self,
        camera: str,
        *,
        status: str | None = None,
        info: dict[str, Any] | None = None,
        detect: str | None = None,
        alarm: str | None = None,
        alarm_result: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Set the given fields (None: unchanged); returns the camera as the pages show it, if shown."""
        with self._lock:
            view = self._views.setdefault(camera, CameraView(camera))
            if status and status != view.status:
                view.status_since = time.time()
            view.status = status or view.status
            view.info = info or view.info
            view.detect = detect or view.detect
            view.alarm = alarm or view.alarm
            view.alarm_result = alarm_result or view.alarm_result
        return self.get(camera)

    def label_state(self, camera: str, label: str, on: bool) -> dict[str, Any] | None:
        """``cam/<id>/<label>/state``: the "now" badges; OFF also takes the label's box away."""
        with self._lock:
            view = self._views.setdefault(camera, CameraView(camera))
            view.now = view.now | {label} if on else view.now - {label}
            if not on:
                view.boxes = without(view.boxes, label)
        return self.get(camera)

    def event_box(self, event: schemas.DetectionEvent) -> dict[str, Any] | None:
        """The box of an open event's latest message, drawn over the live picture; gone at its ``end``. A
        message about a frame older than ``OPEN_EVENT_TIMEOUT_S`` (one the broker kept while the relay was
        away) is history, not what the camera sees now."""
        stale = time.time() - event.frame_time > OPEN_EVENT_TIMEOUT_S
        if event.type == "end" or stale:
            return self.end_box(event.camera, event.label)
        return self._set_box(event.camera, event.label, [float(v) for v in event.box])

    def end_box(self, camera: str, label: str) -> dict[str, Any] | None:
        with self._lock:
            view = self._views.setdefault(camera, CameraView(camera))
            view.boxes = without(view.boxes, label)
        return self.get(camera)

    def _set_box(self, camera: str, label: str, box: list[float]) -> dict[str, Any] | None:
        with self._lock:
            view = self._views.setdefault(camera, CameraView(camera))
            view.boxes = {**view.boxes, label: box}
        return self.get(camera)

    def fresh_frame_times(self) -> dict[str, float]:
        """Capture time of each camera's newest frame where it changed since the last call, for the cards'
        clocks: the relay sends them once a second, not with every frame."""
        with self._lock:
            cameras = [view.camera for view in self._views.values() if view.announced]
        fresh: dict[str, float] = {}
        for camera in cameras:
            at = captured_at(self._hub.latest(camera))
            if at is not None and self._clocks.get(camera) != at:
                fresh[camera] = self._clocks[camera] = at
        return fresh

    def get(self, camera: str) -> dict[str, Any] | None:
        with self._lock:
            view = self._views.get(camera)
        if view is None or not view.announced:
            return None
        return view.as_dict(self._hub)

    def all(self) -> list[dict[str, Any]]:
        with self._lock:
            views = [view for view in self._views.values() if view.announced]
        # Online cameras first: the page streams the first few live.
        ordered = sorted(views, key=lambda view: (view.status != topics.ONLINE, view.camera))
        return [view.as_dict(self._hub) for view in ordered]
