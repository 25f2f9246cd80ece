"""``tt notify list|test|listen|status|retry``: the ``[[notify]]`` targets of tinytown.toml, a
test ping, a local receiver to try a webhook with, what is still waiting to go out (and the dead
letters), and sending dead letters again.

``test`` sends through the same request builder townhall's notifier uses, at once and without
Redis, so a wrong URL, secret or token shows here rather than at the first real failure.
URLs are printed redacted (``https://ntfy.sh/…``): their paths hold the secrets.
"""

from __future__ import annotations

import argparse
import sys
import uuid

from tinytown.cli.common import (
    LIMIT,
    NAME,
    BadInput,
    add_json_flag,
    config_of,
    guard_redis,
    open_town,
    print_json,
    print_table,
    whole_number,
)
from tinytown.core.clock import now, to_rfc3339
from tinytown.core.errors import NotFound, TinytownError
from tinytown.core.events import NOTIFICATION_KINDS
from tinytown.notify.message import Notification, idempotency_key, link_for
from tinytown.notify.send import send
from tinytown.notify.targets import redact
from tinytown.store.outbox import Outbox

TEST_KIND = "test"
TEST_TEXT = "Test notification from `tt notify test`: this target works."


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "notify",
        help="notification targets: list, test, what is waiting, dead letters",
        description="The [[notify]] targets of tinytown.toml (webhook, ntfy, Slack): list "
        "them, send a test notification to check one, see what townhall has not delivered yet "
        "(and the dead letters), send dead letters again.",
    )
    nsub = p.add_subparsers(dest="notify_command", metavar="ACTION", required=True)

    ls = nsub.add_parser(
        "list",
        help="list targets: name, kind, redacted URL, filters",
        description="List the [[notify]] targets with their URL redacted and their filters.",
    )
    add_json_flag(ls)
    ls.set_defaults(func=cmd_list)

    t = nsub.add_parser(
        "test",
        help="send a test notification now (exit 1 if one fails)",
        description='Send a test notification (kind "test") to one target, or to every '
        "target, through the same request townhall sends; prints the HTTP status or the error.",
    )
    t.add_argument("name", nargs="?", type=NAME, help="the target's name (default: every target)")
    t.set_defaults(func=cmd_test)

    li = nsub.add_parser(
        "listen",
        help="a local webhook receiver that prints each notification once",
        description="Listen on 127.0.0.1:PORT and print one line per notification a webhook "
        "target sends there (a repeat of an Idempotency-Key is skipped, as a receiver should). "
        'Point a target at it: [[notify]] name = "local", url = "http://127.0.0.1:PORT/".',
    )
    li.add_argument(
        "--port",
        type=whole_number(0, 65535),
        default=9000,
        help="port, 0 for any free one (default: %(default)s)",
    )
    li.add_argument("--secret", help="check the X-Tinytown-Signature HMAC with this secret")
    li.add_argument(
        "--count",
        type=whole_number(1, 10**9),
        metavar="N",
        help="exit after N notifications (default: never)",
    )
    li.set_defaults(func=cmd_listen)

    st = nsub.add_parser(
        "status",
        help="what is still waiting to go out, and the dead letters",
        description="Notifications townhall has not delivered yet: being sent, or waiting for "
        "their retry after a failure (with their attempts so far), and the newest dead letters "
        "(out of attempts, or their target gone), with the reason. Send dead letters again "
        "with `tt notify retry`.",
    )
    st.add_argument(
        "--limit",
        type=LIMIT,
        default=20,
        metavar="N",
        help="rows of each list, 1 to 1000 (default: 20)",
    )
    add_json_flag(st)
    st.set_defaults(func=cmd_status)

    rt = nsub.add_parser(
        "retry",
        help="send dead letters again (by id, or --all)",
        description="Put dead letters back in the outbox, as they were (same key, target and "
        "event; attempts from 1), and take them out of the dead letters. Townhall's deliverer "
        "sends them at once. Fix the target first: `tt notify test NAME`.",
    )
    rt.add_argument("ids", nargs="*", metavar="ID", help="dead-letter ids (tt notify status)")
    rt.add_argument("--all", action="store_true", help="every dead letter")
    rt.set_defaults(func=cmd_retry)


def _row(target) -> dict:
    everything = target.events == NOTIFICATION_KINDS
    return {
        "name": target.name,
        "kind": target.kind,
        "url": redact(target.url),
        "events": "all" if everything else list(target.events),
        "missions": list(target.missions) or "all",
        "signed": bool(target.secret),
    }


def cmd_list(args: argparse.Namespace) -> int:
    targets = config_of(args).notify
    rows = [_row(t) for t in targets]
    if args.json:
        print_json({"targets": rows, "count": len(rows)})
        return 0
    if not rows:
        print("No notification targets; add [[notify]] tables to tinytown.toml")
        return 0
    table = [
        [
            r["name"],
            r["kind"],
            r["url"],
            r["events"] if r["events"] == "all" else ",".join(r["events"]),
            r["missions"] if r["missions"] == "all" else ",".join(m[:8] for m in r["missions"]),
        ]
        for r in rows
    ]
    print_table(table, ["NAME", "KIND", "URL", "EVENTS", "MISSIONS"])
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    config = config_of(args)
    targets = [t for t in config.notify if args.name in (None, t.name)]
    if not config.notify:
        raise TinytownError("no [[notify]] targets in tinytown.toml; see docs/notifications.md")
    if not targets:
        names = ", ".join(t.name for t in config.notify)
        raise NotFound(f"no [[notify]] target named {args.name!r}; configured: {names}")
    event_id = f"test-{uuid.uuid4().hex[:12]}"
    event = {
        "id": event_id,
        "event_type": "notification_test",
        "message": TEST_TEXT,
        "timestamp": to_rfc3339(now()),
    }
    failed = 0
    for target in targets:
        key = idempotency_key(config.name, event_id, target.name)
        notification = Notification(
            key,
            TEST_KIND,
            config.name,
            event,
            int(now().timestamp()),
            link_for(config.townhall.public_url, TEST_KIND, event),
        )
        outcome = send(target, notification)
        if outcome.ok:
            print(f"sent to {target.name} ({outcome.reason})")
        else:
            failed += 1
            print(
                f"failed to send to {target.name} at {redact(target.url)}: {outcome.reason}",
                file=sys.stderr,
            )
    return 1 if failed else 0


def cmd_listen(args: argparse.Namespace) -> int:
    import threading

    from tinytown.notify.receiver import Receiver

    def show(text: str) -> None:
        print(f"{now().strftime('%H:%M:%S')}  {text}", flush=True)

    try:
        receiver = Receiver(args.port, show, args.secret)
    except OSError as err:
        raise TinytownError(f"cannot listen on 127.0.0.1:{args.port}: {err.strerror}") from None
    port = receiver.server_address[1]  # (--port 0: the one the system chose)
    print(f"Listening on http://127.0.0.1:{port}/ (Ctrl-C to stop)", flush=True)
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    try:
        while args.count is None or receiver.received < args.count:
            thread.join(0.2)
    finally:
        receiver.shutdown()
        receiver.server_close()
    return 0


@guard_redis
def cmd_status(args: argparse.Namespace) -> int:
    town = open_town(args)
    outbox = Outbox.of(town)
    waiting = [
        {
            "outbox_id": row.entry_id,
            "target": entry.target if entry else "",
            "kind": entry.kind if entry else "",
            "key": entry.key if entry else "",
            "status": "waiting to retry" if row.parked else "being sent",
            "attempts": row.deliveries,
            "idle_secs": row.idle_ms // 1000,
        }
        for row, entry in outbox.waiting(args.limit)
    ]
    dead = outbox.dead_letters(args.limit)
    doc = {"waiting": waiting, "dead_letters": dead, "dead_count": outbox.dead_count()}
    if args.json:
        print_json(doc)
        return 0
    print(f"Waiting: {len(waiting)}   Dead letters: {doc['dead_count']}")
    if waiting:
        print("\nWAITING (being sent, or for the retry after a failure)")
        rows = [
            [w["target"], w["kind"], w["status"], str(w["attempts"]), f"{w['idle_secs']} s"]
            for w in waiting
        ]
        print_table(rows, ["TARGET", "KIND", "STATUS", "ATTEMPTS", "SINCE"])
    if dead:
        print("\nDEAD LETTERS, newest first (send again: tt notify retry ID … or --all)")
        rows = [
            [d["id"], d.get("target", ""), d.get("kind", ""), d.get("attempts", "")]
            + [d.get("reason", "")]
            for d in dead
        ]
        print_table(rows, ["ID", "TARGET", "KIND", "ATTEMPTS", "REASON"])
    return 0


@guard_redis
def cmd_retry(args: argparse.Namespace) -> int:
    if args.all == bool(args.ids):
        raise BadInput("give dead-letter ids or --all (not both); see tt notify status")
    moved = Outbox.of(open_town(args)).requeue_dead(None if args.all else args.ids)
    print(f"{len(moved)} dead letter(s) back in the outbox; townhall sends them at once")
    return 0
