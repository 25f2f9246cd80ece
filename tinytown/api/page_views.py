"""What the status pages show, read from the town in a few round trips: the town (``/``) and one
mission (``/missions/<id>``). The routes, auth and headers are in :mod:`tinytown.api.page`.

Every text from outside (task descriptions, titles, reasons, a CLI's output) loses its control
and format characters here (terminal escapes, bidi overrides that would show text reversed), and
a line is cut to its width, ids shortened to their first 8 hex digits as ``tt`` shows them; the
templates escape what is left.
"""

from __future__ import annotations

import re

from markupsafe import Markup

from tinytown.core import defaults
from tinytown.core.chart import chart_svg
from tinytown.core.clock import parse_rfc3339
from tinytown.core.missions import summary
from tinytown.core.records import is_uuid
from tinytown.core.states import AGENT_STOP_STATES, LIVE_MISSION_STATES, TASK, rest_state
from tinytown.store import Town

EVENTS_SHOWN, FAILURES_SHOWN, MISSIONS_SHOWN, AGENTS_SHOWN = 20, 10, 10, 200
MISSION_LOG_SHOWN = 20  # a mission's page shows its newest log lines

_UUID = re.compile(r"\b([0-9a-f]{8})-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
# a terminal's escape sequences: CSI (colours, cursor moves) and OSC (titles, links)
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b.?")


def shorten(text: str | None, width: int = 80) -> str:
    """One line of at most ``width`` printable characters, ids shortened to their first 8 (as
    tt shows them)."""
    text = "".join(c if c.isprintable() else " " for c in _ESCAPES.sub("", text or ""))
    text = _UUID.sub(r"\1", " ".join(text.split()))
    return text if len(text) <= width else text[: width - 1] + "…"


def readable(text: str | None) -> str:
    """A block of text (a description, a result, a CLI's output) as a page shows it: lines and
    tabs kept, terminal escapes and every other control or format character dropped."""
    text = _ESCAPES.sub("", text or "")
    return "".join(c for c in text if c.isprintable() or c in "\n\t")


def _first_line(text: str | None) -> str:
    for line in (text or "").splitlines():
        if line.strip():
            return shorten(line.strip(), 120)
    return ""


def _clock(timestamp: str | None) -> str:
    parsed = parse_rfc3339(timestamp or "")
    return parsed.strftime("%H:%M:%S") if parsed else ""


def _when(timestamp: str | None) -> str:
    parsed = parse_rfc3339(timestamp or "")
    return parsed.strftime("%Y-%m-%d %H:%M:%S %Z").strip() if parsed else ""


def _progress(m, counts: dict) -> dict:
    """A mission's row: what the town's page lists and the mission's page heads with."""
    return {
        "id": m.id,
        "short_id": m.id[:8],
        "title": shorten(m.data.get("title") or "", 60),
        "state": m.state,
        "live": m.state in LIVE_MISSION_STATES,
        "done": counts["done"],
        "total": counts["total_work_items"],
        "percent": round(100 * counts["progress"]),
        "cost": f"{counts['cost']:.4f}",
        "worker_secs": round(counts["worker_secs"]),
        "reason": _first_line(m.data.get("blocked_reason")),
    }


def status_view(t: Town, *, auth: bool) -> dict:
    """Everything the town's page shows."""
    now_ms = t.agents.now_ms()
    counts = t.counts()
    # the agents in an active state (and stopped ones still finishing a task), from the
    # deadlines index: not every record the town ever made (stopped agents are only counted)
    active = [a for a in t.agents.many(t.agents.active_ids()) if a is not None]
    agents = sorted(active, key=lambda a: (not a.alive(now_ms), a.name))
    shown_agents = [a for a in agents if a.alive(now_ms) or a.state not in AGENT_STOP_STATES]
    shown_agents, more = shown_agents[:AGENTS_SHOWN], len(shown_agents) - AGENTS_SHOWN
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
                "id": a.id[:8],
                "state": rest_state(a.state),
                "alive": a.alive(now_ms),
                "task": shorten(descriptions.get(a.current_task or ""), 60),
                "task_id": a.current_task or "",
            }
            for a in shown_agents
        ],
        "hidden_agents": t.agents.total() - len(shown_agents) - max(more, 0),
        "more_agents": max(more, 0),
        "missions": [_progress(m, summaries[m.id]) for m in missions],
        "events": [
            {
                "time": _clock(e.get("timestamp")),
                "type": e.get("event_type", ""),
                "message": shorten(e.get("message"), 120),
                "task_id": e["task_id"] if is_uuid(e.get("task_id")) else "",  # (linked)
            }
            for e in reversed(t.events.latest(EVENTS_SHOWN))
        ],
        "failures": [
            {
                "id": f.id[:8],
                "task_id": f.id,
                "what": shorten(f.description, 60),
                "why": _first_line(f.result),
            }
            for f in t.tasks.newest(TASK["fail"].target, FAILURES_SHOWN)
        ],
        # chart_svg writes numbers and its own fixed labels only: nothing from outside to escape
        "chart": Markup(  # nosec B704
            chart_svg(t.samples.since(start_ms), now_ms=now_ms, hours=defaults.PAGE_CHART_HOURS)
        ),
        "chart_hours": defaults.PAGE_CHART_HOURS,
        "auth": auth,
    }


def mission_view(t: Town, mission_id: str) -> dict | None:
    """One mission's page: its state and progress, each work item with its task (linked), the
    agent on it and why it is blocked or failed, and the mission's newest log lines. None when
    there is no such mission."""
    mission = t.missions.find(mission_id)
    if mission is None:
        return None
    items = sorted(t.missions.work_items(mission.id), key=lambda i: i.get("order") or 0)
    agent_ids = sorted({i["assigned_to"] for i in items if i.get("assigned_to")})
    names = {agent.id: agent.name for agent in t.agents.many(agent_ids) if agent is not None}
    return {
        "mission": _progress(mission, summary(items)),
        "created": _when(mission.data.get("created_at")),
        "items": [
            {
                "key": shorten(i.get("key"), 40),
                "title": shorten(i.get("title") or i.get("description"), 80),
                "status": i.get("status") or "",
                "stage": shorten(i.get("stage"), 20),
                "task_id": i["task_id"] if is_uuid(i.get("task_id")) else "",
                "agent": shorten(names.get(i.get("assigned_to"), i.get("assigned_to")), 40),
                "reason": _first_line(i.get("reason")),
                "dispatches": i.get("dispatches") or 0,
            }
            for i in items
        ],
        "log": [shorten(line, 200) for line in t.missions.log_lines(mission.id, MISSION_LOG_SHOWN)],
    }
