"""Camera pictures: the MJPEG stream and the newest frame, for ``<img>`` elements."""

from __future__ import annotations

from flask import Blueprint, Response, abort
from flask.typing import ResponseReturnValue

from services.web.blueprints.access import owner_machine
from services.web.blueprints.common import known_camera, relay
from services.web.live import BOUNDARY, mjpeg_stream

blueprint = Blueprint("live", __name__, url_prefix="/cam")
blueprint.before_request(owner_machine)


@blueprint.get("/<camera>/live.mjpg")
def stream(camera: str) -> ResponseReturnValue:
    known_camera(camera)
    return Response(
        mjpeg_stream(relay().hub, camera),
        mimetype=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@blueprint.get("/<camera>/latest.jpg")
def latest(camera: str) -> ResponseReturnValue:
    known_camera(camera)
    frame = relay().hub.latest(camera)
    if frame is None:
        abort(404, "no frame from this camera yet")
    return Response(frame.jpeg, mimetype="image/jpeg", headers={"Cache-Control": "no-store"})
