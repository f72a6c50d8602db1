"""Who may use what. Each blueprint registers one of the guards below as its ``before_request``; the app
runs ``start_session`` and ``unknown_path`` before every request."""

from __future__ import annotations

from flask import g, jsonify, redirect, request, session, url_for
from flask.typing import ResponseReturnValue

from services.web.auth import SAFE_METHODS, csrf_ok, new_csrf_token
from services.web.blueprints.common import web_context


def start_session() -> None:
    """Every session, signed in or not, has a CSRF token: the login form needs one too. A signed-in
    session the server no longer knows (logged out, maybe from another copy of the cookie) is signed out."""
    if "user" in session and not web_context().sessions.valid(session.get("sid")):
        session.pop("user", None)
        session.pop("sid", None)
    if "csrf" not in session:
        session["csrf"] = new_csrf_token()
    g.csrf = session["csrf"]


def signed_in() -> bool:
    return bool(session.get("user"))


def login_required() -> ResponseReturnValue:
    return jsonify(error="login required"), 401


def unknown_path() -> ResponseReturnValue | None:
    """No route means no blueprint to ask: strangers get the same 401 as for the API, so that probing
    cannot tell which paths exist."""
    if request.url_rule is None and not signed_in():
        return login_required()
    return None


def owner_page() -> ResponseReturnValue | None:
    """For pages: anyone else is sent to the login form, and back here after it."""
    if not signed_in():
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    return csrf_refusal()


def owner_machine() -> ResponseReturnValue | None:
    """For scripts, ``<img>`` streams and ``EventSource``: they cannot use a login form, so anyone else
    gets a plain 401."""
    if not signed_in():
        return login_required()
    return csrf_refusal()


def csrf_refusal() -> ResponseReturnValue | None:
    """A change asked for by a signed-in session needs the session's token, or any site the owner visits
    could make it."""
    if request.method in SAFE_METHODS:
        return None
    given = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token")
    if not csrf_ok(session.get("csrf"), given):
        return jsonify(error="missing or wrong CSRF token"), 403
    return None
