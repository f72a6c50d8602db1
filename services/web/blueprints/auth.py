"""Public views: the login form, the logout, and the health check for Docker and load balancers."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, jsonify, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue

from services.web.auth import csrf_ok, new_csrf_token
from services.web.blueprints.access import csrf_refusal, signed_in
from services.web.blueprints.common import relay, web_context

blueprint = Blueprint("auth", __name__)


@blueprint.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    error, status = None, 200
    if request.method == "POST":
        refused = refused_login()
        if refused is None:
            return redirect(safe_next(request.args.get("next")))
        error, status = refused
    return render_template("login.html", error=error, status=relay().status()), status


def refused_login() -> tuple[str, int] | None:
    """Signs the owner in; otherwise the form's error message and the answer's status."""
    context = web_context()
    address = request.remote_addr or "?"
    wait_s = context.logins.blocked_for(address)
    if not csrf_ok(session.get("csrf"), request.form.get("csrf_token")):
        return "The form expired; please try again.", 400
    if wait_s > 0:
        return f"Too many failed logins; try again in {int(wait_s) + 1} s.", 429
    if not context.owner.check(request.form.get("username", ""), request.form.get("password", "")):
        context.logins.failed(address)
        relay().logger.warning("failed login from %s", address)
        return "Wrong user name or password.", 401
    context.logins.succeeded(address)
    session.clear()
    session.permanent = True
    session["user"] = context.owner.username
    session["csrf"] = new_csrf_token()
    return None


@blueprint.post("/logout")
def logout() -> ResponseReturnValue:
    # Public, so that a page left open after its session ended still lands on the login form; ending a
    # signed-in session is a change like any other and needs its token.
    if signed_in() and (refused := csrf_refusal()) is not None:
        return refused
    session.clear()
    return redirect(url_for("auth.login"))


@blueprint.get("/healthz")
def healthz() -> ResponseReturnValue:
    return jsonify(ok=True, broker_connected=relay().broker_connected)


def safe_next(target: str | None) -> str:
    """Only local paths: a login link must not bounce the owner to another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    return "/" if parts.scheme or parts.netloc else target
