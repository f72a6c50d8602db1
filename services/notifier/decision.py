"""When an event alerts: at the first of its messages where an object meets its camera's rule, or, for a
loiterer, once it has stayed long enough in the zone (a check at that moment, without a further message).

The detector sends an update at once when an object comes into view, goes out of it, or enters or leaves a
zone, so the latest message of an event says exactly which objects stand where since when: a check may
trust it until the next one arrives.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from services.common import schemas
from services.common.acks import Redeliver
from services.notifier.const import DECIDED_EVENTS_KEPT, OPEN_EVENTS_MAX, OUTBOX_RETRY_S
from services.notifier.rules import AlertRules, CameraRule


@dataclass(frozen=True)
class Verdict:
    """What one message of an event says: alert now (in ``zone``, None = no zone to name), look again at
    ``ready_at`` (the event's clock) when an object is still short of its dwell, or why not yet."""

    alert: bool = False
    zone: str | None = None
    ready_at: float | None = None
    why: str = ""


def places(rule: CameraRule, tracked: schemas.TrackedObject) -> list[tuple[str | None, float]]:
    """Where the object counts, each with since when: the required zones it stands in, or (none required)
    anywhere since it was first seen, named by the first zone it stands in, if any."""
    if not rule.required_zones:
        return [(next(iter(tracked.zones), None), tracked.first_seen)]
    return [(zone, tracked.zones[zone]) for zone in rule.required_zones if zone in tracked.zones]


def judge(rule: CameraRule, event: schemas.DetectionEvent, now: float | None = None) -> Verdict:
    """The verdict on the event as its message shows it, at ``now`` on the event's clock (its frame time
    unless a check looks at it later)."""
    if not rule.alerts_for(event.label):
        return Verdict(why=f"{event.label} does not alert on {event.camera} (NOTIFY_RULES)")
    if not event.objects:
        return _without_objects(rule, event)
    now = event.frame_time if now is None else now
    waits: list[tuple[float, str | None]] = []
    for tracked in event.objects:
        if tracked.seen_before:
            continue
        for zone, since in places(rule, tracked):
            ready_at = since + rule.min_dwell_s
            if now >= ready_at:
                return Verdict(alert=True, zone=zone)
            waits.append((ready_at, zone))
    if waits:
        ready_at, zone = min(waits, key=lambda wait: wait[0])
        where = f" in {zone}" if zone else ""
        return Verdict(ready_at=ready_at, why=f"no object stayed {rule.min_dwell_s:g} s{where}")
    if all(tracked.seen_before for tracked in event.objects):
        return Verdict(why="only objects seen before (stationary, known before the event)")
    return Verdict(why=f"no object in {', '.join(rule.required_zones)}")


def _without_objects(rule: CameraRule, event: schemas.DetectionEvent) -> Verdict:
    """A detector from before tracked objects: its start alerts, as it always did; in a required zone only
    if the event names one (it cannot tell how long anything stayed)."""
    if event.type != "start":
        return Verdict(why="no object in view")
    if not rule.required_zones:
        return Verdict(alert=True, zone=next(iter(event.zones), None))
    zone = next((zone for zone in event.zones if zone in rule.required_zones), None)
    return Verdict(alert=zone is not None, zone=zone, why=f"no object in {', '.join(rule.required_zones)}")


@dataclass(frozen=True)
class Decision:
    """An event decided: it alerts (``why`` empty) at ``at`` on its clock, or it ended without (``why``)."""

    event: schemas.DetectionEvent
    snapshot_from: schemas.DetectionEvent | None
    zone: str | None
    at: float
    why: str = ""


@dataclass
class _Open:
    latest: schemas.DetectionEvent
    heard_at: float  # monotonic
    snapshot_from: schemas.DetectionEvent | None
    due: float | None = None  # monotonic: when to look again for a loiterer
    why: str = ""  # what its objects lacked, when last in view

    def clock(self, monotonic_now: float) -> float:
        """The event's clock now: its latest frame time plus the time since that message came."""
        return self.latest.frame_time + (monotonic_now - self.heard_at)


class EventWatch:
    """The events not yet decided, at most OPEN_EVENTS_MAX (the oldest dropped), each with its latest
    message; ``decide`` is called once per event (on the network thread for a message, on the watch's
    thread for a dwell check). A Redeliver from it (the outbox failed) leaves the event undecided."""

    def __init__(self, rules: AlertRules, decide: Callable[[Decision], None], logger: logging.Logger) -> None:
        self._rules = rules
        self._decide = decide
        self._logger = logger
        self._open: OrderedDict[str, _Open] = OrderedDict()
        self._decided: OrderedDict[str, None] = OrderedDict()
        self._changed = threading.Condition()

    def on_event(self, event: schemas.DetectionEvent) -> None:
        with self._changed:
            if event.event_id in self._decided:
                return
            if event.type == "end":
                self._end(event)
                return
            known = self._open.pop(event.event_id, None)
            carried = event if event.snapshot is not None else known.snapshot_from if known else None
            self._open[event.event_id] = _Open(
                event, time.monotonic(), carried, why=known.why if known else ""
            )
            if len(self._open) > OPEN_EVENTS_MAX:
                dropped, _ = self._open.popitem(last=False)
                self._logger.warning("tracking too many open events: dropped %s, the oldest", dropped)
            self._look(event.event_id, None)
            self._changed.notify()

    def _end(self, event: schemas.DetectionEvent) -> None:
        """An end cancels: the event is recorded as not alerted, with what it lacked."""
        known = self._open.get(event.event_id)
        verdict = judge(self._rules.of(event.camera), known.latest if known else event)
        why = (known and known.why) or verdict.why or "ended before its rule was met"
        self._settle(event.event_id, Decision(event, None, None, event.frame_time, why))

    def _look(self, event_id: str, monotonic_now: float | None) -> None:
        """Judge the event by its latest message (at the event's clock now, for a check); alert, or set
        when to look again."""
        entry = self._open[event_id]
        now = None if monotonic_now is None else entry.clock(monotonic_now)
        verdict = judge(self._rules.of(entry.latest.camera), entry.latest, now)
        entry.due = None
        if entry.latest.objects:
            entry.why = verdict.why
        if verdict.alert:
            at = entry.latest.frame_time if now is None else now
            self._settle(event_id, Decision(entry.latest, entry.snapshot_from, verdict.zone, at))
        elif verdict.ready_at is not None:
            entry.due = entry.heard_at + (verdict.ready_at - entry.latest.frame_time)

    def _settle(self, event_id: str, decision: Decision) -> None:
        self._decide(decision)  # a Redeliver leaves it open, for the broker's next delivery or check
        self._open.pop(event_id, None)
        self._decided[event_id] = None
        if len(self._decided) > DECIDED_EVENTS_KEPT:
            self._decided.popitem(last=False)

    def wake(self) -> None:
        with self._changed:
            self._changed.notify()

    def run(self, stop: threading.Event) -> None:
        """The dwell checks, each at its moment, until ``stop`` (with ``wake``)."""
        with self._changed:
            while not stop.is_set():
                now = time.monotonic()
                for event_id in [key for key, entry in self._open.items() if entry.due and entry.due <= now]:
                    self._check(event_id, now)
                dues = [entry.due for entry in self._open.values() if entry.due is not None]
                self._changed.wait(None if not dues else max(0.0, min(dues) - time.monotonic()))

    def _check(self, event_id: str, now: float) -> None:
        try:
            self._look(event_id, now)
        except Redeliver as error:
            self._logger.warning("%s; trying again in %g s", error, OUTBOX_RETRY_S)
            self._open[event_id].due = now + OUTBOX_RETRY_S
