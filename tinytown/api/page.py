"""The status pages: server-rendered HTML that reads well on a phone and reloads itself while
something is live (no JavaScript). ``GET /``: agents (live or dead, their task), queue depth,
missions with progress, recent events, failed tasks with their reason, and a chart of the last
hours. ``GET /missions/<id>``: one mission, its work items and their tasks, and its log.
``GET /tasks/<id>``: one task and the end of its output. What each shows is read in
:mod:`tinytown.api.page_views`.

It sits behind the API's auth (scope ``town.read``): an ``Authorization``/``X-API-Key`` header,
or a key entered once on ``/login`` and kept in an ``HttpOnly``, ``SameSite=Lax`` cookie
(``Secure`` under TLS, or when ``[townhall] public_url`` is ``https``); ``POST /logout`` drops
it. The cookie holds the key itself, checked like a header on every request (the verification
cache keeps that cheap), so a key removed from ``tinytown.toml`` stops working at the next
reload. ``Lax``, not ``Strict``: a ping's link opened from a chat or mail site must find the
page, not the log-in form; the cookie opens only these read-only pages (``/v1`` ignores it), and
a POST from another site (logging in as somebody else, logging out) is refused by its
``Origin``. A page asked for without a key leads to ``/login?next=<it>`` and back after.

Every page says what a browser may do with it (:data:`PAGE_HEADERS`): no script, no frame
around it (clickjacking the log-out or log-in form), styles only its own inline ones, forms
posted only back here, no referrer sent with its links, kept in no cache (the back button after
logging out shows nothing). Links and redirects start with ``public_url``'s path, for a proxy
that serves townhall under a prefix (and strips it).
"""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit

from flask import Blueprint, current_app, g, redirect, render_template, request

from tinytown.api.auth import Authenticator, AuthError
from tinytown.api.browsers import same_origin
from tinytown.api.common import town
from tinytown.api.page_views import mission_view, readable, shorten, status_view
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
    "Cache-Control": "no-store",
}
# where a log-in may lead back to: the town's page, a mission's or a task's (full ids)
_NEXT = re.compile(r"/(?:(?:missions|tasks)/[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12})?")


@page.after_request
def _page_headers(resp):
    resp.headers.update(PAGE_HEADERS)
    return resp


def _public_url() -> str | None:
    return town().config.townhall.public_url


def _root() -> str:
    """The path the pages' links and redirects start with: ``public_url``'s ("" without)."""
    return urlsplit(_public_url() or "").path


@page.context_processor
def _links():
    return {"root": _root()}


@page.before_request
def _same_site_posts_only():
    """A form posted from another site (log in with the poster's key, log out) is refused:
    browsers name the page that posts in ``Origin`` (and ``Sec-Fetch-Site``)."""
    if request.method != "POST":
        return None
    origin, site = request.headers.get("Origin"), request.headers.get("Sec-Fetch-Site")
    public = urlsplit(_public_url() or "")
    ours = origin is None or same_origin(origin, request.host)
    if origin is not None and public.netloc:
        ours = ours or same_origin(origin, public.netloc)
    if ours and site in (None, "same-origin", "none"):
        return None
    return render_template("missing.html", what=None, refused=True), 403


def _secure() -> bool:
    """Whether the cookie may travel over TLS only: this request came over it, or people reach
    townhall at an https address (TLS ends at a proxy in front)."""
    return request.is_secure or (_public_url() or "").startswith("https://")


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


def _missing(what: str, ref: str):
    """The 404 page; an id that is not a full one is told what the pages take."""
    full = is_uuid(ref)
    shown = ref if full else shorten(ref, 80)  # (shorten would cut a whole id to 8 digits)
    return render_template("missing.html", what=what, ref=shown, full=full), 404


def _to_login():
    """To the log-in form, which leads back here after."""
    back = request.path if _NEXT.fullmatch(request.path) else "/"
    return redirect(f"{_root()}/login" + (f"?next={quote(back)}" if back != "/" else ""))


@page.get("/")
def status():
    if not _signed_in():
        return _to_login()
    view = status_view(town(), auth=_authenticator().mode != "none")
    return render_template("status.html", **view, refresh=defaults.PAGE_REFRESH_SECS)


@page.get("/missions/<mission_id>")
def mission_page(mission_id: str):
    """One mission: state, progress, cost, each work item with its task and agent, and the
    mission's log (the page reloads while the mission is live). The full id only: a short id
    would read a whole index per request."""
    if not _signed_in():
        return _to_login()
    view = mission_view(town(), mission_id.lower()) if is_uuid(mission_id) else None
    if view is None:
        return _missing("mission", mission_id)
    return render_template("mission.html", **view, refresh=defaults.PAGE_REFRESH_SECS)


@page.get("/tasks/<task_id>")
def task_page(task_id: str):
    """One task: its state, agent, attempts, cost and result, and the end of its output (from
    the worker's stream: the page reloads while the task is live)."""
    if not _signed_in():
        return _to_login()
    t = town()
    task = t.tasks.find(task_id.lower()) if is_uuid(task_id) else None
    if task is None:
        return _missing("task", task_id)
    agent = t.agents.find(task.assigned_to) if task.assigned_to else None
    return render_template(
        "task.html",
        task=task,
        state=rest_state(task.state),
        agent=agent.name if agent else (task.assigned_to or ""),
        mission_id=task.mission_id if is_uuid(task.mission_id) else "",
        description=readable(task.description)[:500],
        result=readable(task.result)[-2000:],
        output=readable(t.output.tail(task.id, defaults.PAGE_OUTPUT_CHUNKS)),
        live=not task.terminal,
        refresh=defaults.PAGE_REFRESH_SECS,
    )


def _next(value: str | None) -> str:
    """Where a log-in leads: ``value`` if it is one of the pages, else the town's page."""
    return value if value and _NEXT.fullmatch(value) else "/"


@page.get("/login")
def login_form():
    back = _next(request.args.get("next"))
    if _authenticator().mode == "none":
        return redirect(f"{_root()}{back}")
    return render_template("login.html", error=None, next=back)


@page.post("/login")
def login():
    key = (request.form.get("key") or "").strip()
    back = _next(request.form.get("next"))
    if not key or len(key) > KEY_MAX_CHARS or not _allowed(None, key):
        message = "That key is not valid for this town, or lacks the town.read scope."
        return render_template("login.html", error=message, next=back), 401
    resp = redirect(f"{_root()}{back}", code=303)
    resp.set_cookie(
        COOKIE,
        key,
        httponly=True,
        samesite="Lax",
        secure=_secure(),
        max_age=defaults.PAGE_COOKIE_MAX_AGE_SECS,
        path=_root() or "/",
    )
    return resp


@page.post("/logout")
def logout():
    after = "/login" if _authenticator().mode != "none" else "/"
    resp = redirect(f"{_root()}{after}", code=303)
    resp.delete_cookie(COOKIE, httponly=True, samesite="Lax", secure=_secure(), path=_root() or "/")
    resp.headers["Clear-Site-Data"] = '"cache"'
    return resp
