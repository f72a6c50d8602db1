"""The Flask app: pages, JSON API, live streams and Server-Sent Events, all behind the owner's login.

Each blueprint states who may use it (``blueprints/access.py``): ``auth`` is public, ``pages`` send
strangers to the login, ``api``, ``live``, ``media`` and ``stream`` answer them with a plain 401;
``system`` and ``zones`` have one blueprint of each kind (a page and its JSON).
"""

from __future__ import annotations

import datetime
import threading
from typing import TYPE_CHECKING

from flask import Flask, Response, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from services.common.logs import RateLimitedLog
from services.common.scores import percent
from services.web.auth import LoginLimiter, Owner, Sessions
from services.web.blueprints import access, api, auth, live, media, pages, stream, system, zones
from services.web.blueprints.common import EXTENSION, WebContext
from services.web.const import LOGIN_CHECKS, MAX_REQUEST_BYTES, SESSION_DAYS

if TYPE_CHECKING:
    from services.web.relay import WebRelay

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)


def create_app(relay: WebRelay, secret_key: str, sessions: Sessions) -> Flask:
    settings = relay.settings
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=secret_key,
        SESSION_COOKIE_NAME="sentrycam_session",
        SESSION_COOKIE_HTTPONLY=True,
        # Lax, not Strict: the notifier's e-mail links to /events/<id> must arrive logged in.
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.web_secure_cookies,
        PERMANENT_SESSION_LIFETIME=datetime.timedelta(days=SESSION_DAYS),
        MAX_CONTENT_LENGTH=MAX_REQUEST_BYTES,
        MAX_FORM_MEMORY_SIZE=MAX_REQUEST_BYTES,
    )
    # Per app, not per module: every relay in a process (the tests run several) has its own.
    app.extensions[EXTENSION] = WebContext(
        relay=relay,
        owner=Owner(settings),
        logins=LoginLimiter(settings.web_login_attempts, settings.web_login_window_s),
        password_checks=threading.BoundedSemaphore(LOGIN_CHECKS),
        sessions=sessions,
        refusals=RateLimitedLog(relay.logger),
    )
    app.add_template_filter(percent, "percent")  # {{ event.top_score | percent }}: "73 %"
    app.before_request(access.start_session)
    app.before_request(access.unknown_path)
    app.after_request(security_headers)
    app.register_error_handler(RequestEntityTooLarge, too_large)
    app.register_error_handler(HTTPException, http_error)
    for blueprint in (
        auth.blueprint,
        pages.blueprint,
        api.blueprint,
        live.blueprint,
        media.blueprint,
        stream.blueprint,
        system.blueprint,
        system.api_blueprint,
        zones.blueprint,
        zones.api_blueprint,
    ):
        app.register_blueprint(blueprint)
    return app


def security_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    # Files (static ones, pictures) say how long they may be kept; everything else is private and live.
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def too_large(_error: RequestEntityTooLarge) -> ResponseReturnValue:
    return jsonify(error=f"request larger than {MAX_REQUEST_BYTES} bytes"), 400


def http_error(error: HTTPException) -> ResponseReturnValue:
    if request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json":
        return jsonify(error=error.description), error.code or 500
    return error
