"""``tt events``: the town's event feed, or one mission's, as lines a person reads or as JSON
lines; ``--follow`` keeps printing new events as they happen (blocking reads, not polling)."""

from __future__ import annotations

import argparse
import json
import re
import sys

from tinytown.cli.common import guard_redis, open_town, whole_number
from tinytown.core import defaults
from tinytown.core import events as ev
from tinytown.core.clock import parse_rfc3339
from tinytown.core.records import is_uuid
from tinytown.store.short_ids import short_id_digits

OLDEST, NEWEST = ev.OLDEST, ev.NEWEST
SHORT_ID_CHARS = 8
SUBJECT_FIELDS = ("task_id", "agent_id", "mission_id")  # whose short id a line shows
TYPE_WIDTH = 22  # the longest event type (mission_work_completed)
STATES_WIDTH = 17  # e.g. pending→cancelled
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "events",
        help="print the town's events; --follow keeps printing new ones",
        description="Print the town's events (every state change of a task, an agent or a "
        "mission), oldest first, one line each: local time, event type, the short id of its "
        "task, agent or mission, old→new state and the message. --follow keeps printing new "
        "events as they happen, until Ctrl-C.",
    )
    p.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="after the events there are, wait for new ones and print them, until Ctrl-C",
    )
    p.add_argument(
        "--mission",
        type=_mission_id,
        metavar="ID",
        help="only this mission's events, by its id or short id (its own stream; its ids "
        "are that stream's)",
    )
    p.add_argument(
        "--after",
        type=_after,
        default=OLDEST,
        metavar="ID",
        help="only events after this event id (default: %(default)s, the oldest kept; $: only "
        "events from now on)",
    )
    p.add_argument(
        "--limit",
        type=whole_number(1, defaults.EVENTS_PAGE_MAX),
        default=defaults.TOWNHALL_PAGE_LIMIT,
        metavar="N",
        help=f"at most N events, 1 to {defaults.EVENTS_PAGE_MAX} (with --follow: per read) "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--json", action="store_true", help="print each event as one line of JSON, with its id"
    )
    p.set_defaults(func=cmd_events)


@guard_redis
def cmd_events(args: argparse.Namespace) -> int:
    town = open_town(args)
    if args.mission:
        args.mission = town.missions.resolve(args.mission)
    after = town.events.last_id(args.mission) if args.after == NEWEST else args.after
    show = json_line if args.json else text_line
    if not args.follow:
        found = town.events.read(after, args.limit, mission_id=args.mission)
        for doc in found:
            print(show(doc))
        if not found and not args.json:
            print("No events")
        elif len(found) == args.limit:
            print(
                f"tt: {len(found)} events shown; for more: --after {found[-1]['id']}",
                file=sys.stderr,
            )
        return 0
    while True:  # until Ctrl-C (exit 130)
        found = town.events.read(
            after, args.limit, mission_id=args.mission, wait_ms=defaults.EVENTS_BLOCK_SLICE_MS
        )
        for doc in found:
            print(show(doc))
        sys.stdout.flush()  # a follower's reader sees each event as it comes
        if found:
            after = found[-1]["id"]


def text_line(doc: dict) -> str:
    """``14:03:07  task_failed  1a2b3c4d  running→failed  task … failed: tests do not pass``."""
    ts = parse_rfc3339(doc.get("timestamp"))
    when = ts.astimezone().strftime("%H:%M:%S") if ts else "--:--:--"
    subject = next((_text(doc[k]) for k in SUBJECT_FIELDS if doc.get(k)), "-")
    old, new = _text(doc.get("old_state") or ""), _text(doc.get("new_state") or "")
    states = f"{old}→{new}" if old and new else f"→{new}" if new else ""
    return (
        f"{when}  {_text(doc.get('event_type')):<{TYPE_WIDTH}}  "
        f"{subject[:SHORT_ID_CHARS]:<{SHORT_ID_CHARS}}  {states:<{STATES_WIDTH}}  "
        f"{_text(doc.get('message') or '')}"
    ).rstrip()


def json_line(doc: dict) -> str:
    return json.dumps(doc, separators=(",", ":"))


def _text(value: object) -> str:
    """One line of plain text: control characters (a terminal's escapes) and runs of blanks
    become one space; a value that is not a string is shown as JSON."""
    text = value if isinstance(value, str) else json.dumps(value)
    return " ".join(_CONTROL.sub(" ", text).split())


# -- argument types ---------------------------------------------------------------------------


def _after(value: str) -> str:
    try:
        return ev.cursor(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _mission_id(value: str) -> str:
    if not is_uuid(value.lower()) and short_id_digits(value) is None:
        raise argparse.ArgumentTypeError(
            f"{value[:40]!r} is not a mission id (a UUID, or its first 8 or more hex digits)"
        )
    return value.lower()
