"""The JSON API: state, events and the controls, which publish commands to the broker."""

from __future__ import annotations

from flask import Blueprint, abort, jsonify
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, StrictBool

from services.common import schemas
from services.web.blueprints.access import owner_machine
from services.web.blueprints.common import (
    event_json,
    json_body,
    known_camera,
    query_args,
    relay,
    require_broker,
)
from services.web.event_model import EventFilter

blueprint = Blueprint("api", __name__, url_prefix="/api")
blueprint.before_request(owner_machine)


class ArmedBody(BaseModel):
    armed: StrictBool


class DetectBody(BaseModel):
    enabled: StrictBool


@blueprint.get("/status")
def status() -> ResponseReturnValue:
    return jsonify(relay().status())


@blueprint.get("/cameras")
def cameras() -> ResponseReturnValue:
    return jsonify(relay().cameras())


@blueprint.get("/cameras/<camera>")
def camera(camera: str) -> ResponseReturnValue:
    return jsonify(known_camera(camera))


@blueprint.get("/events")
def events() -> ResponseReturnValue:
    return jsonify([event_json(event) for event in relay().store.query(query_args(EventFilter))])


@blueprint.get("/events/<event_id>")
def event(event_id: str) -> ResponseReturnValue:
    found = relay().store.get(event_id)
    if found is None:
        abort(404, "no such event")
    return jsonify(event_json(found))


@blueprint.post("/armed")
def armed() -> ResponseReturnValue:
    body = json_body(ArmedBody)
    require_broker()
    relay().set_armed(body.armed)
    return jsonify(armed=schemas.on_off(body.armed), accepted=True), 202


@blueprint.post("/cameras/<camera>/detect")
def detect(camera: str) -> ResponseReturnValue:
    known_camera(camera)
    body = json_body(DetectBody)
    require_broker()
    relay().set_detect(camera, body.enabled)
    return jsonify(detect=schemas.on_off(body.enabled), accepted=True), 202


@blueprint.post("/cameras/<camera>/alarm")
def alarm(camera: str) -> ResponseReturnValue:
    known_camera(camera)
    command = json_body(schemas.AlarmCommand)
    require_broker()
    relay().set_alarm(camera, command)
    return jsonify(alarm=command.state, accepted=True), 202
