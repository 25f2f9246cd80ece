"""One reader of the town's event feed per process, so that waiting costs Redis nothing.

Every state change appends to ``tt:<town>:events`` in the same transaction that makes it
(:mod:`tinytown.store.events`). The pump holds one blocking ``XREAD`` on that stream, on a
connection of its own, for up to ``PUMP_BLOCK_SECS`` at a time; when entries arrive it bumps its
``seq`` and wakes everyone in the process waiting on it. A quiet town therefore costs one
command per ``PUMP_BLOCK_SECS`` per process, however many duties and long-polls wait: the mission
dispatcher, the keeper, the sampler and ``GET /api/scaling?wait=`` all wait here instead of
asking Redis on a timer.

Waiters compare ``seq`` numbers, never event ids: ``wait(seen)`` returns as soon as ``seq``
differs from ``seen`` (or the timeout passes). A waiter that needs the events themselves reads
them from its own cursor when woken. The pump learns of an event a moment after it is written;
a reader that must see every write made before it asks :meth:`caught_up` (one command). While
Redis is unreachable the pump retries every ``PUMP_RETRY_SECS``, is not ``healthy`` (so callers
ask Redis themselves and get its error), and bumps ``seq`` when it is back, since anything may
have changed meanwhile.
"""

from __future__ import annotations

import json
import logging
import threading

import redis

from tinytown.core import defaults
from tinytown.core.events import OLDEST

log = logging.getLogger("tinytown.townhall")


class EventPump:
    def __init__(self, town, block_secs: float = defaults.PUMP_BLOCK_SECS):
        """``town``: the :class:`tinytown.store.Town` whose feed this reads."""
        self.town, self.block_secs = town, block_secs
        self.stream = town.keys.events
        pool = town.redis.connection_pool
        options = dict(pool.connection_kwargs)
        # The read blocks up to block_secs: the socket must wait longer, and the blocking read
        # itself is the connection's health check.
        options.update(socket_timeout=block_secs + 10, health_check_interval=0)
        self.reader = redis.Redis(
            connection_pool=redis.ConnectionPool(
                connection_class=pool.connection_class, max_connections=1, **options
            )
        )
        self.cond = threading.Condition()
        self.seq = 0  # bumped on every batch of new events (and after Redis comes back)
        self.healthy = False
        self.cursor: str | None = None
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> EventPump:
        self.thread = threading.Thread(target=self.run, name="tinytown-event-pump", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        self._bump()

    def wait(self, seen: int, timeout: float | None) -> int:
        """Block until ``seq`` differs from ``seen`` (or ``timeout`` seconds pass, or the pump
        stops); returns the current ``seq``."""
        with self.cond:
            self.cond.wait_for(lambda: self.seq != seen or self.stopped.is_set(), timeout=timeout)
            return self.seq

    def run(self) -> None:
        failing = False
        while not self.stopped.is_set():
            try:
                if self.cursor is None:
                    entries = self.reader.xrevrange(self.stream, count=1)
                    with self.cond:
                        self.cursor = entries[0][0] if entries else OLDEST
                self.healthy = True
                if failing:
                    log.info("event=event_pump_resumed")
                    failing = False
                    self._bump()  # the town may have changed while Redis was away
                reply = self.reader.xread(
                    {self.stream: self.cursor},
                    count=defaults.PUMP_READ_COUNT,
                    block=int(self.block_secs * 1000),
                )
                if reply and reply[0][1]:
                    self._bump(cursor=reply[0][1][-1][0])
            except redis.RedisError as err:
                self.healthy = False
                if not failing:
                    log.warning("event=event_pump_redis_error detail=%s", json.dumps(str(err)))
                    failing = True
                    self._bump()  # waiters should ask Redis now, and see the error
                self.stopped.wait(defaults.PUMP_RETRY_SECS)
        self.reader.close()

    def caught_up(self) -> tuple[int, bool]:
        """The current ``seq``, and whether the pump has every event the feed holds now: one
        ``XREVRANGE … COUNT 1`` (on the town's pool, not the pump's blocked connection). False
        also when it cannot tell (not reading yet, or an event delivered meanwhile)."""
        newest = self.town.redis.xrevrange(self.stream, count=1)
        with self.cond:
            if self.cursor is None:
                return self.seq, False
            return self.seq, (newest[0][0] if newest else OLDEST) == self.cursor

    def _bump(self, cursor: str | None = None) -> None:
        """A new ``seq`` (and where the feed was read up to, with it), and every waiter woken."""
        with self.cond:
            if cursor is not None:
                self.cursor = cursor
            self.seq += 1
            self.cond.notify_all()
