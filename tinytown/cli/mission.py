"""``tt mission start|status|list|stop|resume|note|dispatch``: run a goal as work items with
dependencies, watch its progress, and steer it."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
import tomllib
from pathlib import Path

from tinytown.cli.common import (
    TEXT,
    BadInput,
    add_json_flag,
    add_page_flags,
    guard_redis,
    open_town,
    print_json,
    short,
    whole_number,
)
from tinytown.core.errors import ExitStatus, NotFound
from tinytown.core.inputs import InputError
from tinytown.core.missions import Mission
from tinytown.core.states import LIVE_MISSION_STATES, MISSION, WORK_IN_FLIGHT_STATUSES
from tinytown.core.work_items import POLICY_DEFAULTS
from tinytown.missions.dispatcher import Dispatcher
from tinytown.missions.notes import resume
from tinytown.missions.start import start_mission
from tinytown.ops.refs import cli_rule
from tinytown.store import Town

ITEMS_FILE_HELP = """\
a work-items file: TOML ([[items]] tables, optional title and [policy]) or JSON (a list of
items, or an object with "items", "title", "policy"). An item: key, title, and optionally
description, kind (design implement test review mergegate followup), depends_on (keys), repo,
base_branch, push, cli, owner_role, tags"""
BAR_WIDTH = 24
MISSION_ID_HELP = (
    "mission id, or its first 8 or more hex digits "
    "(as printed by `tt mission start` or `tt mission list`)"
)


NO_LIVE_WORKER = (
    "no live worker to take its tasks: start one in the town's directory "
    "(python -m agent_worker), or a scaler"
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mission",
        help="start, watch and steer missions (work items with dependencies)",
        description="A mission is a goal as work items with dependencies. Each item becomes a "
        "task for any worker as soon as the items it depends on are done; townhall's dispatcher "
        "(or `tt mission dispatch`) does that, so you can close the laptop.",
    )
    msub = p.add_subparsers(dest="mission_command", metavar="ACTION", required=True)

    s = msub.add_parser(
        "start",
        help="start a mission from a work-items file and/or GitHub issues",
        description="Start a mission. Items come from --file, issues from --issue (compiled "
        "through `gh` when it is installed: dependencies from 'depends on #N' phrases), "
        "documents from --doc (a design item each).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("-f", "--file", type=Path, help=ITEMS_FILE_HELP)
    s.add_argument(
        "-i", "--issue", action="append", default=[], help="an issue: N, owner/repo#N or its URL"
    )
    s.add_argument(
        "-d", "--doc", action="append", default=[], type=_doc, help="a document (an existing file)"
    )
    s.add_argument("--title", type=TEXT, help="a title for the mission")
    s.add_argument(
        "--max-parallel",
        type=whole_number(1, 100),
        metavar="N",
        help=f"items in flight at once (default {POLICY_DEFAULTS['max_parallel_items']})",
    )
    s.add_argument(
        "--max-attempts",
        type=whole_number(1, 20),
        metavar="N",
        help=f"runs of an item's task, and review rounds (default "
        f"{POLICY_DEFAULTS['max_attempts']})",
    )
    s.add_argument(
        "--reviewer",
        action=argparse.BooleanOptionalAction,
        help="a review task follows each implement and test item (default: no)",
    )
    s.add_argument(
        "--help-after",
        type=whole_number(10, 604800),
        metavar="SECS",
        help=f"ask for help after this long without progress (default "
        f"{POLICY_DEFAULTS['help_after_secs']})",
    )
    add_json_flag(s)
    s.set_defaults(func=cmd_start)

    st = msub.add_parser(
        "status",
        help="a mission's progress and items",
        description="Progress, items and recent events of a mission (default: the newest).",
    )
    st.add_argument(
        "mission_id", nargs="?", help="mission id or short id (default: the newest mission)"
    )
    st.add_argument(
        "--watch",
        action="store_true",
        help="redraw every second until the mission ends (exit 1 if it failed)",
    )
    add_json_flag(st)
    st.set_defaults(func=cmd_status)

    ls = msub.add_parser("list", help="list missions", description="Missions, newest first.")
    ls.add_argument("--all", action="store_true", help="also missions that ended")
    add_page_flags(ls)
    add_json_flag(ls)
    ls.set_defaults(func=cmd_list)

    stop = msub.add_parser(
        "stop",
        help="stop queuing its work",
        description="Stop a mission: it is blocked and leaves the active set; tasks already "
        "queued run on. `tt mission resume` runs it again.",
    )
    stop.add_argument("mission_id", help=MISSION_ID_HELP)
    stop.add_argument("--force", action="store_true", help="mark it failed instead")
    stop.set_defaults(func=cmd_stop)

    resume = msub.add_parser(
        "resume",
        help="run a stopped or failed mission again",
        description="Run a stopped or failed mission again; its failed items get their "
        "attempts again.",
    )
    resume.add_argument("mission_id", help=MISSION_ID_HELP)
    resume.set_defaults(func=cmd_resume)

    n = msub.add_parser(
        "note",
        help="a note to the dispatcher: resume, retry, pause, redirect … to AGENT",
        description="Send a note to a mission's dispatcher: 'resume' or 'retry' (failed items "
        "get their attempts again), 'pause' or 'hold', 'redirect [ITEM] to AGENT [why]'; "
        "anything else is kept in its log.",
    )
    n.add_argument("mission_id", help=MISSION_ID_HELP)
    n.add_argument("text", type=TEXT, help="the note, e.g. 'pause' or 'redirect build to alice'")
    n.set_defaults(func=cmd_note)

    d = msub.add_parser(
        "dispatch",
        help="run a mission dispatcher here (townhall runs one unless told not to)",
        description="Run the dispatcher in the foreground until Ctrl-C: for towns whose "
        "townhall has [missions] dispatcher = false, or for one mission with --mission.",
    )
    d.add_argument("--mission", dest="only", help="only this mission (its id or short id)")
    d.add_argument("--once", action="store_true", help="one round, then exit")
    d.set_defaults(func=cmd_dispatch)


# -- start ----------------------------------------------------------------------------------------


ITEMS_FORMATS = {".toml": "TOML", ".json": "JSON", "": "JSON"}


def _doc(value: str) -> str:
    if not value.strip() or not Path(value).is_file():
        raise argparse.ArgumentTypeError(f"{value[:200]!r} is not a file")
    return value


def read_items_file(path: Path) -> dict:
    """A work-items file: TOML (``.toml``) or JSON (``.json`` or no suffix, any case)."""
    form = ITEMS_FORMATS.get(path.suffix.lower())
    if form is None:
        raise BadInput(f"{path}: give the work items as .toml or .json, not {path.suffix!r}")
    if not path.is_file():
        raise BadInput(f"cannot read {path}: not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise BadInput(f"cannot read {path}: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise BadInput(f"{path}: not UTF-8 text (byte {err.start})") from None
    try:
        data = tomllib.loads(text) if form == "TOML" else json.loads(text)
    except (tomllib.TOMLDecodeError, ValueError, RecursionError) as err:
        raise BadInput(f"{path}: not valid {form}: {err}") from None
    if isinstance(data, list):
        return {"items": data}
    if not isinstance(data, dict) or not isinstance(data.get("items", []), list):
        raise BadInput(f"{path}: expected a list of items, or an object whose 'items' is one")
    return data


def _policy(args: argparse.Namespace, base: dict | None) -> dict:
    policy = dict(base or {})
    for option, key in (
        ("max_parallel", "max_parallel_items"),
        ("max_attempts", "max_attempts"),
        ("reviewer", "reviewer_required"),
        ("help_after", "help_after_secs"),
    ):
        if getattr(args, option) is not None:
            policy[key] = getattr(args, option)
    return policy


@guard_redis
def cmd_start(args: argparse.Namespace) -> int:
    spec = read_items_file(args.file) if args.file else {}
    if not spec.get("items") and not args.issue and not args.doc:
        raise BadInput("nothing to do: give --file with work items, --issue or --doc")
    town = open_town(args)
    objectives = [{"type": "doc", "path": d} for d in args.doc]
    items = list(spec.get("items") or [])
    warnings: list[str] = []
    if args.issue:  # compiled here, where `gh` and the git clone are
        from tinytown.missions.github import compile_refs

        try:
            compiled, warnings = compile_refs(args.issue, cwd=Path.cwd())
        except ValueError as err:
            raise BadInput(str(err)) from None
        items += compiled
    try:
        mission, more = start_mission(
            town,
            items=items,
            objectives=objectives,
            policy=_policy(args, spec.get("policy")),
            title=args.title or spec.get("title"),
            cli_rule=cli_rule(town),
        )
    except InputError as err:
        raise BadInput(f"{args.file or 'items'}: {err}") from None
    if town.agents.counts().live_active == 0:
        more.append(NO_LIVE_WORKER)
    for warning in warnings + more:
        print(f"warning: {warning}", file=sys.stderr)
    summary = town.missions.summary(mission.id)
    if args.json:
        print_json({"mission_id": mission.id, "state": mission.state, "summary": summary})
        return 0
    print(f"Mission {mission.id} started: {summary['total_work_items']} work item(s)")
    print(f"Follow it: tt mission status {mission.id} --watch")
    return 0


# -- status and list --------------------------------------------------------------------------


def progress_bar(summary: dict) -> str:
    done, total = summary["done"], summary["total_work_items"]
    filled = round(BAR_WIDTH * done / total) if total else 0
    return f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {done}/{total} done"


def _mission(town: Town, mission_id: str | None) -> Mission:
    if mission_id:
        return town.missions.get(town.missions.resolve(mission_id))
    found, _ = town.missions.list(limit=1)
    if not found:
        raise NotFound("no mission yet: start one with `tt mission start`")
    return found[0]


def render_status(town: Town, mission: Mission) -> list[str]:
    items = town.missions.work_items(mission.id)
    summary = town.missions.summary(mission.id)
    title = mission.data.get("title")
    lines = [
        f"Mission {mission.id}" + (f" — {title}" if title else ""),
        f"  state: {mission.state}    {progress_bar(summary)}",
        f"  cost: {summary['cost']:.4f} for {summary['worker_secs']:.1f} s of worker time "
        "(finished tasks, at their outposts' rates)",
    ]
    if mission.data.get("blocked_reason"):
        lines.append(f"  reason: {mission.data['blocked_reason']}")
    if mission.data.get("dispatcher_last_help_request_reason"):
        lines.append(f"  needs help: {mission.data['dispatcher_last_help_request_reason']}")
    if mission.state in LIVE_MISSION_STATES and town.agents.counts().live_active == 0:
        lines.append(f"  {NO_LIVE_WORKER}")
    lines.append("")
    width = max((len(i["key"]) for i in items), default=4)
    for item in items:
        stage = (
            f" ({item['stage']})"
            if item.get("stage") and item["status"] in WORK_IN_FLIGHT_STATUSES
            else ""
        )
        lines.append(
            f"  {item['key']:<{width}}  {item['status'] + stage:<18} {short(item['title'], 50)}"
        )
    events = town.events.latest(5, mission.id)
    if events:
        lines.append("")
        lines += [f"  {e['timestamp'][11:19]}  {short(e['message'], 90)}" for e in events]
    return lines


@guard_redis
def cmd_status(args: argparse.Namespace) -> int:
    town = open_town(args)
    mission = _mission(town, args.mission_id)
    if args.json:
        print_json(
            {
                "mission": mission.data,
                "summary": town.missions.summary(mission.id),
                "work_items": town.missions.work_items(mission.id),
            }
        )
        return 0
    while True:
        lines = render_status(town, mission)
        if args.watch and sys.stdout.isatty():
            print("\x1b[H\x1b[2J", end="")
        print("\n".join(lines), flush=True)
        if not args.watch or mission.state not in LIVE_MISSION_STATES:
            failed = mission.state == MISSION["fail"].target
            return int(ExitStatus.FAILURE) if failed else 0
        time.sleep(1)
        mission = town.missions.get(mission.id)
        if not sys.stdout.isatty():
            print()


@guard_redis
def cmd_list(args: argparse.Namespace) -> int:
    town = open_town(args)
    found, total = town.missions.list(
        active_only=not args.all, offset=args.offset, limit=args.limit
    )
    summaries = town.missions.summaries([m.id for m in found])
    if args.json:
        rows = [{**m.data, "summary": summaries[m.id]} for m in found]
        print_json({"missions": rows, "count": total})
        return 0
    if not found:
        print("No active missions" if not args.all else "No missions")
        return 0
    for m in found:
        title = short(m.data.get("title") or "", 40)
        print(f"{m.id}  {m.state:<10} {progress_bar(summaries[m.id])}  {title}".rstrip())
    if total > len(found):
        print(f"({len(found)} of {total} shown)")
    return 0


# -- steering -----------------------------------------------------------------------------------


@guard_redis
def cmd_stop(args: argparse.Namespace) -> int:
    town = open_town(args)
    mission = town.missions.stop(town.missions.resolve(args.mission_id), force=args.force)
    print(f"Mission {mission.id} stopped ({mission.state})")
    return 0


@guard_redis
def cmd_resume(args: argparse.Namespace) -> int:
    town = open_town(args)
    mission = town.missions.get(town.missions.resolve(args.mission_id))
    if mission.state == MISSION["resume"].target:
        print(f"Mission {mission.id} is already running")
        return 0
    retried = resume(town, mission.id, town.missions.work_items(mission.id))
    print(f"Mission {mission.id} resumed ({retried} failed item(s) get their attempts again)")
    return 0


@guard_redis
def cmd_note(args: argparse.Namespace) -> int:
    town = open_town(args)
    mission_id = town.missions.resolve(args.mission_id)
    note = town.missions.add_note(mission_id, "conductor", args.text)
    print(f"Note {note['id']} sent to mission {mission_id}")
    return 0


@guard_redis
def cmd_dispatch(args: argparse.Namespace) -> int:
    town = open_town(args)
    cfg = town.config.missions
    only = town.missions.resolve(args.only) if args.only is not None else None
    if only is not None:
        town.missions.get(only)  # (NotFound, exit 5: no dispatcher for a mission that is not)
    dispatcher = Dispatcher(town, tick_secs=cfg.tick_secs, lease_secs=cfg.lease_secs, only=only)
    if args.once:
        dispatcher.run_once(wait=False)
        dispatcher.release_all()
        print(f"{dispatcher.steps} mission step(s) written")
        return 0
    print("Dispatching missions (Ctrl-C to stop)", flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # systemd's stop: as Ctrl-C
    try:
        dispatcher.run()
    finally:
        dispatcher.release_all()
    return 0
