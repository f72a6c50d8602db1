"""What the relay knows of each camera, from the retained status, info and state topics."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from services.common import schemas, topics
from services.web.live import FrameHub


@dataclass
class CameraView:
    """One camera as the pages show it; ``detect`` and ``alarm`` stay None until their state is known."""

    camera: str
    status: str | None = None
    info: dict[str, Any] | None = None
    detect: str | None = None
    alarm: str | None = None
    alarm_result: dict[str, Any] | None = None  # what the camera did with the last alarm command

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
        }


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
            view.status = status or view.status
            view.info = info or view.info
            view.detect = detect or view.detect
            view.alarm = alarm or view.alarm
            view.alarm_result = alarm_result or view.alarm_result
        return self.get(camera)

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
