"""``tt send|inbox|recover|reclaim``: talk to agents and recover the work of dead ones."""

from __future__ import annotations

import argparse
import sys

from tinytown import recovery
from tinytown.cli.common import (
    AGENT,
    TEXT,
    BadInput,
    add_json_flag,
    guard_redis,
    open_town,
    print_json,
    print_table,
    resolve_agent,
    short,
)
from tinytown.core import messages
from tinytown.core.errors import ExitStatus
from tinytown.core.records import RESERVED_AGENT_NAMES, SUPERVISOR_ID, is_uuid

INBOX_SHOWN = 100  # messages listed from each of an agent's two lists


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
        description="Peek at an agent's inbox: counts, then each message, urgent ones first "
        "(the order its worker reads them in), with its sender and a summary; nothing is "
        "removed.",
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
    return resolve_agent(town, ref).id


@guard_redis
def cmd_send(args: argparse.Namespace) -> int:
    if args.kind != "shutdown" and not args.message.strip():
        raise BadInput(f"a {args.kind} message needs its text (only shutdown goes without)")
    town = open_town(args)
    agent = resolve_agent(town, args.agent)
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


def sender_names(town, messages_found: list[dict]) -> dict[str, str]:
    """Who sent each message, by name: ``supervisor`` for the supervisor's id, an agent's name,
    else the first 8 characters of the id (an agent since pruned)."""
    senders = {str(m.get("from") or "") for m in messages_found}
    names = town.agents.names(s for s in senders if is_uuid(s) and s != SUPERVISOR_ID)
    shown = {}
    for sender in senders:
        if sender == SUPERVISOR_ID or sender.lower() in RESERVED_AGENT_NAMES:
            shown[sender] = "supervisor"
        else:
            shown[sender] = names.get(sender) or sender[:8] or "-"
    return shown


@guard_redis
def cmd_inbox(args: argparse.Namespace) -> int:
    town = open_town(args)
    agent = resolve_agent(town, args.agent)
    ((total, urgent),) = town.inbox.lengths([agent.id])
    urgent_list = town.inbox.lists(agent.id)[0]
    found = [
        (key == urgent_list, messages.decode(raw))
        for key, raw in town.inbox.raw(agent.id, INBOX_SHOWN)
    ]
    names = sender_names(town, [m for _, m in found])
    rows = [
        {
            "id": m.get("id", ""),
            "from": m.get("from", ""),
            "from_name": names[str(m.get("from") or "")],
            "urgent": is_urgent,
            "type": t,
            "summary": s,
        }
        for is_urgent, m in found
        for t, s in [messages.summarize(m)]
    ]
    if args.json:
        print_json({"agent": agent.name, "total": total, "urgent": urgent, "messages": rows})
        return 0
    print(f"{agent.name}: {total} message(s), {urgent} urgent")
    if rows:
        print_table(
            [
                [
                    "urgent" if r["urgent"] else "normal",
                    r["type"],
                    r["from_name"],
                    short(r["summary"]),
                ]
                for r in rows
            ],
            ["PRIORITY", "TYPE", "FROM", "SUMMARY"],
        )
    if len(rows) < total + urgent:
        print(f"({len(rows)} of {total + urgent} shown: the first {INBOX_SHOWN} of each list)")
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
    to_agent, from_agent = (
        resolve_agent(town, ref).id if ref else None for ref in (args.to_agent, args.from_agent)
    )
    result = recovery.reclaim(
        town, to_backlog=args.to_backlog, to_agent=to_agent, from_agent=from_agent
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
