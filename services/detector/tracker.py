"""Confirmation and the event lifecycle of one camera.

A label becomes an event when it was seen (score >= min_score, right size, outside the masks) in at least M
of the last K processed frames and the median of those sightings reaches the threshold. One event per label
and camera, like Home Assistant's binary sensor: it ends ``end_after`` seconds after the last sighting. The
event lists the label's objects (services/detector/objects.py) with the zones they stand in: zones do not
filter, the notifier decides what alerts. An object arriving, or entering or leaving a zone, is told at
once in an ``update``. What counts per camera (objects, threshold, box size, zones, masks) is its
:class:`~services.detector.scene.CameraConfig`; the rest of the rules are the same for every camera.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from services.common import schemas
from services.detector.model import Detection
from services.detector.objects import ObjectTracker, Seen, masked
from services.detector.scene import CameraConfig


@dataclass(frozen=True)
class Confirmation:
    """The event rules every camera shares."""

    min_score: float
    frames: int  # M
    window: int  # K
    end_after_s: float
    update_interval_s: float
    better_view_margin: float
    stationary_s: float


@dataclass
class OpenEvent:
    event_id: str
    started_at: float
    score: float
    top_score: float
    detection: Detection
    zones: list[str]  # every zone an object of the event entered, in order
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
    objects: list[schemas.TrackedObject]
    ended_at: float | None = None


@dataclass
class LabelTrack:
    window: deque[tuple[float, float]]  # (score or 0, frame capture time) per processed frame
    objects: ObjectTracker
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
    ids: Iterator[int] = field(default_factory=ObjectTracker.counter)

    def __post_init__(self) -> None:
        for label in self.config.objects:
            self.tracks[label] = self._label_track()

    def _label_track(self) -> LabelTrack:
        rules = self.confirmation
        return LabelTrack(
            deque(maxlen=rules.window),
            # Objects are followed for twice end_after: the event's end (on the wall clock) lists those of its
            # last sighting, still there whatever the frames' capture clock says.
            ObjectTracker(self.ids, rules.stationary_s, 2 * rules.end_after_s),
        )

    def reconfigure(self, config: CameraConfig) -> list[Change]:
        """Take a new config live: labels no longer looked for end their events; objects keep their ids,
        and their zones follow the new ones from their next sighting."""
        dropped = {
            label: self.tracks.pop(label) for label in list(self.tracks) if label not in config.objects
        }
        ended = [self._end(label, track) for label, track in dropped.items() if track.event is not None]
        for label in config.objects:
            if label not in self.tracks:
                self.tracks[label] = self._label_track()
        self.config = config
        return ended

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

    def counts(self, detection: Detection) -> bool:
        """Whether the object counts: its size is in range and it stands outside the masks."""
        config = self.config
        return config.min_area <= detection.area <= config.max_area and not masked(detection, config.masks)

    def observe(self, detections: list[Detection], frame_time: float, now: float) -> list[Change]:
        """Feed one processed frame's detections; returns the messages to publish."""
        changes = []
        for label, track in self.tracks.items():
            counted = [
                d
                for d in detections
                if d.label == label and d.score >= self.confirmation.min_score and self.counts(d)
            ]
            seen = track.objects.update(counted, self.config.zones, frame_time)
            best = max(counted, key=lambda d: d.score, default=None)
            track.window.append((best.score if best else 0.0, frame_time))
            if best is None:
                if track.event is not None and seen.gone:
                    # Out of view: told at once, so that "in the zone for 30 s" never rests on a stale list.
                    track.event.last_message = now
                    changes.append(
                        Change("update", label, track.event, frame_time, [], track.objects.messages())
                    )
                continue
            change = self._sighting(
                label=label,
                track=track,
                detection=best,
                seen=seen,
                drawn=counted,
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
        seen: Seen,
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
            objects = track.objects.messages()
            # By entry time; at the same time, in the order the objects list them.
            entries = [(at, zone) for o in objects for zone, at in o.zones.items()]
            entered = sorted(entries, key=lambda entry: entry[0])
            event = OpenEvent(
                event_id(self.camera, started_at, label),
                started_at,
                smoothed,
                smoothed,
                detection,
                list(dict.fromkeys(zone for _, zone in entered)),  # each zone at its first entry
                now,
                frame_time,
                now,
            )
            track.event = event
            return Change("start", label, event, frame_time, drawn, objects)
        event.score, event.detection = smoothed, detection
        event.zones.extend(zone for _, zone in seen.entered if zone not in event.zones)
        event.last_seen, event.last_frame_time = now, frame_time
        better = smoothed >= event.top_score + self.confirmation.better_view_margin
        if better or seen:
            # A better view, an object arriving, or a zone entered or left: told at once, with a picture.
            event.top_score = max(event.top_score, smoothed)
            event.last_message = now
            return Change("update", label, event, frame_time, drawn, track.objects.messages())
        if now - event.last_message >= self.confirmation.update_interval_s:
            event.last_message = now
            return Change("update", label, event, frame_time, [], track.objects.messages())
        return None

    def expire(self, now: float, force: bool = False) -> list[Change]:
        """End the events not seen for ``end_after`` seconds (all of them when ``force``)."""
        changes = []
        for label, track in self.tracks.items():
            event = track.event
            if event is None or not (force or now - event.last_seen >= self.confirmation.end_after_s):
                continue
            changes.append(self._end(label, track))
        return changes

    @staticmethod
    def _end(label: str, track: LabelTrack) -> Change:
        event = track.event
        assert event is not None
        track.event = None
        track.window.clear()
        at = event.last_frame_time
        objects = track.objects.messages(in_view_at=at)
        track.objects.forget_all(at)
        return Change("end", label, event, at, [], objects, ended_at=at)
