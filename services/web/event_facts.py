"""What an event page says beyond the stored row: how long the event lasted (or has lasted so far) and, for
each of its objects, its score in words and how long it has stood in each of its zones.

The browser says durations the same way (``durationText`` in static/app.js), to keep them growing while an
event is open without asking the relay every second.
"""

from __future__ import annotations

from typing import Any

from services.common.scores import percent
from services.web.event_model import StoredEvent, StoredObject


def duration_text(seconds: float) -> str:
    """``72.4`` → ``"1 min 12 s"``; whole seconds, rounded down (a clock that has not yet reached 13 s)."""
    whole = max(0, int(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def event_facts(event: StoredEvent, now: float) -> dict[str, Any]:
    """The duration and the objects as the API and the pages show them. An open event is measured up to
    ``now``; an ended one up to its end, and its objects up to when each was last seen."""
    until = event.ended_at if event.ended_at is not None else now
    return {
        "duration_s": max(0.0, until - event.started_at),
        "duration_text": duration_text(until - event.started_at),
        "objects": [
            object_facts(tracked, now if event.ended_at is None else None) for tracked in event.objects
        ],
    }


def object_facts(tracked: StoredObject, now: float | None) -> dict[str, Any]:
    """One object with its score in words and, per zone, since when it is there and for how long (up to
    ``now``, or up to when it was last seen when its event has ended)."""
    until = tracked.last_seen if now is None else max(now, tracked.last_seen)
    zones = [
        {
            "zone": zone,
            "entered_at": entered,
            "for_s": max(0.0, until - entered),
            "for_text": duration_text(until - entered),
        }
        for zone, entered in sorted(tracked.zones.items(), key=lambda item: item[1])
    ]
    return {
        "id": tracked.id,
        "box": list(tracked.box),
        "score": tracked.score,
        "score_text": percent(tracked.score),
        "zones": zones,
        "stationary": tracked.stationary,
        "seen_before": tracked.seen_before,
        "first_seen": tracked.first_seen,
        "last_seen": tracked.last_seen,
    }
