"""The owner's HTML pages: the live grid, the timeline, one event, the event's pictures, and a camera's
recordings of a day."""

from __future__ import annotations

import time
from typing import Annotated

from flask import Blueprint, abort, render_template, send_file
from flask.typing import ResponseReturnValue
from pydantic import AfterValidator, BaseModel

from services.common import topics
from services.web.blueprints.access import owner_page
from services.web.blueprints.common import event_json, query_args, relay
from services.web.event_model import DAY_RE, EVENT_ID_RE, EventFilter, local_day, matching
from services.web.recordings import SEGMENT_RE

blueprint = Blueprint("pages", __name__)
blueprint.before_request(owner_page)


class RecordingsQuery(BaseModel):
    # YYYY-MM-DD, the server's local day; today when not given
    date: Annotated[str | None, AfterValidator(matching(DAY_RE, "date must be YYYY-MM-DD"))] = None
    # HH-MM-SS: the segment to play
    play: Annotated[str | None, AfterValidator(matching(SEGMENT_RE, "play must be HH-MM-SS"))] = None


@blueprint.get("/")
def index() -> ResponseReturnValue:
    return render_template("live.html", page="live", status=relay().status())


@blueprint.get("/events")
def timeline() -> ResponseReturnValue:
    where = query_args(EventFilter)
    store = relay().store
    return render_template(
        "timeline.html",
        page="timeline",
        status=relay().status(),
        events=[event_json(event) for event in store.query(where)],
        where=where,
        choices=store.choices(),
    )


@blueprint.get("/events/<event_id>")
def event(event_id: str) -> ResponseReturnValue:
    found = relay().store.get(event_id)
    if found is None:
        abort(404, "no such event")
    return render_template("event.html", page="event", status=relay().status(), event=event_json(found))


@blueprint.get("/cameras/<camera>/recordings")
def recordings(camera: str) -> ResponseReturnValue:
    if not topics.CAMERA_ID_RE.fullmatch(camera):
        abort(404, "no such camera")
    asked = query_args(RecordingsQuery)
    day = asked.date or local_day(time.time())
    record = relay().record_dir
    segments = record.segments(camera, day) if record is not None else []
    playing = next((segment for segment in segments if segment.name == asked.play), None)
    return render_template(
        "recordings.html",
        page="recordings",
        status=relay().status(),
        camera=camera,
        day=day,
        playback=record is not None,
        segments=segments,
        playing=playing,
    )


@blueprint.get("/events/<event_id>/snapshot.jpg")
def snapshot(event_id: str) -> ResponseReturnValue:
    return send_picture(event_id, thumbnail=False)


@blueprint.get("/events/<event_id>/thumb.jpg")
def thumbnail(event_id: str) -> ResponseReturnValue:
    return send_picture(event_id, thumbnail=True)


def send_picture(event_id: str, thumbnail: bool) -> ResponseReturnValue:
    # The id is checked against its pattern before anything touches the file system (no traversal).
    if not EVENT_ID_RE.fullmatch(event_id):
        abort(404, "no such event")
    store = relay().store
    path = store.snapshot_path(event_id, thumbnail=thumbnail)
    if path is None or not path.is_file():
        abort(404, "no snapshot for this event")
    assert path.parent == store.snapshot_dir
    return send_file(path, mimetype="image/jpeg", max_age=3600)
