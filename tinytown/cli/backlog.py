"""``tt backlog add|list|remove|claim``: the unassigned work any idle worker takes."""

from __future__ import annotations

import argparse

from tinytown.cli.common import (
    AGENT,
    BRANCH,
    NAME,
    REPO,
    SOME_TEXT,
    TAGS,
    TASK_ID_HELP,
    add_json_flag,
    add_page_flags,
    guard_redis,
    open_town,
    print_json,
    print_table,
    resolve_agent,
    short,
)
from tinytown.core.clis import named_cli
from tinytown.core.inputs import REPO_RULE


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "backlog",
        help="add, list, remove or claim unassigned tasks",
        description="The backlog: pending tasks that the first idle worker takes.",
    )
    bsub = p.add_subparsers(dest="backlog_command", metavar="ACTION", required=True)

    a = bsub.add_parser(
        "add",
        help="add a task to the backlog (and the shared docket)",
        description="Create a pending task; any idle worker picks it up at once.",
    )
    a.add_argument("description", type=SOME_TEXT, help="what the coding agent should do")
    a.add_argument(
        "--tags", type=TAGS, default=[], help="comma-separated tags, e.g. backend,urgent"
    )
    a.add_argument(
        "--repo",
        type=REPO,
        help=f"git repository the worker clones for this task: {REPO_RULE}",
    )
    a.add_argument(
        "--base-branch",
        type=BRANCH,
        help="branch to start from (default: the repository's default)",
    )
    a.add_argument("--push", action="store_true", help="push the task branch when done")
    a.add_argument(
        "--cli",
        type=NAME,
        help="coding CLI for this task: a preset or an [agent_clis.NAME] of the "
        "town (default: the town's default_cli)",
    )
    add_json_flag(a)
    a.set_defaults(func=cmd_add)

    ls = bsub.add_parser(
        "list",
        help="list backlog tasks, oldest first",
        description="List the pending tasks no worker has taken yet, oldest first.",
    )
    add_page_flags(ls)
    add_json_flag(ls)
    ls.set_defaults(func=cmd_list)

    rm = bsub.add_parser(
        "remove",
        help="delete a pending task from the backlog",
        description="Delete a pending task; a task that is assigned, running or "
        "finished is refused (exit 1).",
    )
    rm.add_argument("task_id", help=TASK_ID_HELP)
    rm.set_defaults(func=cmd_remove)

    c = bsub.add_parser(
        "claim",
        help="assign a backlog task to one agent",
        description="Assign a pending backlog task to one agent: it moves from the "
        "shared docket to that agent's own.",
    )
    c.add_argument("task_id", help=TASK_ID_HELP)
    c.add_argument("agent", type=AGENT, help="agent id, name, nickname or short id")
    c.set_defaults(func=cmd_claim)


@guard_redis
def cmd_add(args: argparse.Namespace) -> int:
    town = open_town(args)
    if args.cli:
        named_cli(args.cli, town.config.agent_clis)  # exit 2 naming the CLIs the town has
    task = town.tasks.add(
        args.description,
        tags=args.tags,
        repo=args.repo,
        base_branch=args.base_branch,
        push=args.push,
        cli=args.cli,
    )
    if args.json:
        print_json(task.to_json())
    else:
        print(f"Added task {task.id} to the backlog")
    return 0


@guard_redis
def cmd_list(args: argparse.Namespace) -> int:
    town = open_town(args)
    ids, total = town.tasks.backlog(offset=args.offset, limit=args.limit)
    tasks = [t for t in town.tasks.many(ids) if t is not None]
    if args.json:
        print_json({"backlog": [t.to_json() for t in tasks], "count": total})
        return 0
    if not tasks:
        print("Backlog is empty")
        return 0
    print_table(
        [[t.id, ",".join(t.tags), short(t.description)] for t in tasks],
        ["TASK", "TAGS", "DESCRIPTION"],
    )
    if total > len(tasks):
        print(f"({len(tasks)} of {total} shown)")
    return 0


@guard_redis
def cmd_remove(args: argparse.Namespace) -> int:
    town = open_town(args)
    task_id = town.tasks.resolve(args.task_id)
    town.tasks.remove_from_backlog(task_id)
    print(f"Removed task {task_id} from the backlog")
    return 0


@guard_redis
def cmd_claim(args: argparse.Namespace) -> int:
    town = open_town(args)
    task_id = town.tasks.resolve(args.task_id)
    agent = resolve_agent(town, args.agent)
    town.tasks.assign(task_id, agent.id)
    print(f"Assigned task {task_id} to {agent.name} ({agent.id})")
    return 0
