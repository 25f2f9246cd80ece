"""The status pages: server-rendered HTML that reads well on a phone and reloads itself while
something is live (no JavaScript). ``GET /``: agents (live or dead, their task), queue depth,
missions with progress, recent events, failed tasks with their reason, and a chart of the last
hours. ``GET /missions/<id>``: one mission, its work items and their tasks, and its log.
``GET /tasks/<id>``: one task and the end of its output. What each shows is read in
:mod:`tinytown.api.page_views`.

It sits behind the API's auth (scope ``town.read``): an ``Authorization``/``X-API-Key`` header,
or a key entered once on ``/login`` and kept in an ``HttpOnly``, ``SameSite=Strict`` cookie
(``Secure`` under TLS); ``POST /logout`` drops it. The cookie holds the key itself, checked like
a header on every request (the verification cache keeps that cheap), so a key removed from
``tinytown.toml`` stops working at the next reload.

Every page says what a browser may do with it (:data:`PAGE_HEADERS`): no script, no frame
around it (clickjacking the log-out or log-in form), styles only its own inline ones, forms
posted only back here, no referrer sent with its links.
"""

from __future__ import annotations

from flask import Blueprint, current_app, g, redirect, render_template, request

from tinytown.api.auth import Authenticator, AuthError
from tinytown.api.common import town
from tinytown.api.page_views import mission_view, shorten, status_view
from tinytown.core import defaults
from tinytown.core.records import is_uuid
from tinytown.core.states import rest_state

page = Blueprint("page", __name__, template_folder="templates")
COOKIE = "tinytown_key"
SCOPE = "town.read"
KEY_MAX_CHARS = 4096
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@page.after_request
def _page_headers(resp):
    resp.headers.update(PAGE_HEADERS)
    return resp


def _authenticator() -> Authenticator:
    return current_app.config["AUTHENTICATOR"]


def _allowed(authorization: str | None, key: str | None) -> bool:
    try:
        principal = _authenticator().authenticate(authorization, key)
    except AuthError as err:
        g.principal = err.principal
        return False
    g.principal = principal
    return principal.allows(SCOPE)


def _signed_in() -> bool:
    """The request's key (a header, else the log-in cookie) is good and has ``town.read``."""
    header, key = request.headers.get("Authorization"), request.headers.get("X-API-Key")
    if not (header or key):
        key = request.cookies.get(COOKIE)
    return _allowed(header, key)


def _missing(what: str):
    return render_template("missing.html", what=what), 404


@page.get("/")
def status():
    if not _signed_in():
        return redirect("/login")
    view = status_view(town(), auth=_authenticator().mode != "none")
    return render_template("status.html", **view, refresh=defaults.PAGE_REFRESH_SECS)


@page.get("/missions/<mission_id>")
def mission_page(mission_id: str):
    """One mission: state, progress, cost, each work item with its task and agent, and the
    mission's log (the page reloads while the mission is live). The full id only: a short id
    would read a whole index per request."""
    if not _signed_in():
        return redirect("/login")
    view = mission_view(town(), mission_id.lower()) if is_uuid(mission_id) else None
    if view is None:
        return _missing(f"mission {shorten(mission_id, 40)}")
    return render_template("mission.html", **view, refresh=defaults.PAGE_REFRESH_SECS)


@page.get("/tasks/<task_id>")
def task_page(task_id: str):
    """One task: its state, agent, attempts, cost and result, and the end of its output (from
    the worker's stream: the page reloads while the task is live)."""
    if not _signed_in():
        return redirect("/login")
    t = town()
    task = t.tasks.find(task_id.lower()) if is_uuid(task_id) else None
    if task is None:
        return _missing(f"task {shorten(task_id, 40)}")
    agent = t.agents.find(task.assigned_to) if task.assigned_to else None
    return render_template(
        "task.html",
        task=task,
        state=rest_state(task.state),
        agent=agent.name if agent else (task.assigned_to or ""),
        mission_id=task.mission_id if is_uuid(task.mission_id) else "",
        output=t.output.tail(task.id, defaults.PAGE_OUTPUT_CHUNKS),
        live=not task.terminal,
        refresh=defaults.PAGE_REFRESH_SECS,
    )


@page.get("/login")
def login_form():
    if _authenticator().mode == "none":
        return redirect("/")
    return render_template("login.html", error=None)


@page.post("/login")
def login():
    key = (request.form.get("key") or "").strip()
    if not key or len(key) > KEY_MAX_CHARS or not _allowed(None, key):
        message = "That key is not valid for this town, or lacks the town.read scope."
        return render_template("login.html", error=message), 401
    resp = redirect("/", code=303)
    resp.set_cookie(
        COOKIE,
        key,
        httponly=True,
        samesite="Strict",
        secure=request.is_secure,
        max_age=defaults.PAGE_COOKIE_MAX_AGE_SECS,
    )
    return resp


@page.post("/logout")
def logout():
    resp = redirect("/login" if _authenticator().mode != "none" else "/", code=303)
    resp.delete_cookie(COOKIE, httponly=True, samesite="Strict", secure=request.is_secure)
    return resp
