"""``tt send|inbox|recover|reclaim``: talk to agents and recover the work of dead ones."""

from __future__ import annotations

import argparse
import sys

from tinytown import recovery
from tinytown.cli.common import (
    AGENT,
    TEXT,
    add_json_flag,
    guard_redis,
    open_town,
    print_json,
    print_table,
    short,
)
from tinytown.core import messages
from tinytown.core.errors import ExitStatus
from tinytown.core.records import SUPERVISOR_ID


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "send",
        help="put a message on an agent's inbox",
        description="Send a message; the agent reads it in its next prompt. "
        "--kind shutdown makes a worker drain and exit.",
    )
    s.add_argument("agent", type=AGENT, help="agent id, name, nickname or short id")
    s.add_argument(
        "message", type=TEXT, nargs="?", default="", help="the text (not needed for shutdown)"
    )
    s.add_argument(
        "--kind",
        choices=messages.SEND_KINDS,
        default="task",
        help="message kind (default: %(default)s)",
    )
    s.add_argument("--urgent", action="store_true", help="put it on the urgent list, read first")
    s.add_argument("--from", dest="sender", type=AGENT, help="sending agent (default: supervisor)")
    add_json_flag(s)
    s.set_defaults(func=cmd_send)

    i = sub.add_parser(
        "inbox",
        help="show an agent's pending messages (without taking them)",
        description="Peek at an agent's inbox: counts and a summary of each message; "
        "nothing is removed.",
    )
    i.add_argument("agent", type=AGENT, help="agent id, name, nickname or short id")
    add_json_flag(i)
    i.set_defaults(func=cmd_inbox)

    r = sub.add_parser(
        "recover",
        help="stop agents with a stale heartbeat and return their work",
        description="Agents with no heartbeat for several intervals are marked stopped; "
        "the docket entries every dead agent holds go back to the backlog.",
    )
    add_json_flag(r)
    r.set_defaults(func=cmd_recover)

    c = sub.add_parser(
        "reclaim",
        help="move work of stopped agents to the backlog or another agent",
        description="Without --to-backlog or --to, only lists what would move: "
        "nothing is ever discarded.",
    )
    dest = c.add_mutually_exclusive_group()
    dest.add_argument(
        "--to-backlog", action="store_true", help="directed tasks and task messages to the backlog"
    )
    dest.add_argument(
        "--to", dest="to_agent", metavar="AGENT", type=AGENT, help="move everything to this agent"
    )
    c.add_argument(
        "--from", dest="from_agent", metavar="AGENT", type=AGENT, help="only this (stopped) agent"
    )
    c.add_argument(
        "--orphan-tasks",
        action="store_true",
        help="instead: live tasks whose assignee is gone or terminal (list; "
        "with --to-backlog, --cancel or --delete act on them)",
    )
    dest.add_argument("--cancel", action="store_true", help="with --orphan-tasks: cancel them")
    dest.add_argument("--delete", action="store_true", help="with --orphan-tasks: delete them")
    add_json_flag(c)
    c.set_defaults(func=cmd_reclaim)


def _agent_id(town, ref: str | None) -> str:
    if not ref or ref.lower() in ("supervisor", "conductor"):
        return SUPERVISOR_ID
    return town.agents.resolve(ref).id


@guard_redis
def cmd_send(args: argparse.Namespace) -> int:
    town = open_town(args)
    agent = town.agents.resolve(args.agent)
    sent = town.inbox.send(
        agent.id,
        args.message,
        kind=args.kind,
        sender=_agent_id(town, args.sender),
        urgent=args.urgent,
    )
    if args.json:
        print_json({"message_id": sent["id"], "to_agent": agent.id, "urgent": args.urgent})
    else:
        print(
            f"Sent {sent['type']} message {sent['id']} to {agent.name}"
            + (" (urgent)" if args.urgent else "")
        )
    return 0


@guard_redis
def cmd_inbox(args: argparse.Namespace) -> int:
    town = open_town(args)
    agent = town.agents.resolve(args.agent)
    found, total, urgent = town.inbox.peek(agent.id)
    rows = [
        {"id": m.get("id", ""), "from": m.get("from", ""), "type": t, "summary": s}
        for m in found
        for t, s in [messages.summarize(m)]
    ]
    if args.json:
        print_json({"agent": agent.name, "total": total, "urgent": urgent, "messages": rows})
        return 0
    print(f"{agent.name}: {total} message(s), {urgent} urgent")
    if rows:
        print_table(
            [[r["type"], r["from"][:8], short(r["summary"])] for r in rows],
            ["TYPE", "FROM", "SUMMARY"],
        )
    return 0


@guard_redis
def cmd_recover(args: argparse.Namespace) -> int:
    result = recovery.recover(open_town(args))
    if args.json:
        print_json(result)
    else:
        names = ", ".join(result["agents"]) or "none"
        print(
            f"Checked {result['checked']} live agent(s); stopped {result['recovered']} ({names}); "
            f"returned {result['reclaimed']} task(s) to work"
        )
    return 0


@guard_redis
def cmd_reclaim(args: argparse.Namespace) -> int:
    town = open_town(args)
    if args.orphan_tasks:
        action = (
            "to_backlog"
            if args.to_backlog
            else "cancel"
            if args.cancel
            else "delete"
            if args.delete
            else "list"
        )
        result = recovery.orphan_tasks(town, action)
        if args.json:
            print_json(result)
            return 0
        print(f"{result['count']} orphan task(s)" + ("" if action == "list" else f": {action}"))
        if result["orphans"]:
            print_table(
                [
                    [o["task_id"], o["state"], o["assigned_to"], o["reason"]]
                    for o in result["orphans"]
                ],
                ["TASK", "STATE", "ASSIGNED TO", "REASON"],
            )
        return 0
    if args.cancel or args.delete:
        print("tt reclaim: error: --cancel and --delete need --orphan-tasks", file=sys.stderr)
        return int(ExitStatus.USAGE)
    result = recovery.reclaim(
        town, to_backlog=args.to_backlog, to_agent=args.to_agent, from_agent=args.from_agent
    )
    if args.json:
        print_json(result)
        return 0
    print(f"{result['destination']}: {result['reclaimed']} item(s)")
    if result["messages"]:
        rows = [
            [m["agent"], m["kind"], m["type"], m["outcome"], short(m["summary"], 50)]
            for m in result["messages"]
        ]
        print_table(rows, ["AGENT", "KIND", "TYPE", "OUTCOME", "SUMMARY"])
    return 0
