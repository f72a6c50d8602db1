"""What the views share: the relay and the login of their app, and how requests are read and events shown."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

from flask import abort, current_app, request, url_for
from pydantic import BaseModel, ValidationError

from services.common import topics
from services.common.logs import RateLimitedLog
from services.common.scores import percent
from services.web.auth import LoginLimiter, Owner, Sessions
from services.web.clips import StoredClip
from services.web.event_facts import event_facts
from services.web.event_model import StoredEvent

if TYPE_CHECKING:
    from services.web.relay import WebRelay

EXTENSION = "sentrycam"
# File names stay inside the relay; the API shows URLs instead.
PRIVATE_EVENT_FIELDS = frozenset({"snapshot", "thumbnail", "clips"})

ModelT = TypeVar("ModelT", bound=BaseModel)


@dataclass(frozen=True)
class WebContext:
    relay: WebRelay
    owner: Owner
    logins: LoginLimiter
    # Bounds the password checks running at once (each scrypt check takes 32 MB).
    password_checks: threading.BoundedSemaphore
    sessions: Sessions
    # Refused logins, logged at most once a minute per kind.
    refusals: RateLimitedLog


def web_context() -> WebContext:
    return cast(WebContext, current_app.extensions[EXTENSION])


def relay() -> WebRelay:
    return web_context().relay


def event_json(event: StoredEvent) -> dict[str, Any]:
    """An event as the API, the pages and the event stream show it. Needs a request (for the URLs)."""
    shown = {name: value for name, value in asdict(event).items() if name not in PRIVATE_EVENT_FIELDS}
    shown["has_snapshot"] = event.has_snapshot
    shown["score_text"] = percent(event.top_score)  # said as the email and the snapshot label say it
    shown["url"] = url_for("pages.event", event_id=event.event_id)
    shown["snapshot_url"] = url_for("pages.snapshot", event_id=event.event_id) if event.snapshot else None
    shown["thumbnail_url"] = url_for("pages.thumbnail", event_id=event.event_id) if event.thumbnail else None
    shown["clips"] = [clip_json(clip) for clip in event.clips]
    shown["clip"] = shown["clips"][0] if event.clips else None
    shown.update(event_facts(event, time.time()))  # the duration and the objects in words
    return shown


def clip_json(clip: StoredClip) -> dict[str, Any]:
    """A clip as the API and the pages show it: its URLs instead of its path, none while playback is off."""
    playable = relay().record_dir is not None
    url = url_for("media.clip", clip_id=clip.clip_id) if playable else None
    return {
        "clip_id": clip.clip_id,
        "state": clip.state,
        "started_at": clip.started_at,
        "ended_at": clip.ended_at,
        "duration_s": clip.duration_s,
        "bytes": clip.bytes,
        "url": url,
        "download_url": url_for("media.clip", clip_id=clip.clip_id, download=1) if playable else None,
    }


def known_camera(camera: str) -> dict[str, Any]:
    if not topics.CAMERA_ID_RE.fullmatch(camera):
        abort(404, "no such camera")
    state = relay().camera(camera)
    if state is None:
        abort(404, "no such camera")
    return state


def require_broker() -> None:
    if not relay().broker_connected:
        abort(503, "the broker connection is lost; try again when it is back")


def json_body(model: type[ModelT]) -> ModelT:
    """The request's JSON object as ``model``; 400 otherwise."""
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # nested deeper than Python's JSON decoder goes (a 60 KB body can): no object
        body = None
    if not isinstance(body, dict):
        abort(400, "expected a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as error:
        abort(400, first_problem(error))


def query_args(model: type[ModelT]) -> ModelT:
    """The query string as ``model``; 400 otherwise. An empty field (of a filter form) means unset."""
    given = {name: value for name, value in request.args.items() if value}
    try:
        return model.model_validate(given)
    except ValidationError as error:
        abort(400, first_problem(error))


def first_problem(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    problem = first["msg"].removeprefix("Value error, ")
    return f"{where}: {problem}" if where else problem
