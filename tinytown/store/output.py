"""A task's CLI output in Redis, readable from anywhere while the task runs: the stream
``tt:<town>:task:<id>:output`` (the worker's local log file stays the full copy).

Each entry's id is the byte offset where its text ends in the task's output (``<end>-0``, over
every attempt, each attempt's output after its header line), so:

- the stream is capped in bytes, exactly and without a counter: an append trims the entries that
  end more than ``TASK_OUTPUT_MAX_BYTES`` before the newest (``XTRIM MINID``), which keeps at most
  that much plus one chunk;
- a reader sees what it missed: an entry whose text starts past the end of the one before it (or
  past the reader's ``after``) follows output that was trimmed, or dropped by a worker that could
  not reach Redis (its text then begins with ``[output lost: N bytes]``);
- ids stay increasing across attempts and workers (the append script continues from the newest).

When the task reaches a final state its worker appends an *end* entry (``<end>-<n>``, no text):
it wakes waiting readers at once and tells them the last output is in. Every write sets the key to
expire ``TASK_OUTPUT_TTL_SECS`` later, so no task's output outlives its last write by more.

A reader's page is one script, an atomic snapshot of the task's state, its worker's and the
stream, so ``finished`` means what it says: the task is in a final state, the page reaches the
newest entry, and nothing more will be written — the newest entry is the end entry, or no live
worker has the task as its ``current_task`` (it died, or the task never ran). A CLI that reported
its result itself (``tt task complete``) and still runs is not finished until its worker is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from tinytown.core import defaults
from tinytown.core.keys import Keys
from tinytown.core.states import TERMINAL_TASK_STATES
from tinytown.store.scripts import execute_pipelined, queue_script

START = "0-0"
NEWEST = "$"
_MAX_ID = "18446744073709551615-18446744073709551615"  # nothing can come after it

_OFFSET = "local function offset(id) return tonumber(string.match(id, '^%d+')) end\n"

# KEYS: the stream. ARGV: text, bytes dropped before it, max bytes, ttl secs. Returns the id.
_APPEND = (
    _OFFSET
    + """
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local ends = (newest[1] and offset(newest[1][1]) or 0) + tonumber(ARGV[2]) + #ARGV[1]
local id = redis.call('XADD', KEYS[1], string.format('%d-0', ends), 'text', ARGV[1])
local oldest = ends - tonumber(ARGV[3])
if oldest > 0 then
  redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d', oldest))
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
return id
"""
)

# KEYS: the stream. ARGV: ttl secs. The end entry: the newest offset, the next sequence number.
_FINISH = (
    _OFFSET
    + """
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local at = newest[1] and offset(newest[1][1]) or 0
local id = redis.call('XADD', KEYS[1], string.format('%d-*', at), 'end', '1')
redis.call('EXPIRE', KEYS[1], ARGV[1])
return id
"""
)

# KEYS: the task hash, the stream. ARGV: after, limit, the agent key prefix, the max id.
# Returns false for an unknown task, else the snapshot a page is made from.
_PAGE = """
local task = redis.call('HMGET', KEYS[1], 'state', 'assigned_to')
if not task[1] then return false end
local agent = {false, false}
if task[2] and task[2] ~= '' then
  agent = redis.call('HMGET', ARGV[3] .. task[2], 'current_task', 'alive_until')
end
local clock = redis.call('TIME')
local newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local newest_id = newest[1] and newest[1][1] or '0-0'
local after = ARGV[1]
if after == '$' then after = newest_id end
local entries = {}
if after ~= ARGV[4] then
  entries = redis.call('XRANGE', KEYS[2], '(' .. after, '+', 'COUNT', ARGV[2])
end
return {task[1], agent[1] or '', agent[2] or '0',
        clock[1] * 1000 + math.floor(clock[2] / 1000), after, newest_id, entries}
"""


@dataclass
class OutputPage:
    """What a reader gets: the chunks after its ``after`` and where to go on from."""

    task_id: str
    chunks: list[tuple[str, str]]  # (id, text), oldest first
    after: str  # the ``after`` this page was read from (``$`` resolved to the newest id)
    next_after: str
    complete: bool  # the page reaches the newest entry there was
    finished: bool  # the task is in a final state and its output is complete
    truncated: bool  # some output between ``after`` and this page's end was trimmed or lost


def offset(entry_id: str) -> int:
    """The byte offset an id stands for (its first part)."""
    return int(entry_id.split("-", 1)[0])


def page_of(task_id: str, reply: list, limit: int) -> OutputPage:
    """A page from the snapshot the page script returned (pure)."""
    state, current_task, alive_until, now_ms, after, newest_id, entries = reply
    chunks, truncated = [], False
    reached = offset(after)
    for entry_id, fields in entries:
        text = fields.get("text", "")
        if offset(entry_id) - len(text.encode()) > reached:
            truncated = True
        reached = max(reached, offset(entry_id))
        if "text" in fields:
            chunks.append((entry_id, text))
    complete = len(entries) < limit or entries[-1][0] == newest_id
    ended = not newest_id.endswith("-0")  # the newest entry is an end (a chunk's id ends in -0)
    writing = current_task == task_id and int(alive_until or 0) > int(now_ms)
    finished = state in TERMINAL_TASK_STATES and complete and (ended or not writing)
    next_after = entries[-1][0] if entries else after
    return OutputPage(task_id, chunks, after, next_after, complete, finished, truncated)


class TaskOutput:
    """The output streams of a town's tasks."""

    def __init__(
        self,
        r: redis.Redis,
        keys: Keys,
        *,
        max_bytes: int = defaults.TASK_OUTPUT_MAX_BYTES,
        ttl_secs: int = defaults.TASK_OUTPUT_TTL_SECS,
    ):
        self.r, self.keys = r, keys
        self.max_bytes, self.ttl_secs = max_bytes, ttl_secs
        self._append = r.register_script(_APPEND)
        self._finish = r.register_script(_FINISH)
        self._page = r.register_script(_PAGE)

    def stream(self, task_id: str) -> str:
        return self.keys.task_output(task_id)

    # -- the worker ---------------------------------------------------------------------------

    def append(self, task_id: str, texts: list[str], *, lost_bytes: int = 0) -> list[str]:
        """Append each text as one chunk, in one round trip; ``lost_bytes`` were dropped before
        the first (the offsets count them, so readers see the gap). Returns the ids."""
        key, bounds = self.stream(task_id), (self.max_bytes, self.ttl_secs)

        def build(pipe) -> None:
            for i, text in enumerate(texts):
                args = [text, lost_bytes if i == 0 else 0, *bounds]
                queue_script(pipe, self._append, [key], args)

        return execute_pipelined(self.r, build, (self._append,))

    def queue_append(self, pipe, task_id: str, text: str, lost_bytes: int = 0) -> None:
        """Queue one chunk of an :meth:`append` on ``pipe`` (``scripts.queue_script``)."""
        args = [text, lost_bytes, self.max_bytes, self.ttl_secs]
        queue_script(pipe, self._append, [self.stream(task_id)], args)

    def finish(self, task_id: str) -> str:
        """The task reached a final state: append its end entry (waking readers) and let the
        stream expire ``ttl_secs`` from now."""
        return self._finish(keys=[self.stream(task_id)], args=[self.ttl_secs])

    def queue_finish(self, pipe, task_id: str) -> None:
        """Queue a :meth:`finish` on ``pipe`` as a bare ``EVALSHA`` (``scripts.queue_script``)."""
        queue_script(pipe, self._finish, [self.stream(task_id)], [self.ttl_secs])

    # -- readers ------------------------------------------------------------------------------

    def page(self, task_id: str, after: str = START, limit: int = 100) -> OutputPage | None:
        """Up to ``limit`` entries after ``after`` (``$``: only what comes next), with whether
        the output is finished or was truncated; None for an unknown task."""
        keys = [self.keys.task(task_id), self.stream(task_id)]
        reply = self._page(keys=keys, args=[after, limit, self.keys.agent_prefix, _MAX_ID])
        if reply is None:
            return None
        reply[-1] = [(i, dict(zip(f[::2], f[1::2]))) for i, f in reply[-1]]  # the entries
        return page_of(task_id, reply, limit)

    def tail(self, task_id: str, chunks: int = 8) -> str:
        """The newest ``chunks`` chunks of a task's output, as one text (the status page)."""
        entries = self.r.xrevrange(self.stream(task_id), count=chunks)
        return "".join(fields.get("text", "") for _, fields in reversed(entries))

    def wait(self, task_id: str, after: str, wait_ms: int) -> bool:
        """Wait up to ``wait_ms`` for an entry after ``after`` (whether one came): blocking
        ``XREAD``s of at most ``EVENTS_BLOCK_SLICE_MS`` each, as :meth:`Events.read` does."""
        key = self.stream(task_id)
        deadline = time.monotonic() + wait_ms / 1000
        while True:
            left_ms = int((deadline - time.monotonic()) * 1000)
            block = min(left_ms, defaults.EVENTS_BLOCK_SLICE_MS) if left_ms > 0 else None
            if self.r.xread({key: after}, count=1, block=block):
                return True
            if block is None:
                return False
