"""The system page and its JSON: each service's status, the detector's, notifier's and recorder's latest
stats, and the disk the events and recordings take (``services/web/system.py``)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, render_template
from flask.typing import ResponseReturnValue

from services.web.blueprints.access import owner_machine, owner_page
from services.web.blueprints.common import relay

# Two blueprints, one guard each: the page sends strangers to the login, the JSON answers them 401.
blueprint = Blueprint("system", __name__)
blueprint.before_request(owner_page)
api_blueprint = Blueprint("system_api", __name__, url_prefix="/api")
api_blueprint.before_request(owner_machine)


def system_view() -> dict[str, Any]:
    web = relay()
    return {
        **web.system.view(),
        "broker_connected": web.broker_connected,
        "relay_bad_payloads": web.bad_payloads,
    }


@blueprint.get("/system")
def page() -> ResponseReturnValue:
    return render_template("system.html", page="system", status=relay().status(), system=system_view())


@api_blueprint.get("/system")
def api() -> ResponseReturnValue:
    return jsonify(system_view())
