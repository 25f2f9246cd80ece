"""``tt task show|list|logs|complete|fail|cancel``: one task's record and its output, how a
coding CLI reports back, and cancelling."""

from __future__ import annotations

import argparse
import os
import sys

from tinytown.cli.common import (
    SOME_TEXT,
    TASK_ID_HELP,
    TEXT,
    BadInput,
    add_json_flag,
    add_page_flags,
    guard_redis,
    open_town,
    print_fields,
    print_json,
    print_table,
    short,
)
from tinytown.core import defaults
from tinytown.core.errors import NotFound
from tinytown.core.states import TASK_STATES
from tinytown.store.output import START


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "task",
        help="show, list, follow the output of, complete, fail or cancel tasks",
        description="Tasks in every state: inspect them, follow a running task's output, "
        "report a result from a coding CLI, or cancel one.",
    )
    tsub = p.add_subparsers(dest="task_command", metavar="ACTION", required=True)

    s = tsub.add_parser(
        "show",
        help="print one task's record",
        description="Print every field of one task: state, agent, attempts, result.",
    )
    s.add_argument("task_id", help=TASK_ID_HELP)
    add_json_flag(s)
    s.set_defaults(func=cmd_show)

    ls = tsub.add_parser(
        "list",
        help="list tasks, oldest first",
        description="List tasks in any state (or one state), oldest first.",
    )
    ls.add_argument(
        "--state",
        type=str.lower,
        choices=TASK_STATES,
        metavar="STATE",
        help=f"only tasks in this state, in any case: {', '.join(TASK_STATES)}",
    )
    add_page_flags(ls)
    add_json_flag(ls)
    ls.set_defaults(func=cmd_list)

    help_id = "task id (default: $TINYTOWN_TASK_ID, set for the coding CLI by the worker)"
    c = tsub.add_parser(
        "complete",
        help="mark a task completed (what a coding CLI calls when done)",
        description="Mark a live task completed with a short result; a coding CLI "
        "run by a worker calls this when it is done.",
    )
    c.add_argument("task_id", nargs="?", help=help_id)
    c.add_argument("--result", type=TEXT, default="", help="a short summary of what was done")
    c.set_defaults(func=cmd_complete)

    f = tsub.add_parser(
        "fail",
        help="mark a task failed, with the reason",
        description="Mark a live task failed with the reason, a final state: it is not retried.",
    )
    f.add_argument("task_id", nargs="?", help=help_id)
    f.add_argument("--reason", type=SOME_TEXT, required=True, help="why it failed")
    f.set_defaults(func=cmd_fail)

    x = tsub.add_parser(
        "cancel",
        help="cancel a task; a worker running it stops its CLI at once",
        description="Cancel a live task with a reason. A pending one leaves the "
        "backlog; a worker running it is nudged and stops the coding CLI at once "
        "(at its next heartbeat if it missed the nudge).",
    )
    x.add_argument("task_id", help=TASK_ID_HELP)
    x.add_argument(
        "--reason", type=SOME_TEXT, default="Cancelled via tt", help="why (default: %(default)s)"
    )
    x.set_defaults(func=cmd_cancel)

    lg = tsub.add_parser(
        "logs",
        help="print a task's output; --follow keeps printing it until the task ends",
        description="Print what a task's coding CLI wrote, from anywhere: its worker streams it "
        "to Redis as it runs (the newest 1 MiB is kept; the worker's .tt/logs/tasks/ID.log has "
        "all of it). --follow prints more as it comes and exits 0 once the task is in a final "
        "state.",
    )
    lg.add_argument("task_id", help=TASK_ID_HELP)
    lg.add_argument(
        "-f", "--follow", action="store_true", help="wait for more output until the task ends"
    )
    lg.set_defaults(func=cmd_logs)


@guard_redis
def cmd_logs(args: argparse.Namespace) -> int:
    """Print the task's output (``tinytown.store.output``); with --follow, until it is finished
    (blocking reads, not polling)."""
    town = open_town(args)
    task_id = town.tasks.resolve(args.task_id)
    after, warned = START, False
    while True:
        page = town.output.page(task_id, after, defaults.TASK_OUTPUT_PAGE_MAX)
        if page is None:
            raise NotFound(f"task {task_id} not found")
        if page.truncated and not warned:
            warned = True
            print("tt: some of the task's output was trimmed or lost", file=sys.stderr)
        sys.stdout.write("".join(text for _, text in page.chunks))
        sys.stdout.flush()  # a follower's reader sees the output as it comes
        after = page.next_after
        if page.finished or (page.complete and not args.follow):
            return 0
        if page.complete:
            town.output.wait(task_id, after, defaults.EVENTS_BLOCK_SLICE_MS)


def _task_id(args: argparse.Namespace) -> str:
    task_id = args.task_id or os.environ.get("TINYTOWN_TASK_ID")
    if not task_id:
        raise BadInput("no task id given and TINYTOWN_TASK_ID is not set")
    return task_id


@guard_redis
def cmd_show(args: argparse.Namespace) -> int:
    town = open_town(args)
    task = town.tasks.get(town.tasks.resolve(args.task_id))
    if args.json:
        print_json(task.to_json())
        return 0
    record = {**task.to_json(), "state": task.state}  # tt's text spells states as filters do
    if task.assigned_to and (name := town.agents.names([task.assigned_to]).get(task.assigned_to)):
        record["assigned_to"] = f"{task.assigned_to} ({name})"
    print_fields(record)
    return 0


def _agent_shown(agent_id: str | None, names: dict[str, str]) -> str:
    """An agent as tt agent list shows it: its name, else the first 8 of its id."""
    if not agent_id:
        return "-"
    return names.get(agent_id) or agent_id[:8]


@guard_redis
def cmd_list(args: argparse.Namespace) -> int:
    town = open_town(args)
    tasks, total = town.tasks.list(args.state, offset=args.offset, limit=args.limit)
    if args.json:
        print_json({"tasks": [t.to_json() for t in tasks], "count": total})
        return 0
    if not tasks:
        print("No tasks" + (f" in state {args.state}" if args.state else ""))
        return 0
    names = town.agents.names({t.assigned_to for t in tasks if t.assigned_to})
    rows = [
        [t.id, t.state, _agent_shown(t.assigned_to, names), short(t.description, 50)] for t in tasks
    ]
    print_table(rows, ["TASK", "STATE", "AGENT", "DESCRIPTION"])
    if total > len(tasks):
        print(f"({len(tasks)} of {total} shown)")
    return 0


@guard_redis
def cmd_complete(args: argparse.Namespace) -> int:
    town = open_town(args)
    task_id = town.tasks.resolve(_task_id(args))
    town.tasks.complete(task_id, args.result)
    print(f"Task {task_id} completed")
    return 0


@guard_redis
def cmd_fail(args: argparse.Namespace) -> int:
    town = open_town(args)
    task_id = town.tasks.resolve(_task_id(args))
    town.tasks.fail(task_id, args.reason)
    print(f"Task {task_id} failed: {args.reason}")
    return 0


@guard_redis
def cmd_cancel(args: argparse.Namespace) -> int:
    town = open_town(args)
    task_id = town.tasks.resolve(args.task_id)
    town.tasks.cancel(task_id, args.reason)
    print(f"Task {task_id} cancelled: {args.reason}")
    return 0
