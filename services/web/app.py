"""The Flask app: pages, JSON API, live streams and Server-Sent Events, all behind the owner's login."""

from __future__ import annotations

import datetime
import json
import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Flask,
    Response,
    abort,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    session,
    url_for,
)
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from services.common import schemas, topics
from services.web.auth import SAFE_METHODS, LoginLimiter, Owner, csrf_ok, new_csrf_token, secret_key
from services.web.const import EVENTS_PAGE_SIZE, MAX_REQUEST_BYTES, SESSION_DAYS, SSE_KEEPALIVE_S
from services.web.events import DAY_RE, EVENT_ID_RE, EventFilter
from services.web.live import BOUNDARY, mjpeg_stream
from services.web.relay import WebRelay, public_event

PUBLIC_ENDPOINTS = frozenset({"login", "healthz", "static"})
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)


def create_app(relay: WebRelay) -> Flask:
    settings = relay.settings
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=secret_key(settings, settings.web_data_dir),
        SESSION_COOKIE_NAME="sentrycam_session",
        SESSION_COOKIE_HTTPONLY=True,
        # Lax, not Strict: the notifier's e-mail links to /events/<id> must arrive logged in.
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.web_secure_cookies,
        PERMANENT_SESSION_LIFETIME=datetime.timedelta(days=SESSION_DAYS),
        MAX_CONTENT_LENGTH=MAX_REQUEST_BYTES,
        MAX_FORM_MEMORY_SIZE=MAX_REQUEST_BYTES,
    )
    owner = Owner(settings)
    limiter = LoginLimiter(settings.web_login_attempts, settings.web_login_window_s)
    add_guards(app)
    add_login(app, relay, owner, limiter)
    add_pages(app, relay)
    add_live(app, relay)
    add_api(app, relay)
    return app


def add_guards(app: Flask) -> None:
    """Session and CSRF checks before every request; security headers and JSON errors after."""

    @app.before_request
    def guard() -> Any:
        if "csrf" not in session:
            session["csrf"] = new_csrf_token()
        g.csrf = session["csrf"]
        if request.endpoint in PUBLIC_ENDPOINTS:
            return None
        if not session.get("user"):
            # Scripts and <img> streams cannot use a login page: they, and unknown paths, get a plain 401.
            machine = request.path.startswith("/api/") or request.endpoint in {"live", "latest", "stream"}
            if machine or request.endpoint is None:
                return jsonify(error="login required"), 401
            return redirect(url_for("login", next=request.full_path.rstrip("?")))
        if request.method not in SAFE_METHODS:
            given = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token")
            if not csrf_ok(session.get("csrf"), given):
                return jsonify(error="missing or wrong CSRF token"), 403
        return None

    @app.after_request
    def security_headers(response: Response) -> Response:
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        if request.endpoint != "static":
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_error: RequestEntityTooLarge) -> Any:
        return jsonify(error=f"request larger than {MAX_REQUEST_BYTES} bytes"), 400

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Any:
        if request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json":
            return jsonify(error=error.description), error.code
        return error


def add_login(app: Flask, relay: WebRelay, owner: Owner, limiter: LoginLimiter) -> None:
    @app.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        error = None
        status = 200
        if request.method == "POST":
            address = request.remote_addr or "?"
            wait_s = limiter.blocked_for(address)
            if not csrf_ok(session.get("csrf"), request.form.get("csrf_token")):
                error, status = "The form expired; please try again.", 400
            elif wait_s > 0:
                error, status = f"Too many failed logins; try again in {int(wait_s) + 1} s.", 429
            elif owner.check(request.form.get("username", ""), request.form.get("password", "")):
                limiter.succeeded(address)
                session.clear()
                session.permanent = True
                session["user"] = owner.username
                session["csrf"] = new_csrf_token()
                return redirect(safe_next(request.args.get("next")))
            else:
                limiter.failed(address)
                relay.logger.warning("failed login from %s", address)
                error, status = "Wrong user name or password.", 401
        return render_template("login.html", error=error, status=relay.status()), status

    @app.post("/logout")
    def logout() -> Any:
        session.clear()
        return redirect(url_for("login"))

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify(ok=True, broker_connected=relay.broker_connected)


def add_pages(app: Flask, relay: WebRelay) -> None:
    @app.get("/")
    def index() -> Any:
        return render_template("live.html", page="live", status=relay.status())

    @app.get("/events")
    def timeline() -> Any:
        where = event_filter(request.args)
        events = [public_event(e) for e in relay.store.query(where)]
        return render_template(
            "timeline.html",
            page="timeline",
            status=relay.status(),
            events=events,
            where=where,
            choices=relay.store.choices(),
        )

    @app.get("/events/<event_id>")
    def event_page(event_id: str) -> Any:
        event = relay.store.get(event_id)
        if event is None:
            abort(404, "no such event")
        return render_template("event.html", page="event", status=relay.status(), event=public_event(event))

    @app.get("/events/<event_id>/snapshot.jpg")
    def snapshot(event_id: str) -> Any:
        return send_picture(relay, event_id, thumbnail=False)

    @app.get("/events/<event_id>/thumb.jpg")
    def thumbnail(event_id: str) -> Any:
        return send_picture(relay, event_id, thumbnail=True)


def add_live(app: Flask, relay: WebRelay) -> None:
    @app.get("/cam/<camera>/live.mjpg")
    def live(camera: str) -> Any:
        known_camera(relay, camera)
        return Response(
            mjpeg_stream(relay.hub, camera),
            mimetype=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @app.get("/cam/<camera>/latest.jpg")
    def latest(camera: str) -> Any:
        known_camera(relay, camera)
        frame = relay.hub.latest(camera)
        if frame is None:
            abort(404, "no frame from this camera yet")
        return Response(frame.jpeg, mimetype="image/jpeg", headers={"Cache-Control": "no-store"})

    @app.get("/api/stream")
    def stream() -> Any:
        return Response(
            sse_stream(relay),
            mimetype="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )


def add_api(app: Flask, relay: WebRelay) -> None:
    @app.get("/api/status")
    def api_status() -> Any:
        return jsonify(relay.status())

    @app.get("/api/cameras")
    def api_cameras() -> Any:
        return jsonify(relay.cameras())

    @app.get("/api/cameras/<camera>")
    def api_camera(camera: str) -> Any:
        return jsonify(known_camera(relay, camera))

    @app.get("/api/events")
    def api_events() -> Any:
        return jsonify([public_event(e) for e in relay.store.query(event_filter(request.args))])

    @app.get("/api/events/<event_id>")
    def api_event(event_id: str) -> Any:
        event = relay.store.get(event_id)
        if event is None:
            abort(404, "no such event")
        return jsonify(public_event(event))

    @app.post("/api/armed")
    def api_armed() -> Any:
        armed = json_bool(json_body(), "armed")
        require_broker(relay)
        relay.set_armed(armed)
        return jsonify(armed=schemas.on_off(armed), accepted=True), 202

    @app.post("/api/cameras/<camera>/detect")
    def api_detect(camera: str) -> Any:
        known_camera(relay, camera)
        enabled = json_bool(json_body(), "enabled")
        require_broker(relay)
        relay.set_detect(camera, enabled)
        return jsonify(detect=schemas.on_off(enabled), accepted=True), 202

    @app.post("/api/cameras/<camera>/alarm")
    def api_alarm(camera: str) -> Any:
        known_camera(relay, camera)
        try:
            command = schemas.AlarmCommand.model_validate(json_body())
        except ValueError as error:
            abort(400, f"not an alarm command: {error}")
        require_broker(relay)
        relay.set_alarm(camera, command)
        return jsonify(alarm=command.state, accepted=True), 202


def safe_next(target: str | None) -> str:
    """Only local paths: a login link must not bounce the owner to another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    return "/" if parts.scheme or parts.netloc else target


def known_camera(relay: WebRelay, camera: str) -> dict[str, Any]:
    if not topics.CAMERA_ID_RE.fullmatch(camera):
        abort(404, "no such camera")
    state = relay.camera(camera)
    if state is None:
        abort(404, "no such camera")
    return state


def send_picture(relay: WebRelay, event_id: str, thumbnail: bool) -> Any:
    # The id is checked against its pattern before anything touches the file system (no traversal).
    if not EVENT_ID_RE.fullmatch(event_id):
        abort(404, "no such event")
    path = relay.store.snapshot_path(event_id, thumbnail=thumbnail)
    if path is None or not path.is_file():
        abort(404, "no snapshot for this event")
    assert path.parent == Path(relay.store.snapshot_dir)
    return send_file(path, mimetype="image/jpeg", max_age=3600)


def event_filter(args: Any) -> EventFilter:
    camera = args.get("camera") or None
    label = args.get("label") or None
    day = args.get("day") or None
    if camera is not None and not topics.CAMERA_ID_RE.fullmatch(camera):
        abort(400, "bad camera id")
    if label is not None and not topics.LABEL_RE.fullmatch(label):
        abort(400, "bad label")
    if day is not None and not DAY_RE.fullmatch(day):
        abort(400, "day must be YYYY-MM-DD")
    try:
        before = float(args["before"]) if args.get("before") else None
        limit = min(int(args.get("limit", EVENTS_PAGE_SIZE)), EVENTS_PAGE_SIZE)
    except ValueError:
        abort(400, "before and limit must be numbers")
    if limit < 1:
        abort(400, "limit must be at least 1")
    return EventFilter(camera=camera, label=label, day=day, before=before, limit=limit)


def json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, "expected a JSON object")
    return body


def json_bool(body: dict[str, Any], key: str) -> bool:
    value = body.get(key)
    if not isinstance(value, bool):
        abort(400, f"{key!r} must be true or false")
    return value


def require_broker(relay: WebRelay) -> None:
    if not relay.broker_connected:
        abort(503, "the broker connection is lost; try again when it is back")


def sse_stream(relay: WebRelay) -> Iterator[str]:
    listener = relay.broadcaster.subscribe()
    try:
        # The first message brings the page up to date, and makes the server send the headers now.
        yield sse("status", relay.status())
        while not relay.hub.closed:
            try:
                kind, data = listener.get(timeout=SSE_KEEPALIVE_S)
            except queue.Empty:
                yield ": keep-alive\n\n"
                continue
            yield f"event: {kind}\ndata: {data}\n\n"
    finally:
        relay.broadcaster.unsubscribe(listener)


def sse(kind: str, data: object) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
