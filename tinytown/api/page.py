"""The status page: ``GET /``, server-rendered HTML that reads well on a phone and reloads
itself (no JavaScript): agents (live or dead, their task), queue depth, missions with progress,
recent events, failed tasks with their reason, and a chart of the last hours.

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

import re

from flask import Blueprint, current_app, g, redirect, render_template, request
from markupsafe import Markup

from tinytown.api.auth import Authenticator, AuthError
from tinytown.api.common import town
from tinytown.core import defaults
from tinytown.core.chart import chart_svg
from tinytown.core.clock import parse_rfc3339
from tinytown.core.records import is_uuid
from tinytown.core.states import (
    AGENT_STOP_STATES,
    LIVE_MISSION_STATES,
    TASK,
    rest_state,
)

page = Blueprint("page", __name__, template_folder="templates")
COOKIE = "tinytown_key"
SCOPE = "town.read"
KEY_MAX_CHARS = 4096
EVENTS_SHOWN, FAILURES_SHOWN, MISSIONS_SHOWN = 20, 10, 10
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


@page.get("/")
def status():
    header, key = request.headers.get("Authorization"), request.headers.get("X-API-Key")
    if not (header or key):
        key = request.cookies.get(COOKIE)
    if not _allowed(header, key):
        return redirect("/login")
    return render_template("status.html", **status_view(), refresh=defaults.PAGE_REFRESH_SECS)


@page.get("/tasks/<task_id>")
def task_page(task_id: str):
    """One task: its state, agent, attempts, cost and result, and the end of its output (from
    the worker's stream: the page reloads while the task is live)."""
    header, key = request.headers.get("Authorization"), request.headers.get("X-API-Key")
    if not (header or key):
        key = request.cookies.get(COOKIE)
    if not _allowed(header, key):
        return redirect("/login")
    t = town()
    task = t.tasks.find(task_id) if is_uuid(task_id) else None
    if task is None:
        return render_template("missing.html", what=f"task {_short(task_id, 40)}"), 404
    agent = t.agents.find(task.assigned_to) if task.assigned_to else None
    return render_template(
        "task.html",
        task=task,
        state=rest_state(task.state),
        agent=agent.name if agent else (task.assigned_to or ""),
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


# -- what the page shows ----------------------------------------------------------------------


_UUID = re.compile(r"\b([0-9a-f]{8})-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")


def _short(text: str | None, width: int = 80) -> str:
    """One line of at most ``width`` characters, ids shortened to their first 8 (as tt shows)."""
    text = _UUID.sub(r"\1", " ".join((text or "").split()))
    return text if len(text) <= width else text[: width - 1] + "…"


def _first_line(text: str | None) -> str:
    for line in (text or "").splitlines():
        if line.strip():
            return _short(line.strip(), 120)
    return ""


def status_view() -> dict:
    """Everything the page shows, read in a few round trips."""
    t = town()
    now_ms = t.agents.now_ms()
    counts = t.counts()
    agents = sorted(t.agents.all(), key=lambda a: (not a.alive(now_ms), a.name))
    shown_agents = [a for a in agents if a.alive(now_ms) or a.state not in AGENT_STOP_STATES]
    descriptions = t.tasks.descriptions([a.current_task for a in shown_agents if a.current_task])
    missions, _ = t.missions.list(limit=MISSIONS_SHOWN)
    summaries = t.missions.summaries([m.id for m in missions])
    start_ms = now_ms - defaults.PAGE_CHART_HOURS * 3600 * 1000
    return {
        "town": t.config.name,
        "queued": counts.pending_tasks,
        "in_flight": counts.in_flight_tasks,
        "live_agents": counts.agents.live_active,
        "dead_agents": counts.agents.dead_total,
        "agents": [
            {
                "name": a.name,
                "id": a.short_id(),
                "state": rest_state(a.state),
                "alive": a.alive(now_ms),
                "task": _short(descriptions.get(a.current_task or ""), 60),
                "task_id": a.current_task or "",
            }
            for a in shown_agents
        ],
        "hidden_agents": len(agents) - len(shown_agents),
        "missions": [
            {
                "id": m.id[:8],
                "title": _short(m.data.get("title") or "", 60),
                "state": m.state,
                "live": m.state in LIVE_MISSION_STATES,
                "done": summaries[m.id]["done"],
                "total": summaries[m.id]["total_work_items"],
                "percent": round(100 * summaries[m.id]["progress"]),
                "cost": f"{summaries[m.id]['cost']:.4f}",
                "worker_secs": round(summaries[m.id]["worker_secs"]),
                "reason": _first_line(m.data.get("blocked_reason")),
            }
            for m in missions
        ],
        "events": [
            {
                "time": _clock(e.get("timestamp")),
                "type": e.get("event_type", ""),
                "message": _short(e.get("message"), 120),
                "task_id": e["task_id"] if is_uuid(e.get("task_id")) else "",  # (linked)
            }
            for e in reversed(t.events.latest(EVENTS_SHOWN))
        ],
        "failures": [
            {
                "id": f.id[:8],
                "task_id": f.id,
                "what": _short(f.description, 60),
                "why": _first_line(f.result),
            }
            for f in t.tasks.newest(TASK["fail"].target, FAILURES_SHOWN)
        ],
        # chart_svg writes numbers and its own fixed labels only: nothing from outside to escape
        "chart": Markup(  # nosec B704
            chart_svg(t.samples.since(start_ms), now_ms=now_ms, hours=defaults.PAGE_CHART_HOURS)
        ),
        "chart_hours": defaults.PAGE_CHART_HOURS,
        "auth": _authenticator().mode != "none",
    }


def _clock(timestamp: str | None) -> str:
    parsed = parse_rfc3339(timestamp or "")
    return parsed.strftime("%H:%M:%S") if parsed else ""
