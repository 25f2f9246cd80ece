"""``tt task show|list|complete|fail|cancel``: one task's record, how a coding CLI reports back,
and cancelling."""

from __future__ import annotations

import argparse
import os

from tinytown.cli.common import (
    TASK_ID_HELP,
    TEXT,
    add_json_flag,
    guard_redis,
    open_town,
    print_json,
    print_table,
    short,
)
from tinytown.core.errors import TinytownError
from tinytown.core.states import TASK_STATES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "task",
        help="show, list, complete, fail or cancel tasks",
        description="Tasks in every state: inspect them, report a result from a "
        "coding CLI, or cancel one.",
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
    ls.add_argument("--state", choices=TASK_STATES, help="only tasks in this state")
    ls.add_argument(
        "--limit", type=int, default=100, help="at most this many (default: %(default)s)"
    )
    ls.add_argument("--offset", type=int, default=0, help="skip this many first")
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
    f.add_argument("--reason", type=TEXT, required=True, help="why it failed")
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
        "--reason", type=TEXT, default="Cancelled via tt", help="why (default: %(default)s)"
    )
    x.set_defaults(func=cmd_cancel)


def _task_id(args: argparse.Namespace) -> str:
    task_id = args.task_id or os.environ.get("TINYTOWN_TASK_ID")
    if not task_id:
        raise TinytownError("no task id given and TINYTOWN_TASK_ID is not set")
    return task_id


@guard_redis
def cmd_show(args: argparse.Namespace) -> int:
    task = open_town(args).tasks.get(args.task_id)
    if args.json:
        print_json(task.to_json())
        return 0
    for key, value in task.to_json().items():
        if value not in (None, "", []):
            print(f"{key:>12}: {value}")
    return 0


@guard_redis
def cmd_list(args: argparse.Namespace) -> int:
    town = open_town(args)
    tasks, total = town.tasks.list(args.state, offset=max(args.offset, 0), limit=max(args.limit, 0))
    if args.json:
        print_json({"tasks": [t.to_json() for t in tasks], "count": total})
        return 0
    if not tasks:
        print("No tasks" + (f" in state {args.state}" if args.state else ""))
        return 0
    rows = [[t.id, t.state, t.assigned_to or "-", short(t.description, 50)] for t in tasks]
    print_table(rows, ["TASK", "STATE", "AGENT", "DESCRIPTION"])
    if total > len(tasks):
        print(f"({len(tasks)} of {total} shown)")
    return 0


@guard_redis
def cmd_complete(args: argparse.Namespace) -> int:
    task_id = _task_id(args)
    open_town(args).tasks.complete(task_id, args.result)
    print(f"Task {task_id} completed")
    return 0


@guard_redis
def cmd_fail(args: argparse.Namespace) -> int:
    task_id = _task_id(args)
    open_town(args).tasks.fail(task_id, args.reason)
    print(f"Task {task_id} failed: {args.reason}")
    return 0


@guard_redis
def cmd_cancel(args: argparse.Namespace) -> int:
    open_town(args).tasks.cancel(args.task_id, args.reason)
    print(f"Task {args.task_id} cancelled: {args.reason}")
    return 0
