"""The zone editor: a camera's zones and masks drawn on its latest frame (``/cameras/<id>/zones``), and its
JSON: what the detector uses (``GET``) and a change saved to the detector's ``config/set`` (``POST``)."""

from __future__ import annotations

from flask import Blueprint, abort, jsonify, render_template
from flask.typing import ResponseReturnValue

from services.common import schemas
from services.web.blueprints.access import owner_machine, owner_page
from services.web.blueprints.common import json_body, known_camera, relay, require_broker
from services.web.zones import ConfigTooLarge, PublishFailed

# Two blueprints, one guard each: the page sends strangers to the login, the JSON answers them 401.
blueprint = Blueprint("zones", __name__)
blueprint.before_request(owner_page)
api_blueprint = Blueprint("zones_api", __name__, url_prefix="/api")
api_blueprint.before_request(owner_machine)


@blueprint.get("/cameras/<camera>/zones")
def page(camera: str) -> ResponseReturnValue:
    return render_template("zones.html", page="zones", status=relay().status(), camera=known_camera(camera))


@api_blueprint.get("/cameras/<camera>/config")
def config(camera: str) -> ResponseReturnValue:
    known_camera(camera)
    return jsonify(relay().zones.view(camera).as_dict(camera))


@api_blueprint.post("/cameras/<camera>/config")
def save(camera: str) -> ResponseReturnValue:
    """Answers once the broker has the change (retained); the page then waits for a ``config/state``
    newer than ``received``: the detector's verdict."""
    known_camera(camera)
    change = json_body(schemas.CameraConfigSet)
    require_broker()
    web = relay()
    received = web.zones.view(camera).received  # before the publish: the verdict comes after it
    try:
        config = web.set_config(camera, change)
    except ConfigTooLarge as error:
        abort(400, str(error))
    except PublishFailed as error:
        abort(502, str(error))
    return jsonify(published=config.model_dump(mode="json", exclude_none=True), received=received)
