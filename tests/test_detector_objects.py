"""Tracked objects: ids, zones with entry times, stationary and seen before; on made-up boxes and on the real
footage (services/detector/objects.py, tracker.py)."""

from __future__ import annotations

from dataclasses import replace
from functools import cache

import numpy as np

from services.detector.model import Detection
from services.detector.objects import ObjectTracker, centre_distance, covered, iou
from services.detector.scene import CameraConfig
from services.detector.tracker import CameraTracker, Change
from tests.support import PERSON_VIDEO, read_frames
from tests.test_detector import DEFAULTS, PERSON, detector

STEP = 0.125
LEFT = (0.05, 0.3, 0.25, 0.9)
RIGHT = (0.6, 0.3, 0.8, 0.9)
# The right half of the floor, where the foot of RIGHT (0.7, 0.9) stands and that of LEFT does not.
PORCH = CameraConfig(
    ("person",), 0.5, 0.002, 1.0, zones={"porch": [(0.5, 0.5), (1.0, 0.5), (1.0, 1.0), (0.5, 1.0)]}
)


def person(box: tuple[float, float, float, float], score: float = 0.8) -> Detection:
    return Detection("person", score, box)


def see(tracker: CameraTracker, at: float, *found: Detection) -> list[Change]:
    return tracker.observe(list(found), at, at)


def started(tracker: CameraTracker, *found: Detection) -> Change:
    """Four frames STEP apart start the event on the fourth."""
    for index in range(3):
        assert see(tracker, index * STEP, *found) == []
    [start] = see(tracker, 3 * STEP, *found)
    assert start.type == "start"
    return start


def shifted(box: tuple[float, float, float, float], dx: float) -> tuple[float, float, float, float]:
    return (box[0] + dx, box[1], box[2] + dx, box[3])


def test_box_geometry() -> None:
    assert iou(LEFT, LEFT) == 1.0 and iou(LEFT, RIGHT) == 0.0
    assert covered((0.1, 0.4, 0.2, 0.6), LEFT) and not covered(LEFT, (0.1, 0.4, 0.2, 0.6))
    assert centre_distance(LEFT, shifted(LEFT, 0.2)) < 1.0 < centre_distance(LEFT, shifted(LEFT, 0.75))


def test_two_people_are_two_objects_of_one_event_and_a_second_box_on_one_is_not_a_third() -> None:
    tracker = CameraTracker("t", DEFAULTS, PERSON)
    upper_body = person((0.06, 0.3, 0.24, 0.6), 0.5)  # the model's second box on the left person
    start = started(tracker, person(LEFT), person(RIGHT), upper_body)
    assert sorted(o.id for o in start.objects) == [1, 2]
    # Walking: each keeps its id, the left one on overlap, the right one jumping further than its width.
    # Moving is no news (no update at once); the objects follow.
    assert see(tracker, 4 * STEP, person(shifted(LEFT, 0.05)), person(shifted(RIGHT, -0.25))) == []
    after = {o.id: o.box for o in tracker.tracks["person"].objects.messages()}
    assert after[1][0] == LEFT[0] + 0.05 and after[2][0] == RIGHT[0] - 0.25


def test_entering_and_leaving_a_zone_is_told_at_once_and_the_event_keeps_every_zone() -> None:
    tracker = CameraTracker("t", DEFAULTS, PORCH)
    start = started(tracker, person(LEFT))
    assert start.event.zones == [] and start.objects[0].zones == {}
    # Walking right: the frame the foot enters the porch is an update at once, with a picture.
    assert see(tracker, 4 * STEP, person(shifted(LEFT, 0.15))) == []
    [entered] = see(tracker, 5 * STEP, person(shifted(LEFT, 0.35)))
    assert entered.type == "update" and entered.detections, "an entry carries a snapshot"
    assert entered.objects[0].zones == {"porch": 5 * STEP} and entered.event.zones == ["porch"]
    # Standing there: no message until the update interval.
    assert see(tracker, 6 * STEP, person(shifted(LEFT, 0.35))) == []
    [left] = see(tracker, 7 * STEP, person(LEFT))
    assert left.objects[0].zones == {} and left.event.zones == ["porch"], "the event remembers the zone"


def test_a_starting_event_lists_its_zones_by_when_an_object_first_entered_each() -> None:
    yard = [(0.0, 0.5), (1.0, 0.5), (1.0, 1.0), (0.0, 1.0)]  # the whole floor, around the porch
    tracker = CameraTracker("t", DEFAULTS, replace(PORCH, zones={**PORCH.zones, "yard": yard}))
    walker = [LEFT, shifted(LEFT, 0.15), shifted(LEFT, 0.35)]  # into the yard at 0, the porch at 2 * STEP
    for index, box in enumerate(walker):
        assert see(tracker, index * STEP, person(box)) == []
    # A newcomer enters the yard on the frame that starts the event: the yard was still entered first.
    [start] = see(tracker, 3 * STEP, person(walker[-1]), person(LEFT))
    assert start.type == "start"
    assert start.event.zones == ["yard", "porch"]


def test_a_stationary_object_found_again_keeps_its_id_as_seen_before_and_a_newcomer_does_not() -> None:
    rules = replace(DEFAULTS, stationary_s=1.0, end_after_s=2.0)
    tracker = CameraTracker("t", rules, PERSON)
    parked = started(tracker, person(RIGHT)).objects[0]
    assert not parked.stationary
    for index in range(4, 12):
        see(tracker, index * STEP, person(RIGHT))
    # Out of view for over a second: an update at once with nobody in view; then the event ends.
    [gone] = see(tracker, 11 * STEP + 1.1)
    assert gone.objects == []
    [end] = tracker.expire(11 * STEP + 2.0)
    assert end.type == "end" and end.objects[0].stationary
    # The detection comes back where it stood: the same object, seen before, stationary from the start.
    start = started_at(tracker, 10.0, person(shifted(RIGHT, 0.01)))
    [again] = start.objects
    assert (again.id, again.seen_before, again.stationary) == (parked.id, True, True)
    assert again.first_seen == 0.0
    # Someone arriving elsewhere in that event is new: an update at once, not seen before.
    [arrival] = see(tracker, 10.0 + 4 * STEP, person(RIGHT), person(LEFT))
    newcomer = next(o for o in arrival.objects if o.id != parked.id)
    assert not newcomer.seen_before and not newcomer.stationary


def started_at(tracker: CameraTracker, at: float, *found: Detection) -> Change:
    for index in range(3):
        assert see(tracker, at + index * STEP, *found) == []
    [start] = see(tracker, at + 3 * STEP, *found)
    assert start.type == "start"
    return start


def test_a_new_config_ends_the_events_of_dropped_labels_and_keeps_the_others() -> None:
    both = CameraConfig(("person", "car"), 0.5, 0.002, 1.0)
    tracker = CameraTracker("t", DEFAULTS, both)
    car = Detection("car", 0.8, LEFT)
    for index in range(4):
        see(tracker, index * STEP, person(RIGHT), car)
    ended = tracker.reconfigure(PORCH)
    assert [(c.type, c.label) for c in ended] == [("end", "car")]
    assert list(tracker.tracks) == ["person"] and tracker.tracks["person"].event is not None
    # The person's zones follow the new config from the next sighting.
    [update] = see(tracker, 4 * STEP, person(RIGHT))
    assert update.objects[0].zones == {"porch": 4 * STEP}


# ---- on the real footage


@cache
def footage_detections() -> list[list[Detection]]:
    """The person clip at 5 fps (every other frame), as the detector sees it."""
    return [detector().detect(frame, DEFAULTS.min_score) for frame in read_frames(PERSON_VIDEO)[::2]]


def test_each_person_of_the_footage_is_one_long_lived_object() -> None:
    """Six people come in one at a time (shared/media/README.md gives their frames): six objects followed
    for seconds each, none of them spanning two people."""
    people = [(62, 195), (229, 444), (504, 694), (745, 863), (925, 1194), (1237, 1357)]
    tracker = ObjectTracker(ObjectTracker.counter(), stationary_s=30.0, lost_after_s=10.0)
    frames_of: dict[int, list[int]] = {}
    for index, found in enumerate(footage_detections()):
        at = index * 0.2
        tracker.update([d for d in found if d.label == "person"], {}, at)
        for track in tracker.tracks:
            if track.last_seen == at:
                frames_of.setdefault(track.id, []).append(index * 2)
    long_lived = {i: frames for i, frames in frames_of.items() if len(frames) >= 20}
    assert len(long_lived) == len(people), {i: (f[0], f[-1]) for i, f in frames_of.items()}
    for frames in long_lived.values():
        assert any(first - 10 <= frames[0] and frames[-1] <= last + 10 for first, last in people), frames


def two_people(base_index: int, other_index: int) -> np.ndarray:
    """A real frame with a second real person: the person standing at the table in another frame of the
    same fixed camera, moved to the left of the room (the wall and floor behind them match)."""
    base, other = (
        read_frames(PERSON_VIDEO, base_index, base_index)[0],
        read_frames(PERSON_VIDEO, other_index, other_index)[0],
    )
    width = base.shape[1]
    source = slice(int(0.45 * width), int(0.74 * width))  # the person of frames 300-340: x 0.48-0.71
    target = slice(source.start - int(0.4 * width), source.stop - int(0.4 * width))
    composed = base.copy()
    composed[:, target] = other[:, source]
    return composed


def test_two_people_in_view_are_two_objects_of_one_event() -> None:
    tracker = CameraTracker("t", DEFAULTS, PERSON)
    changes: list[Change] = []
    for step in range(12):
        frame = two_people(1000 + 2 * step, 300 + 2 * step)
        changes += see(tracker, step * 0.2, *detector().detect(frame, DEFAULTS.min_score))
    starts = [c for c in changes if c.type == "start"]
    assert len(starts) == 1, "one event for the label"
    latest = changes[-1].objects
    assert len({o.id for o in latest}) == 2, latest
    assert sorted(o.box[0] < 0.4 for o in latest) == [False, True], "one on each side of the room"


def test_a_person_standing_still_whose_detection_drops_out_is_seen_before_on_the_footage() -> None:
    """Person 5 stands at the table (frames 925-1194). Their detection replaced by the empty room for
    longer than end_after (a dropout) ends the event; when they are seen again, the new event's object has
    the old id, seen before and stationary, so the notifier does not alert again (docs/notifier.md)."""
    rules = replace(DEFAULTS, stationary_s=3.0, end_after_s=3.0)
    tracker = CameraTracker("t", rules, PERSON)
    standing = read_frames(PERSON_VIDEO, 960, 1100)[::2]
    empty = read_frames(PERSON_VIDEO, 1362, 1393)[::2]
    first: list[Change] = []
    at = 0.0
    for frame in standing[:30]:  # 6 s
        first += see(tracker, at, *detector().detect(frame, rules.min_score))
        at += 0.2
    for frame in empty:  # 3.2 s of the empty room
        first += see(tracker, at, *detector().detect(frame, rules.min_score)) + tracker.expire(at)
        at += 0.2
    first += tracker.expire(at + rules.end_after_s)
    [start] = [c for c in first if c.type == "start"]
    [end] = [c for c in first if c.type == "end"]
    assert end.objects and all(o.stationary for o in end.objects)
    again: list[Change] = []
    at += rules.end_after_s
    for frame in standing[30:45]:
        again += see(tracker, at, *detector().detect(frame, rules.min_score))
        at += 0.2
    [restart] = [c for c in again if c.type == "start"]
    assert restart.event.event_id != start.event.event_id
    assert [(o.id, o.seen_before, o.stationary) for o in restart.objects] == [
        (start.objects[0].id, True, True)
    ]
