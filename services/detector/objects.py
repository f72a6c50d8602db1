"""Following each object of one label from frame to frame: ids, zones with their entry times, stationary.

A greedy IoU tracker, with the distance between box centres as a fallback for an object that moved more
than its own overlap between two processed frames (a person walking close to the camera at 5 fps). Chosen
over norfair by measurement (docs/detector.md, "Tracked objects"): the detector sees a few objects a frame
at 2-10 fps, so a Kalman filter adds cost and dependencies without fewer id switches on the footage.

An object that stood still when it was lost (a parked car whose detection flickers off) is remembered, and
an object found again at its place gets its id back with ``seen_before`` set: it was already alerted on.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from services.common import schemas
from services.detector.const import (
    DUPLICATE_COVER,
    MATCH_CENTRE_DISTANCE,
    MATCH_GAP_S,
    MATCH_IOU,
    PARKED_IOU,
    PARKED_MEMORY,
    PARKED_MEMORY_S,
    STATIONARY_IOU,
)
from services.detector.model import Box, Detection, box_area
from services.detector.scene import Polygon, inside


def overlap(a: Box, b: Box) -> float:
    """The area the two boxes share; 0 when they do not touch."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    return width * height if width > 0 and height > 0 else 0.0


def iou(a: Box, b: Box) -> float:
    shared = overlap(a, b)
    union = box_area(a) + box_area(b) - shared
    return shared / union if shared > 0 and union > 0 else 0.0


def covered(inner: Box, outer: Box) -> bool:
    """Most of ``inner`` lies within ``outer``: the model's second box on one object (a person's upper
    body beside the whole person), not a second object."""
    shared = overlap(inner, outer)
    return shared > 0 and shared >= DUPLICATE_COVER * box_area(inner)


def centre_distance(a: Box, b: Box) -> float:
    """Distance between the centres, in units of the first box's diagonal (how far it went for its size)."""
    dx = (a[0] + a[2] - b[0] - b[2]) / 2
    dy = (a[1] + a[3] - b[1] - b[3]) / 2
    diagonal = ((a[2] - a[0]) ** 2 + (a[3] - a[1]) ** 2) ** 0.5
    return (dx * dx + dy * dy) ** 0.5 / diagonal if diagonal > 0 else float("inf")


def foot_of(box: Box) -> tuple[float, float]:
    # A foot on the bottom edge (y = 1.0) would be outside a zone drawn down to that edge (see scene.inside).
    return ((box[0] + box[2]) / 2, min(box[3], 0.999))


def masked(detection: Detection, masks: Mapping[str, Polygon]) -> bool:
    foot = foot_of(detection.box)
    return any(inside(foot, mask) for mask in masks.values())


def zones_at(box: Box, zones: Mapping[str, Polygon]) -> list[str]:
    """The zones the object stands in: where the bottom-centre of its box is."""
    x, y = foot = foot_of(box)
    return [
        name
        for name, polygon in zones.items()
        if within_bounds(x, y, bounds(polygon)) and inside(foot, polygon)
    ]


@functools.lru_cache(maxsize=1024)
def _bounds(polygon: tuple[tuple[float, float], ...]) -> tuple[float, float, float, float]:
    xs, ys = [x for x, _ in polygon], [y for _, y in polygon]
    return min(xs), min(ys), max(xs), max(ys)


def bounds(polygon: Polygon) -> tuple[float, float, float, float]:
    """The polygon's bounding box, remembered: a foot outside it needs no ray casting."""
    return _bounds(tuple(polygon))


def within_bounds(x: float, y: float, box: tuple[float, float, float, float]) -> bool:
    return box[0] <= x <= box[2] and box[1] <= y <= box[3]


@dataclass
class TrackedObject:
    id: int
    box: Box
    score: float
    first_seen: float
    last_seen: float
    anchor: Box  # where it was when it last moved
    moved_at: float
    zones: dict[str, float] = field(default_factory=dict)  # zone -> capture time it entered
    seen_before: bool = False
    in_view: bool = True  # seen within MATCH_GAP_S; listed in the event only then

    def stationary(self, after_s: float) -> bool:
        return self.last_seen - self.moved_at >= after_s

    def message(self, stationary_s: float) -> schemas.TrackedObject:
        # Built from values the tracker made and checked (boxes clipped 0-1 by the model), for every
        # sighting: not validated again.
        return schemas.TrackedObject.model_construct(
            id=self.id,
            box=self.box,
            score=round(self.score, 4),
            zones=dict(self.zones),
            stationary=self.stationary(stationary_s),
            seen_before=self.seen_before,
            first_seen=self.first_seen,
            last_seen=self.last_seen,
        )


@dataclass(frozen=True)
class Seen:
    """What changed in a frame, worth telling at once: objects that came into view or went out of it,
    zones entered or left."""

    arrived: list[int] = field(default_factory=list)
    gone: list[int] = field(default_factory=list)
    entered: list[tuple[int, str]] = field(default_factory=list)
    left: list[tuple[int, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.arrived or self.gone or self.entered or self.left)


def iou_matrix(tracks: Sequence[TrackedObject], boxes: Sequence[Box]) -> np.ndarray:
    """IoU of every object's box with every new box, rows by object: one numpy pass instead of a Python
    call per pair (the tracker's largest cost with ten objects, bench/detector_tracker.py)."""
    a = np.array([t.box for t in tracks], dtype=np.float64).reshape(-1, 4)
    b = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    width = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    height = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    overlap = np.clip(width, 0, None) * np.clip(height, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - overlap
    result: np.ndarray = np.divide(overlap, union, out=np.zeros_like(overlap), where=union > 0)
    return result


def iou_pairs(tracks: Sequence[TrackedObject], boxes: Sequence[Box]) -> Iterator[tuple[int, int]]:
    """(track index, box index) pairs overlapping by more than MATCH_IOU, the largest overlap first, each
    track and box used once."""
    if not tracks or not boxes:
        return
    overlaps = iou_matrix(tracks, boxes)
    rows, columns = np.nonzero(overlaps > MATCH_IOU)
    order = np.argsort(-overlaps[rows, columns], kind="stable")
    yield from each_once((int(rows[index]), int(columns[index])) for index in order)


def greedy_pairs(
    tracks: Sequence[TrackedObject], boxes: Sequence[Box], score: Callable[[Box, Box], float], limit: float
) -> Iterator[tuple[int, int]]:
    """(track index, box index) pairs, best score first, each track and box used once; ``score`` is
    better when lower, and pairs at ``limit`` or over do not match."""
    candidates = sorted(
        (value, t, b)
        for t, track in enumerate(tracks)
        for b, box in enumerate(boxes)
        if (value := score(track.box, box)) < limit
    )
    yield from each_once((t, b) for _, t, b in candidates)


def each_once(pairs: Iterable[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """The (track, box) pairs in their order, leaving out each whose track or box an earlier pair took."""
    used_tracks: set[int] = set()
    used_boxes: set[int] = set()
    for t, b in pairs:
        if t not in used_tracks and b not in used_boxes:
            used_tracks.add(t)
            used_boxes.add(b)
            yield t, b


@dataclass
class ObjectTracker:
    """The objects of one label on one camera. ``ids`` is the camera's counter, shared by its labels."""

    ids: Iterator[int]
    stationary_s: float
    lost_after_s: float
    tracks: list[TrackedObject] = field(default_factory=list)
    parked: list[TrackedObject] = field(default_factory=list)

    @classmethod
    def counter(cls) -> Iterator[int]:
        return itertools.count(1)

    def update(self, detections: Sequence[Detection], zones: Mapping[str, Polygon], at: float) -> Seen:
        """Match one processed frame's detections (of this label, counted) to the objects followed."""
        seen = Seen()
        boxes = [d.box for d in detections]
        matched: dict[int, int] = dict(iou_pairs(self.tracks, boxes))
        # Only an object seen just now may have jumped further than its own overlap; one lost for longer
        # and found far away is more likely someone else.
        free = [
            t
            for t in range(len(self.tracks))
            if t not in matched and at - self.tracks[t].last_seen <= MATCH_GAP_S
        ]
        left_boxes = [b for b in range(len(boxes)) if b not in matched.values()]
        for t, b in greedy_pairs(
            [self.tracks[t] for t in free],
            [boxes[b] for b in left_boxes],
            centre_distance,
            MATCH_CENTRE_DISTANCE,
        ):
            matched[free[t]] = left_boxes[b]
        for t, b in matched.items():
            self._saw(self.tracks[t], detections[b], zones, at, seen)
        kept = [boxes[b] for b in matched.values()]
        for b in sorted(range(len(boxes)), key=lambda b: -detections[b].score):
            if b not in matched.values() and not any(covered(boxes[b], box) for box in kept):
                kept.append(boxes[b])
                self._new(detections[b], zones, at, seen)
        for track in self.tracks:
            if track.in_view and at - track.last_seen > MATCH_GAP_S:
                track.in_view = False
                seen.gone.append(track.id)
        self._forget_lost(at)
        return seen

    def _saw(
        self, track: TrackedObject, detection: Detection, zones: Mapping[str, Polygon], at: float, seen: Seen
    ) -> None:
        track.box, track.score, track.last_seen = detection.box, detection.score, at
        if not track.in_view:
            track.in_view = True
            seen.arrived.append(track.id)
        if iou(track.anchor, detection.box) < STATIONARY_IOU:
            track.anchor, track.moved_at = detection.box, at
        now_in = zones_at(detection.box, zones)
        for name in [z for z in track.zones if z not in now_in]:
            del track.zones[name]
            seen.left.append((track.id, name))
        for name in now_in:
            if name not in track.zones:
                track.zones[name] = at
                seen.entered.append((track.id, name))

    def _new(self, detection: Detection, zones: Mapping[str, Polygon], at: float, seen: Seen) -> None:
        parked = max(self.parked, key=lambda p: iou(p.box, detection.box), default=None)
        if parked is not None and iou(parked.box, detection.box) >= PARKED_IOU:
            self.parked.remove(parked)
            parked.seen_before, parked.zones = True, {}
            track = parked
        else:
            track = TrackedObject(next(self.ids), detection.box, detection.score, at, at, detection.box, at)
            seen.arrived.append(track.id)
        self.tracks.append(track)
        self._saw(track, detection, zones, at, seen)

    def _forget_lost(self, at: float) -> None:
        lost = [t for t in self.tracks if at - t.last_seen > self.lost_after_s]
        if lost:
            self.tracks = [t for t in self.tracks if t not in lost]
            self._park(lost, at)

    def _park(self, lost: list[TrackedObject], at: float) -> None:
        """Remember the objects that stood still when lost, for PARKED_MEMORY_S, the latest first."""
        self.parked.extend(t for t in lost if t.stationary(self.stationary_s))
        self.parked = [p for p in self.parked if at - p.last_seen <= PARKED_MEMORY_S][-PARKED_MEMORY:]

    def forget_all(self, at: float) -> None:
        """The event ended: nothing is followed any more; what stood still is remembered."""
        lost, self.tracks = self.tracks, []
        self._park(lost, at)

    def messages(self, in_view_at: float | None = None) -> list[schemas.TrackedObject]:
        """The objects in view now, or in view at the frame captured at ``in_view_at``."""
        if in_view_at is None:
            in_view = [t for t in self.tracks if t.in_view]
        else:
            in_view = [t for t in self.tracks if in_view_at - MATCH_GAP_S <= t.last_seen <= in_view_at]
        return [t.message(self.stationary_s) for t in in_view[: schemas.MAX_OBJECTS]]
