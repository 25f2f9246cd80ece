"""Missions: reading them (``town.read``), starting one and editing its records
(``town.write``), and its lifecycle (``agent.manage``)."""

from __future__ import annotations

from tinytown.core import defaults, inputs
from tinytown.core import events as ev
from tinytown.core.errors import Problem
from tinytown.core.issues import parse_issue_ref
from tinytown.core.states import MISSION, WORK_STATUSES
from tinytown.missions.start import start_mission as start
from tinytown.ops.args import field, line, paging, required_text
from tinytown.ops.refs import as_is, cli_rule, mission_id
from tinytown.ops.table import (
    MANAGE,
    MISSION_ID,
    PAGE,
    READ,
    WRITE,
    boolean,
    document,
    integer,
    objects,
    operation,
    string,
    strings,
)
from tinytown.store import Town

WORK_ITEM_ID = string("the work item's id (or its key)")

# -- reading --------------------------------------------------------------------------------------


@operation(
    "mission.list",
    READ,
    "Missions, newest first, each with its progress summary.",
    params={"active_only": boolean("only missions still running or paused"), **PAGE},
    rest="GET /v1/missions",
)
def list_missions(t: Town, args: dict) -> dict:
    offset, limit = paging(args)
    active_only = field(args, "active_only", bool, default=False)
    found, total = t.missions.list(active_only=active_only, offset=offset, limit=limit)
    summaries = t.missions.summaries([m.id for m in found])
    return {
        "missions": [{**m.data, "summary": summaries[m.id]} for m in found],
        "count": len(found),
        "total": total,
    }


@operation(
    "mission.get_status",
    READ,
    "One mission: its record, work items, watches, latest events and summary.",
    params={
        "mission_id": MISSION_ID,
        "include_work": boolean("include the work items", True),
        "include_watches": boolean("include the watches", True),
        "include_events": boolean("include the latest events"),
    },
    required=("mission_id",),
    rest="GET /v1/missions/{mission_id}",
    aliases=("mission.status",),
)
def show_mission(t: Town, args: dict) -> dict:
    mid = mission_id(args)
    store = t.missions
    mission = store.get(mid)
    work = field(args, "include_work", bool, default=True)
    watches = field(args, "include_watches", bool, default=True)
    events = field(args, "include_events", bool, default=False)
    return {
        "mission": mission.data,
        "work_items": store.work_items(mid) if work else [],
        "watches": store.watches(mid) if watches else [],
        "events": t.events.latest(defaults.MISSION_EVENTS_SHOWN, mid) if events else [],
        "summary": store.summary(mid),
    }


@operation(
    "mission.list_work",
    READ,
    "A mission's work items, optionally in one status.",
    params={
        "mission_id": MISSION_ID,
        "status": string("only items in this status", enum=list(WORK_STATUSES)),
    },
    required=("mission_id",),
    rest="GET /v1/missions/{mission_id}/work",
    aliases=("mission.work_items",),
)
def mission_work(t: Town, args: dict) -> dict:
    mid = mission_id(args)
    status = field(args, "status", str, rule=line)
    if status is not None:
        if status.lower() not in WORK_STATUSES:
            raise Problem(
                422,
                f"field 'status' must be one of {', '.join(WORK_STATUSES)} (any case), "
                f"got {inputs.printable(status)!r}",
                field="status",
            )
        status = status.lower()
    t.missions.get(mid)
    items = t.missions.work_items(mid, status)
    return {"work_items": items, "count": len(items)}


@operation(
    "mission.get_work_item",
    READ,
    "One work item of a mission.",
    params={"mission_id": MISSION_ID, "work_item_id": WORK_ITEM_ID},
    required=("mission_id", "work_item_id"),
    rest="GET /v1/missions/{mission_id}/work/{work_item_id}",
)
def mission_work_item(t: Town, args: dict) -> dict:
    mid = mission_id(args)
    t.missions.get(mid)
    return t.missions.work_item(mid, field(args, "work_item_id", str, required=True, rule=as_is))


@operation(
    "mission.list_watches",
    READ,
    "A mission's watches.",
    params={"mission_id": MISSION_ID},
    required=("mission_id",),
    rest="GET /v1/missions/{mission_id}/watches",
    aliases=("mission.watches",),
)
def mission_watches(t: Town, args: dict) -> dict:
    mid = mission_id(args)
    t.missions.get(mid)
    watches = t.missions.watches(mid)
    return {"watches": watches, "count": len(watches)}


@operation(
    "mission.get_events",
    READ,
    "A mission's own events, oldest first after a cursor, and its log lines.",
    params={
        "mission_id": MISSION_ID,
        "after": string(f"a cursor: {ev.CURSOR_RULE} (default 0-0, the oldest)"),
        "limit": integer("how many events", 1, defaults.EVENTS_PAGE_MAX),
    },
    required=("mission_id",),
    rest="GET /v1/missions/{mission_id}/events",
    aliases=("mission.events",),
)
def mission_events(t: Town, args: dict) -> dict:
    mid = mission_id(args)
    raw = field(args, "after", str, default=ev.OLDEST, rule=as_is) or ev.OLDEST
    try:
        after = ev.cursor(raw)
    except ValueError:
        raise Problem(
            400, f"field 'after' must be {ev.CURSOR_RULE}, got {raw[:40]!r}", field="after"
        ) from None
    limit = field(args, "limit", int, default=50, low=1, high=defaults.EVENTS_PAGE_MAX)
    t.missions.get(mid)
    if after == ev.NEWEST:
        after = t.events.last_id(mid)
    events = t.events.read(after, limit, mission_id=mid)
    return {
        "events": events,
        "count": len(events),
        "next_after": events[-1]["id"] if events else after,
        "log": t.missions.log_lines(mid, 50),
    }


# -- starting and editing -------------------------------------------------------------------------


def _objective(i: int, value) -> dict:
    name = f"objectives[{i}]"
    if not isinstance(value, dict) or value.get("type") not in ("issue", "doc"):
        raise Problem(
            422, f'field {name!r} must be an object with type "issue" or "doc"', field=name
        )
    if value["type"] == "doc":
        return _doc(field(value, "path", str, required=True, rule=line), f"{name}.path")
    for key, kind in (("owner", str), ("repo", str), ("number", int)):
        if not isinstance(value.get(key), kind) or isinstance(value.get(key), bool):
            raise Problem(
                422,
                f"field '{name}.{key}' is required for an issue objective",
                field=f"{name}.{key}",
            )
    return {
        "type": "issue",
        "owner": inputs.name(value["owner"], f"{name}.owner"),
        "repo": inputs.name(value["repo"], f"{name}.repo"),
        "number": inputs.integer(value["number"], f"{name}.number", 1, 2**31 - 1),
    }


def _doc(path: str, name: str) -> dict:
    if not path.strip():
        raise Problem(422, f"field {name!r} must not be empty", field=name)
    return {"type": "doc", "path": path}


def _issue(i: int, text: str) -> dict:
    """Upstream's ``issues`` argument: ``owner/repo#N`` or an issue URL."""
    try:
        ref = parse_issue_ref(text, None)
    except ValueError as err:
        raise Problem(422, f"field 'issues[{i}]': {err}", field=f"issues[{i}]") from None
    return {"type": "issue", "owner": ref.owner, "repo": ref.repo, "number": ref.number}


def _objectives(args: dict) -> list[dict]:
    """``objectives`` (REST), and upstream MCP's ``issues`` and ``docs``, as one list."""
    raw = args.get("objectives")
    if raw is not None and (
        not isinstance(raw, list) or len(raw) > defaults.MISSION_MAX_OBJECTIVES
    ):
        raise Problem(
            422,
            "field 'objectives' must be an array of at most "
            f"{defaults.MISSION_MAX_OBJECTIVES} issue or doc references",
            field="objectives",
        )
    found = [_objective(i, v) for i, v in enumerate(raw or [])]
    found += [_issue(i, v) for i, v in enumerate(field(args, "issues", list, default=[]))]
    found += [_doc(v, f"docs[{i}]") for i, v in enumerate(field(args, "docs", list, default=[]))]
    if len(found) > defaults.MISSION_MAX_OBJECTIVES:
        raise Problem(
            422,
            f"a mission takes at most {defaults.MISSION_MAX_OBJECTIVES} issue or doc references",
            field="objectives",
        )
    return found


def _policy(args: dict) -> dict | None:
    """``policy`` (REST), with upstream MCP's ``max_parallel`` and ``no_reviewer`` folded in."""
    policy = args.get("policy")
    shortcuts = {
        "max_parallel_items": field(args, "max_parallel", int, low=1, high=100),
        "reviewer_required": None
        if args.get("no_reviewer") is None
        else not field(args, "no_reviewer", bool),
    }
    shortcuts = {k: v for k, v in shortcuts.items() if v is not None}
    if not shortcuts:
        return policy
    if policy is not None and not isinstance(policy, dict):
        return policy  # the planner names the wrong type
    return {**(policy or {}), **shortcuts}


@operation(
    "mission.start",
    WRITE,
    "Start a mission: work items with dependencies, and/or GitHub issues and design documents "
    "compiled into items. The town works through it and pings you when done or stuck.",
    params={
        "items": objects(
            "work items: {key, title, description, depends_on?: [keys], kind?, cli?, tags?, "
            "repo?, base_branch?} (docs/missions.md)"
        ),
        "issues": strings("GitHub issues: owner/repo#N or an issue URL"),
        "docs": strings("design documents (paths on townhall's machine)"),
        "objectives": objects('REST form of issues and docs: {type: "issue"|"doc", ...}'),
        "title": string("a title for the mission"),
        "policy": document("max_parallel_items, max_attempts, reviewer_required, help_after_secs"),
        "max_parallel": integer("shortcut for policy.max_parallel_items", 1, 100),
        "no_reviewer": boolean("shortcut for policy.reviewer_required = false"),
    },
    rest="POST /v1/missions",
    status=201,
)
def start_mission(t: Town, args: dict) -> dict:
    title = field(args, "title", str, rule=line)
    objectives = _objectives(args)
    if not objectives and not args.get("items"):
        raise Problem(
            422,
            "a mission needs 'items' (work items) or 'objectives' (issue and doc references)",
            field="items",
        )
    mission, warnings = start(
        t,
        items=args.get("items"),
        objectives=objectives,
        policy=_policy(args),
        title=title,
        cli_rule=cli_rule(t),
        cwd=t.config.root,
        budget_secs=defaults.MISSION_GH_BUDGET_SECS,
    )
    out = {
        "mission_id": mission.id,
        "state": mission.state,
        "objective_count": len(objectives),
        "work_items": t.missions.summary(mission.id)["total_work_items"],
    }
    if warnings:
        out["warnings"] = warnings
    return out


def _artifacts(values: list[str], name: str) -> list[str]:
    if len(values) > defaults.INPUT_MAX_TAGS:
        raise Problem(
            422,
            f"field {name!r} has {len(values)} entries; at most {defaults.INPUT_MAX_TAGS}",
            field=name,
        )
    return [line(v, f"{name}[{i}]") for i, v in enumerate(values)]


@operation(
    "mission.update_work_item",
    WRITE,
    "Set a work item's status or artifacts by hand.",
    params={
        "mission_id": MISSION_ID,
        "work_item_id": WORK_ITEM_ID,
        "status": string("the new status", enum=list(WORK_STATUSES)),
        "artifacts": strings("links or paths the item produced"),
    },
    required=("mission_id", "work_item_id"),
    rest="PATCH /v1/missions/{mission_id}/work/{work_item_id}",
)
def update_work_item(t: Town, args: dict) -> dict:
    mid = mission_id(args)
    item = field(args, "work_item_id", str, required=True, rule=as_is)
    status = field(args, "status", str, rule=line)
    if status is not None and status not in WORK_STATUSES:
        raise Problem(
            422, f"field 'status' must be one of {', '.join(WORK_STATUSES)}", field="status"
        )
    artifacts = field(args, "artifacts", list, rule=_artifacts)
    return t.missions.update_work_item(mid, item, status=status, artifacts=artifacts)


@operation(
    "mission.snooze_watch",
    WRITE,
    "Snooze one of a mission's watches.",
    params={
        "mission_id": MISSION_ID,
        "watch_id": string("the watch's id"),
        "duration_secs": integer("for how long", 60, 30 * 86400),
    },
    required=("mission_id", "watch_id", "duration_secs"),
    rest="POST /v1/missions/{mission_id}/watches/{watch_id}/snooze",
)
def snooze_watch(t: Town, args: dict) -> dict:
    mid = mission_id(args)
    watch = field(args, "watch_id", str, required=True, rule=as_is)
    duration = field(args, "duration_secs", int, required=True, low=60, high=30 * 86400)
    return t.missions.snooze_watch(mid, watch, duration)


# -- lifecycle --------------------------------------------------------------------------------


@operation(
    "mission.stop",
    MANAGE,
    "Stop a mission (force: also cancel its running tasks).",
    params={"mission_id": MISSION_ID, "force": boolean("cancel its running tasks too")},
    required=("mission_id",),
    rest="POST /v1/missions/{mission_id}/stop",
    destructive=True,
)
def stop_mission(t: Town, args: dict) -> dict:
    mid = mission_id(args)
    mission = t.missions.stop(mid, force=field(args, "force", bool, default=False))
    return {"id": mid, "state": mission.state}


@operation(
    "mission.resume",
    MANAGE,
    "Resume a stopped or paused mission.",
    params={"mission_id": MISSION_ID},
    required=("mission_id",),
    rest="POST /v1/missions/{mission_id}/resume",
)
def resume_mission(t: Town, args: dict) -> dict:
    mid = mission_id(args)
    mission, old = t.missions.resume(mid)
    out = {"id": mid, "state": mission.state}
    if old == MISSION["resume"].target:
        out["note"] = "already running"
    return out


@operation(
    "mission.complete",
    MANAGE,
    "Mark a mission completed by hand.",
    params={"mission_id": MISSION_ID},
    required=("mission_id",),
    rest="POST /v1/missions/{mission_id}/complete",
)
def complete_mission(t: Town, args: dict) -> dict:
    mid = mission_id(args)
    mission, old = t.missions.complete(mid)
    out = {"id": mid, "state": mission.state}
    if old == MISSION["complete"].target:
        out["note"] = "already completed"
    return out


@operation(
    "mission.fail",
    MANAGE,
    "Mark a mission failed by hand, with the reason.",
    params={"mission_id": MISSION_ID, "reason": string("why")},
    required=("mission_id",),
    rest="POST /v1/missions/{mission_id}/fail",
    destructive=True,
)
def fail_mission(t: Town, args: dict) -> dict:
    mid = mission_id(args)
    reason = field(args, "reason", str) or "Marked failed via API"
    mission = t.missions.fail(mid, reason)
    return {"id": mid, "state": mission.state, "reason": reason}


@operation(
    "mission.delete",
    MANAGE,
    "Delete a finished mission and its records (force: even an active one).",
    params={"mission_id": MISSION_ID, "force": boolean("delete it even while active")},
    required=("mission_id",),
    rest="DELETE /v1/missions/{mission_id}",
    destructive=True,
)
def delete_mission(t: Town, args: dict) -> dict:
    mid = mission_id(args)
    t.missions.delete(mid, force=field(args, "force", bool, default=False))
    return {"id": mid, "deleted": True}


NOTE_HELP = (
    "resume or retry (unblock), pause or hold, 'redirect [<item key>] to <agent>', "
    "or anything else for the log"
)


@operation(
    "mission.note",
    MANAGE,
    f"A note for the mission's dispatcher: {NOTE_HELP}.",
    params={
        "mission_id": MISSION_ID,
        "message": string("the note (REST calls this field 'body')"),
        "sender": string("who writes it (default: conductor)"),
    },
    required=("mission_id", "message"),
    rest="POST /v1/missions/{mission_id}/notes",
    status=201,
)
def note_mission(t: Town, args: dict) -> dict:
    mid = mission_id(args)
    text = required_text(args, "body" if "body" in args else "message")
    sender = field(args, "sender", str, rule=inputs.name) or "conductor"
    return t.missions.add_note(mid, sender, text)


@operation(
    "mission.pause",
    MANAGE,
    "Pause a mission: its dispatcher starts nothing new until resumed (a 'pause' note).",
    params={"mission_id": MISSION_ID, "sender": string("who asks (default: conductor)")},
    required=("mission_id",),
    rest="POST /v1/missions/{mission_id}/notes",
    status=201,
)
def pause_mission(t: Town, args: dict) -> dict:
    return note_mission(t, {**args, "message": "pause"})
