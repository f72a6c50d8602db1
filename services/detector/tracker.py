"""Confirmation and the event lifecycle of one camera.

An object becomes an event when it was seen (score >= min_score, right size, in a zone, outside the masks)
in at least M of the last K processed frames and the median of those sightings reaches the threshold. One
event per label and camera, like Home Assistant's binary sensor: it ends ``end_after`` seconds after the
last sighting. What counts per camera (objects, threshold, box size, zones, masks) is its
:class:`~services.detector.scene.CameraConfig`; the rest of the rules are the same for every camera.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from services.detector.model import Detection
from services.detector.scene import CameraConfig, zones_of


@dataclass(frozen=True)
class Confirmation:
    """The event rules every camera shares."""

    min_score: float
    frames: int  # M
    window: int  # K
    end_after_s: float
    update_interval_s: float
    better_view_margin: float


@dataclass
class OpenEvent:
    event_id: str
    started_at: float
    score: float
    top_score: float
    detection: Detection
    zones: list[str]
    last_seen: float  # when the latest sighting was processed (clock of the detector)
    last_frame_time: float
    last_message: float


@dataclass(frozen=True)
class Change:
    """What must be published: one event message, with the frame's snapshot or not."""

    type: Literal["start", "update", "end"]
    label: str
    event: OpenEvent
    frame_time: float
    detections: list[Detection]  # what to draw on the snapshot; empty = no snapshot
    ended_at: float | None = None


@dataclass
class LabelTrack:
    window: deque[tuple[float, float]]  # (score or 0, frame capture time) per processed frame
    event: OpenEvent | None = None

    def sightings(self, min_score: float) -> list[tuple[float, float]]:
        return [(score, at) for score, at in self.window if score >= min_score]


def event_id(camera: str, started_at: float, label: str) -> str:
    return f"{camera}-{int(started_at * 1000)}-{label}"[:64]


@dataclass
class CameraTracker:
    camera: str
    confirmation: Confirmation
    config: CameraConfig
    tracks: dict[str, LabelTrack] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for label in self.config.objects:
            self.tracks[label] = LabelTrack(deque(maxlen=self.confirmation.window))

    @property
    def tracking(self) -> bool:
        """Something is open or on its way to confirmation: keep inferring every frame."""
        min_score = self.confirmation.min_score
        return any(t.event is not None or t.sightings(min_score) for t in self.tracks.values())

    @property
    def confirming(self) -> bool:
        """A label sighted but not yet confirmed: its next frames decide the time to alert."""
        min_score = self.confirmation.min_score
        return any(t.event is None and t.sightings(min_score) for t in self.tracks.values())

    @property
    def open(self) -> bool:
        """An event is open: its frames only keep it alive and refine it."""
        return any(t.event is not None for t in self.tracks.values())

    def counts(self, detection: Detection) -> list[str] | None:
        """The object's zones when it counts (size and place), else None."""
        if not self.config.min_area <= detection.area <= self.config.max_area:
            return None
        return zones_of(detection, self.config)

    def observe(self, detections: list[Detection], frame_time: float, now: float) -> list[Change]:
        """Feed one processed frame's detections; returns the messages to publish."""
        changes = []
        for label, track in self.tracks.items():
            counted = [
                (d, zones) for d in detections if d.label == label and (zones := self.counts(d)) is not None
            ]
            best = max(counted, key=lambda pair: pair[0].score, default=None)
            track.window.append((best[0].score if best else 0.0, frame_time))
            if best is None or best[0].score < self.confirmation.min_score:
                continue
            change = self._sighting(
                label=label,
                track=track,
                detection=best[0],
                zones=best[1],
                drawn=[d for d, _ in counted],
                frame_time=frame_time,
                now=now,
            )
            if change is not None:
                changes.append(change)
        return changes

    def _sighting(
        self,
        *,
        label: str,
        track: LabelTrack,
        detection: Detection,
        zones: list[str],
        drawn: list[Detection],
        frame_time: float,
        now: float,
    ) -> Change | None:
        sightings = track.sightings(self.confirmation.min_score)
        smoothed = statistics.median(score for score, _ in sightings)
        event = track.event
        if event is None:
            if len(sightings) < self.confirmation.frames or smoothed < self.config.threshold:
                return None
            started_at = sightings[0][1]
            event = OpenEvent(
                event_id(self.camera, started_at, label),
                started_at,
                smoothed,
                smoothed,
                detection,
                zones,
                now,
                frame_time,
                now,
            )
            track.event = event
            return Change("start", label, event, frame_time, drawn)
        event.score, event.detection, event.zones = smoothed, detection, zones
        event.last_seen, event.last_frame_time = now, frame_time
        if smoothed >= event.top_score + self.confirmation.better_view_margin:
            event.top_score = smoothed
            event.last_message = now
            return Change("update", label, event, frame_time, drawn)
        if now - event.last_message >= self.confirmation.update_interval_s:
            event.last_message = now
            return Change("update", label, event, frame_time, [])
        return None

    def expire(self, now: float, force: bool = False) -> list[Change]:
        """End the events not seen for ``end_after`` seconds (all of them when ``force``)."""
        changes = []
        for label, track in self.tracks.items():
            event = track.event
            if event is None or not (force or now - event.last_seen >= self.confirmation.end_after_s):
                continue
            track.event = None
            track.window.clear()
            changes.append(
                Change("end", label, event, event.last_frame_time, [], ended_at=event.last_frame_time)
            )
        return changes
