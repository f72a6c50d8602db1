"""The recorder's video files, for ``<video>`` elements and downloads: with HTTP range requests (seeking),
behind the login (a plain 401, as for pictures), read from ``WEB_RECORD_DIR`` only."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, abort, request, send_file
from flask.typing import ResponseReturnValue

from services.web.blueprints.access import owner_machine
from services.web.blueprints.common import relay
from services.web.event_model import EVENT_ID_RE
from services.web.recordings import RecordDir, recently_changed

blueprint = Blueprint("media", __name__)
blueprint.before_request(owner_machine)


@blueprint.get("/clips/<clip_id>.mp4")
def clip(clip_id: str) -> ResponseReturnValue:
    # Clip ids follow the event id pattern; checked before anything touches the store or the disk.
    if not EVENT_ID_RE.fullmatch(clip_id):
        abort(404, "no such clip")
    found = relay().store.clips.get(clip_id)
    if found is None:
        abort(404, "no such clip")
    path = record_dir().file(found.path)
    if path is None:
        abort(404, "the clip's file is gone")
    return send_video(path, growing=found.recording, download_name=f"{clip_id}.mp4")


@blueprint.get("/cameras/<camera>/recordings/<day>/<name>.mp4")
def segment(camera: str, day: str, name: str) -> ResponseReturnValue:
    record = record_dir()
    path = record.segment(camera, day, name)
    if path is None:
        abort(404, "no such recording")
    return send_video(path, growing=recently_changed(path), download_name=f"{camera}-{day}-{name}.mp4")


def record_dir() -> RecordDir:
    found = relay().record_dir
    if found is None:
        abort(404, "playback is off (WEB_RECORD_DIR is not set)")
    return found


def send_video(path: Path, growing: bool, download_name: str) -> ResponseReturnValue:
    """The file with range requests (206 and Content-Range for ``Range:``; Werkzeug checks the range
    against the size it read). A file still growing has no validator: each request reads its size anew, and
    no one keeps a copy that a later ``If-Range`` would pair with the longer file."""
    response = send_file(
        path,
        mimetype="video/mp4",
        conditional=True,
        etag=not growing,
        as_attachment="download" in request.args,
        download_name=download_name,
    )
    response.headers["Cache-Control"] = "no-store" if growing else "private, no-cache"
    return response
