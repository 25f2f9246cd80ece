"""The town's event feed in Redis: the capped stream ``tt:<town>:events`` and, for a mission's
events, its own capped stream too (documents: :mod:`tinytown.core.events`).

The Lua scripts append the events of the state changes they make themselves; this module gives
the rest of the store the commands to append one inside its own transaction
(:meth:`Events.commands`), and readers a page or a bounded blocking wait.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import redis

from tinytown.core import defaults
from tinytown.core import events as ev
from tinytown.core.keys import Keys
from tinytown.store.transaction import Command, execute

START = ev.OLDEST


class Events:
    def __init__(self, r: redis.Redis, keys: Keys):
        self.r, self.keys = r, keys

    def stream(self, mission_id: str | None = None) -> str:
        return self.keys.mission_event_stream(mission_id) if mission_id else self.keys.events

    def commands(self, doc: Mapping) -> list[Command]:
        """The XADDs that append ``doc`` (to its mission's stream too), for a transaction."""
        fields = ev.entry_fields(doc)
        out: list[Command] = [
            ("XADD", self.keys.events, "MAXLEN", "~", defaults.EVENTS_MAXLEN, "*", *fields)
        ]
        if doc.get("mission_id"):
            key = self.keys.mission_event_stream(doc["mission_id"])
            out.append(("XADD", key, "MAXLEN", "~", defaults.MISSION_EVENTS_MAXLEN, "*", *fields))
        return out

    def append(self, doc: Mapping) -> str:
        """Append one event on its own (a change that has no transaction of its own to join)."""
        replies = execute(self.r, self.commands(doc))
        return replies[0]

    def read(
        self,
        after: str = START,
        limit: int = 100,
        *,
        mission_id: str | None = None,
        wait_ms: int = 0,
    ) -> list[dict]:
        """Up to ``limit`` events after the id ``after``, oldest first. With ``wait_ms`` and
        nothing there yet, waits up to that long for the first: blocking ``XREAD``s of at most
        ``EVENTS_BLOCK_SLICE_MS`` each, so no read outlasts the client's socket timeout."""
        key = self.stream(mission_id)
        deadline = time.monotonic() + wait_ms / 1000
        while True:
            left_ms = int((deadline - time.monotonic()) * 1000)
            block = min(left_ms, defaults.EVENTS_BLOCK_SLICE_MS) if left_ms > 0 else None
            reply = self.r.xread({key: after}, count=limit, block=block)
            entries = reply[0][1] if reply else []
            if entries or block is None:
                break
        return [ev.decode(i, f) for i, f in entries]

    def latest(self, limit: int, mission_id: str | None = None) -> list[dict]:
        """The newest ``limit`` events, oldest first."""
        entries = self.r.xrevrange(self.stream(mission_id), count=limit)
        return [ev.decode(i, f) for i, f in reversed(entries)]

    def last_id(self, mission_id: str | None = None) -> str:
        """The newest event's id (``0-0`` when there is none): where a follower starts."""
        entries = self.r.xrevrange(self.stream(mission_id), count=1)
        return entries[0][0] if entries else START
