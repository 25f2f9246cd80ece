"""The notification outbox: events routed to targets, held until a target answers 2xx.

Three streams and two consumer groups (docs/notifications.md):

- the town's event stream ``events``, read by the routers' group ``notify`` (created at the
  newest event: a town that turns notifications on is not paged for its past);
- ``notify:outbox`` (capped): one entry per (notification event, target), read by the group
  ``deliverers``. Routing XADDs an event's entries and XACKs the event in one transaction, so a
  crashed router neither loses an event nor routes it twice;
- ``notify:dead`` (capped): entries that ran out of attempts or whose target is gone.

An outbox entry's attempts are its delivery counter in the group's pending list (``XREADGROUP``
counts one, every ``XCLAIM`` one more). An entry being sent is held by its deliverer; a failed
one is handed to the consumer ``parked`` (``XCLAIM … JUSTID``: the counter stays, the idle time
restarts), so its idle time is the time since it failed, and any deliverer claims it once that
passes the backoff. An entry held by a deliverer that died is claimed after the in-flight claim
time. ``XCLAIM`` with a minimum idle time is atomic: one claimant wins.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import redis

from tinytown.core import events as ev
from tinytown.core.errors import NotFound
from tinytown.core.keys import Keys
from tinytown.store.events import Events
from tinytown.store.transaction import Command, execute

ROUTER_GROUP = "notify"
DELIVERY_GROUP = "deliverers"
PARKED = "parked"  # the consumer that holds failed entries while they wait for their retry
# Defaults (to move to tinytown/core/defaults.py).
OUTBOX_MAXLEN = 10_000  # approximate: a trim can only reach entries this far behind
DEAD_LETTERS_MAXLEN = 1_000

# Remove consumers that hold nothing and have been idle at least ARGV[2] ms (ARGV[3] = a
# consumer to remove whatever its idle time, or ''; never PARKED). KEYS: streams; ARGV[1]: the
# group of each stream, comma-separated. Returns how many were removed.
_FORGET_CONSUMERS = """
local groups, removed = {}, 0
for g in string.gmatch(ARGV[1], '[^,]+') do table.insert(groups, g) end
for i, key in ipairs(KEYS) do
  local ok, rows = pcall(redis.call, 'XINFO', 'CONSUMERS', key, groups[i])
  if ok then
    for _, row in ipairs(rows) do
      local c = {}
      for j = 1, #row, 2 do c[row[j]] = row[j + 1] end
      local wanted = c['name'] == ARGV[3] or tonumber(c['idle']) >= tonumber(ARGV[2])
      if c['name'] ~= ARGV[4] and c['pending'] == 0 and wanted then
        redis.call('XGROUP', 'DELCONSUMER', key, groups[i], c['name'])
        removed = removed + 1
      end
    end
  end
end
return removed
"""


@dataclass(frozen=True)
class OutboxEntry:
    """One notification for one target; ``attempt`` is the delivery about to be made (1, 2, …)."""

    entry_id: str
    key: str
    target: str
    kind: str
    event: dict = field(default_factory=dict)
    attempt: int = 1

    @classmethod
    def decode(cls, entry_id: str, fields: Mapping[str, str] | None, attempt: int):
        try:
            event = json.loads((fields or {}).get("event") or "")
        except ValueError:
            event = None
        if not fields or not isinstance(event, dict):
            return None
        get = fields.get
        return cls(entry_id, get("key", ""), get("target", ""), get("kind", ""), event, attempt)


@dataclass(frozen=True)
class Pending:
    """A row of the outbox group's pending list."""

    entry_id: str
    consumer: str
    idle_ms: int
    deliveries: int

    @property
    def parked(self) -> bool:
        return self.consumer == PARKED


def entry_fields(key: str, target: str, kind: str, event: Mapping) -> dict[str, str]:
    """The outbox entry for ``event`` (a document with its stream ``id``) to ``target``."""
    return {
        "key": key,
        "target": target,
        "kind": kind,
        "event": json.dumps(dict(event), separators=(",", ":")),
    }


def _nogroup(err: redis.ResponseError) -> bool:
    return "NOGROUP" in str(err)


class Outbox:
    """The outbox of one town: routing events into it, and delivering from it."""

    def __init__(self, r: redis.Redis, keys: Keys):
        self.r, self.keys = r, keys
        self.events = Events(r, keys)
        # Key names (to move to tinytown/core/keys.py).
        self.outbox = keys.notify_outbox
        self.dead = keys.notify_dead
        self._forget = r.register_script(_FORGET_CONSUMERS)

    @classmethod
    def of(cls, town) -> Outbox:
        """The outbox of a :class:`tinytown.store.Town`."""
        return cls(town.redis, town.keys)

    def ensure_groups(self) -> None:
        """Create both groups if missing: ``notify`` at the newest event, ``deliverers`` at the
        outbox's start."""
        for stream, group, start in (
            (self.keys.events, ROUTER_GROUP, "$"),
            (self.outbox, DELIVERY_GROUP, "0"),
        ):
            try:
                self.r.xgroup_create(stream, group, id=start, mkstream=True)
            except redis.ResponseError as err:
                if "BUSYGROUP" not in str(err):
                    raise

    # -- routing ------------------------------------------------------------------------------

    def read_events(
        self, consumer: str, count: int, block_ms: int
    ) -> list[tuple[str, dict | None]]:
        """New events for this router, ``(id, document or None)``; waits up to ``block_ms``."""
        try:
            reply = self.r.xreadgroup(
                ROUTER_GROUP, consumer, {self.keys.events: ">"}, count, _block(block_ms)
            )
        except redis.ResponseError as err:
            if not _nogroup(err):
                raise
            self.ensure_groups()  # the stream was deleted (a reset): start again
            return []
        rows = reply[0][1] if reply else []
        return [(i, ev.decode(i, f) if f else None) for i, f in rows]

    def stale_events(
        self, consumer: str, min_idle_ms: int, count: int
    ) -> list[tuple[str, dict | None]]:
        """Events a router read and never routed (it died), idle ``min_idle_ms``: taken over."""
        try:
            reply = self.r.xautoclaim(
                self.keys.events, ROUTER_GROUP, consumer, min_idle_ms, "0-0", count=count
            )
        except redis.ResponseError as err:
            if not _nogroup(err):
                raise
            return []
        return [(i, ev.decode(i, f) if f else None) for i, f in reply[1]]

    def route(self, event_ids: list[str], entries: list[dict[str, str]]) -> None:
        """One transaction: add ``entries`` to the outbox and acknowledge ``event_ids``."""
        commands: list[Command] = [
            ("XADD", self.outbox, "MAXLEN", "~", OUTBOX_MAXLEN, "*", *_flat(f)) for f in entries
        ]
        if event_ids:
            commands.append(("XACK", self.keys.events, ROUTER_GROUP, *event_ids))
        if commands:
            execute(self.r, commands)

    # -- delivering ---------------------------------------------------------------------------

    def read_new(self, consumer: str, count: int, block_ms: int) -> list[OutboxEntry]:
        """Entries no deliverer has had yet (attempt 1); waits up to ``block_ms``. An entry
        that cannot be read is acknowledged and left out."""
        try:
            reply = self.r.xreadgroup(
                DELIVERY_GROUP, consumer, {self.outbox: ">"}, count, _block(block_ms)
            )
        except redis.ResponseError as err:
            if not _nogroup(err):
                raise
            self.ensure_groups()
            return []
        out = []
        for entry_id, fields in reply[0][1] if reply else []:
            entry = OutboxEntry.decode(entry_id, fields, 1)
            if entry is None:
                self.r.xack(self.outbox, DELIVERY_GROUP, entry_id)
            else:
                out.append(entry)
        return out

    def pending(self, count: int, min_idle_ms: int = 0) -> list[Pending]:
        """The oldest ``count`` rows of the pending list idle at least ``min_idle_ms``."""
        try:
            rows = self.r.xpending_range(
                self.outbox, DELIVERY_GROUP, "-", "+", count, idle=min_idle_ms or None
            )
        except redis.ResponseError as err:
            if not _nogroup(err):
                raise
            return []
        return [
            Pending(
                row["message_id"],
                row["consumer"],
                int(row["time_since_delivered"]),
                int(row["times_delivered"]),
            )
            for row in rows
        ]

    def claim(self, consumer: str, row: Pending, min_idle_ms: int) -> OutboxEntry | None:
        """Take ``row``'s entry if it is still idle ``min_idle_ms`` (None if another took it
        first); its attempt is the next delivery. An entry gone from the stream is dropped."""
        claimed = self.r.xclaim(self.outbox, DELIVERY_GROUP, consumer, min_idle_ms, [row.entry_id])
        if not claimed:
            return None
        entry_id, fields = claimed[0]
        entry = OutboxEntry.decode(entry_id, fields, row.deliveries + 1)
        if entry is None:
            self.r.xack(self.outbox, DELIVERY_GROUP, entry_id)
        return entry

    def delivered(self, entry: OutboxEntry, attempt_event: Mapping) -> None:
        """One transaction: acknowledge the entry and append its ``notification_attempt``."""
        execute(
            self.r,
            [("XACK", self.outbox, DELIVERY_GROUP, entry.entry_id)]
            + self.events.commands(attempt_event),
        )

    def park(self, entry: OutboxEntry, attempt_event: Mapping) -> None:
        """One transaction: hand the failed entry to ``parked`` (its idle time restarts, its
        attempts stay) and append its ``notification_attempt``."""
        execute(
            self.r,
            [("XCLAIM", self.outbox, DELIVERY_GROUP, PARKED, 0, entry.entry_id, "JUSTID")]
            + self.events.commands(attempt_event),
        )

    def bury(self, entry: OutboxEntry, attempt_event: Mapping, reason: str) -> None:
        """One transaction: copy the entry to the dead letters (with ``reason``, its attempts
        and its outbox id), acknowledge it, append its ``notification_attempt``."""
        fields = entry_fields(entry.key, entry.target, entry.kind, entry.event)
        fields.update(reason=reason, attempts=str(entry.attempt), outbox_id=entry.entry_id)
        execute(
            self.r,
            [
                ("XADD", self.dead, "MAXLEN", "~", DEAD_LETTERS_MAXLEN, "*", *_flat(fields)),
                ("XACK", self.outbox, DELIVERY_GROUP, entry.entry_id),
            ]
            + self.events.commands(attempt_event),
        )

    def dead_letters(self, count: int = 100) -> list[dict]:
        """The newest dead letters, newest first, each with its ``id``."""
        return [{"id": i, **f} for i, f in self.r.xrevrange(self.dead, count=count)]

    def dead_count(self) -> int:
        return int(self.r.xlen(self.dead))

    def waiting(self, count: int) -> list[tuple[Pending, OutboxEntry | None]]:
        """The oldest ``count`` entries not yet delivered (being sent, or parked until their
        retry), each with its entry (None if it is gone from the stream)."""
        rows = self.pending(count)
        pipe = self.r.pipeline(transaction=False)
        for row in rows:
            pipe.xrange(self.outbox, row.entry_id, row.entry_id)
        found = pipe.execute() if rows else []
        return [
            (row, OutboxEntry.decode(row.entry_id, got[0][1], row.deliveries) if got else None)
            for row, got in zip(rows, found)
        ]

    def requeue_dead(self, ids: list[str] | None = None) -> list[str]:
        """Send dead letters again: each back in the outbox as a new entry (its key, target,
        kind and event as they were; attempts from 1) and out of the dead letters, in one
        transaction. ``ids``: those letters (all must exist, else nothing moves and NotFound
        names the missing); None: every one. Returns the ids moved."""
        letters = {i: f for i, f in self.r.xrange(self.dead)}
        ids = list(letters) if ids is None else list(dict.fromkeys(ids))  # each letter once
        if missing := [i for i in ids if i not in letters]:
            raise NotFound(f"no dead letter with id {', '.join(missing)}; see tt notify status")
        commands: list[Command] = []
        for i in ids:
            fields = {k: letters[i].get(k, "") for k in ("key", "target", "kind", "event")}
            commands.append(
                ("XADD", self.outbox, "MAXLEN", "~", OUTBOX_MAXLEN, "*", *_flat(fields))
            )
            commands.append(("XDEL", self.dead, i))
        if commands:
            execute(self.r, commands)
        return ids

    def forget_consumers(self, idle_ms: int, consumer: str = "") -> int:
        """Remove consumers of both groups that hold nothing and have been idle ``idle_ms``
        (``consumer``: also this one, whatever its idle time). Returns how many went."""
        return int(
            self._forget(
                keys=[self.keys.events, self.outbox],
                args=[f"{ROUTER_GROUP},{DELIVERY_GROUP}", idle_ms, consumer, PARKED],
            )
        )


def _block(block_ms: int) -> int | None:
    """redis-py's ``block``: None reads without waiting (0 would wait for ever)."""
    return block_ms if block_ms > 0 else None


def _flat(fields: Mapping[str, str]) -> list[str]:
    return [x for kv in fields.items() for x in kv]
