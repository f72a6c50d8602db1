"""Public views: the login form, the logout, and the health check for Docker and load balancers."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from flask import Blueprint, jsonify, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue

from services.web.auth import csrf_ok, new_csrf_token
from services.web.blueprints.access import csrf_refusal, signed_in
from services.web.blueprints.common import relay, web_context
from services.web.const import LOGIN_WAIT_S

blueprint = Blueprint("auth", __name__)


@dataclass(frozen=True)
class Refusal:
    """Why a login did not sign in: the form's message, the answer's status, when to try again."""

    message: str
    status: int
    retry_after_s: int | None = None


@blueprint.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    error, status, headers = None, 200, {}
    if request.method == "POST":
        refused = refused_login()
        if refused is None:
            return redirect(safe_next(request.args.get("next")))
        error, status = refused.message, refused.status
        if refused.retry_after_s is not None:
            headers["Retry-After"] = str(refused.retry_after_s)
    return render_template("login.html", error=error, status=relay().status()), status, headers


def refused_login() -> Refusal | None:
    """Signs the owner in; otherwise why not.

    The attempt is counted before the password is checked, so that a hundred at once from one address
    cannot all pass the limit; and only ``LOGIN_CHECKS`` checks run at once (each scrypt check takes
    32 MB), so that many addresses at once cannot take the memory either."""
    context = web_context()
    address = request.remote_addr or "?"
    if not csrf_ok(session.get("csrf"), request.form.get("csrf_token")):
        return Refusal("The form expired; please try again.", 400)
    wait_s = context.logins.begin(address)
    if wait_s > 0:
        context.refusals.report("login-limit", f"too many failed logins from {address}: answered 429")
        return Refusal(f"Too many failed logins; try again in {int(wait_s) + 1} s.", 429, int(wait_s) + 1)
    if not context.password_checks.acquire(timeout=LOGIN_WAIT_S):
        context.logins.cancel(address)
        context.refusals.report("login-busy", "too many logins at once: answered 503")
        return Refusal("Too many logins at once; please try again.", 503, 1)
    try:
        right = context.owner.check(request.form.get("username", ""), request.form.get("password", ""))
    finally:
        context.password_checks.release()
    if not right:
        relay().logger.warning("failed login from %s", address)
        return Refusal("Wrong user name or password.", 401)
    try:
        session_id = context.sessions.new()
    except OSError as error:
        relay().logger.error("cannot keep the new session: %s", error)
        return Refusal("The server cannot sign you in now; please try again.", 503)
    context.logins.succeeded(address)
    session.clear()
    session.permanent = True
    session["user"] = context.owner.username
    session["sid"] = session_id
    session["csrf"] = new_csrf_token()
    return None


@blueprint.post("/logout")
def logout() -> ResponseReturnValue:
    # Public, so that a page left open after its session ended still lands on the login form; ending a
    # signed-in session is a change like any other and needs its token. The session is forgotten on the
    # server too: a copy of its cookie no longer signs anyone in.
    if signed_in():
        if (refused := csrf_refusal()) is not None:
            return refused
        try:
            web_context().sessions.revoke(session.get("sid"))
        except OSError as error:
            relay().logger.error("session ended, but only until the relay restarts: %s", error)
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
