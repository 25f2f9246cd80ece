"""The status pages: server-rendered HTML that reads well on a phone and reloads itself while
something is live (no JavaScript). ``GET /``: agents (live or dead, their task), queue depth,
missions with progress, recent events, failed tasks with their reason, and a chart of the last
hours. ``GET /missions/<id>``: one mission, its work items and their tasks, and its log.
``GET /tasks/<id>``: one task and the end of its output. What each shows is read in
:mod:`tinytown.api.page_views`.

It sits behind the API's auth (scope ``town.read``): an ``Authorization``/``X-API-Key`` header,
or a key (or OIDC token) entered once on ``/login``, which opens a page session
(:mod:`tinytown.store.page_sessions`) whose random id goes in an ``HttpOnly``, ``SameSite=Lax``
cookie (``Secure`` under TLS, or when ``[townhall] public_url`` is ``https``). The cookie never
holds the key: a copied cookie opens only these read-only pages (``/v1`` ignores it), ends at
``POST /logout`` (the session is deleted, not only the cookie) and with ``tt auth
end-sessions``, and a session is bound to the key it was made with, so removing or replacing
that key in ``tinytown.toml`` ends it at the next reload (an OIDC session ends with its token).
``Lax``, not ``Strict``: a ping's link opened from a chat or mail site must find the page, not
the log-in form; a POST from another site (logging in as somebody else, logging out) is refused
by its ``Origin``. A page asked for without a key leads to ``/login?next=<it>`` and back after.
The cookie of earlier versions, which held the key itself, is deleted wherever it is seen.

Every page says what a browser may do with it (:data:`PAGE_HEADERS`): no script, no frame
around it (clickjacking the log-out or log-in form), styles only its own inline ones, forms
posted only back here, no referrer sent with its links, kept in no cache (the back button after
logging out shows nothing). Links and redirects start with ``public_url``'s path, for a proxy
that serves townhall under a prefix (and strips it).
"""

from __future__ import annotations

import re
import time
from urllib.parse import quote, urlsplit

from flask import Blueprint, current_app, g, redirect, render_template, request

from tinytown.api.auth import Authenticator, AuthError, Principal
from tinytown.api.browsers import same_origin
from tinytown.api.common import town
from tinytown.api.page_views import mission_view, readable, shorten, status_view
from tinytown.core import defaults
from tinytown.core.records import is_uuid
from tinytown.core.states import rest_state

page = Blueprint("page", __name__, template_folder="templates")
COOKIE = "tinytown_session"
OLD_COOKIE = "tinytown_key"  # held the key itself (before page sessions): deleted when seen
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
    if OLD_COOKIE in request.cookies:
        _drop_cookie(resp, OLD_COOKIE)
    return resp


def _drop_cookie(resp, name: str) -> None:
    resp.delete_cookie(name, httponly=True, samesite="Lax", secure=_secure(), path=_root() or "/")


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


def _principal(authorization: str | None, key: str | None) -> Principal | None:
    """Whom the credential names, if it is good and has ``town.read``."""
    try:
        principal = _authenticator().authenticate(authorization, key)
    except AuthError as err:
        g.principal = err.principal
        return None
    g.principal = principal
    return principal if principal.allows(SCOPE) else None


def _session_principal() -> Principal | None:
    """Whom the request's page session names, if it is live and what it is bound to holds."""
    sessions, cookie = town().page_sessions, request.cookies.get(COOKIE)
    session = sessions.find(cookie)
    if session is None:
        return None
    principal = _authenticator().resume(session.principal, session.scopes, session.binding)
    g.principal = principal
    if principal is None or not principal.allows(SCOPE):
        sessions.end(cookie)  # ended for good: its key (or scope) coming back does not revive it
        return None
    return principal


def _signed_in() -> bool:
    """The request's key (a header, else the page session) is good and has ``town.read``."""
    header, key = request.headers.get("Authorization"), request.headers.get("X-API-Key")
    if header or key or _authenticator().mode == "none":
        return _principal(header, key) is not None
    return _session_principal() is not None


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
    if _authenticator().mode == "none":  # nothing to log in to
        return redirect(f"{_root()}{back}", code=303)
    principal = _principal(None, key) if key and len(key) <= KEY_MAX_CHARS else None
    binding = _authenticator().session_binding(principal) if principal else None
    ttl = defaults.PAGE_SESSION_MAX_AGE_SECS
    if principal is not None and principal.expires_at is not None:  # an OIDC token's end
        ttl = min(ttl, int(principal.expires_at - time.time()))
    if binding is None or ttl < 1:
        message = "That key is not valid for this town, or lacks the town.read scope."
        return render_template("login.html", error=message, next=back), 401
    town().page_sessions.end(request.cookies.get(COOKIE))  # (the browser's previous one)
    session_id = town().page_sessions.open(principal.id, principal.scopes, binding, ttl)
    resp = redirect(f"{_root()}{back}", code=303)
    resp.set_cookie(
        COOKIE,
        session_id,
        httponly=True,
        samesite="Lax",
        secure=_secure(),
        max_age=ttl,
        path=_root() or "/",
    )
    return resp


@page.post("/logout")
def logout():
    """End the page session (in Redis: a copy of the cookie stops working too) and drop it."""
    town().page_sessions.end(request.cookies.get(COOKIE))
    after = "/login" if _authenticator().mode != "none" else "/"
    resp = redirect(f"{_root()}{after}", code=303)
    _drop_cookie(resp, COOKIE)
    resp.headers["Clear-Site-Data"] = '"cache"'
    return resp
