"""Agents' inboxes (upstream spec §4.4): JSON messages on two lists per agent.

Normal messages are ``RPUSH``ed to ``inbox:<id>`` (FIFO); urgent ones ``LPUSH``ed to
``urgent:<id>``; each list takes at most ``INBOX_MAX_MESSAGES`` (then a send is refused). A
worker reads the first ``PROMPT_MESSAGES_MAX`` of both with its claim (the docket's script),
puts them into the task's prompt and removes them once the CLI runs; the rest wait for its next
task. The documents themselves are built and read
by :mod:`tinytown.core.messages`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import redis

from tinytown.core import defaults
from tinytown.core.errors import Full
from tinytown.core.keys import Keys
from tinytown.core.messages import build_message, decode
from tinytown.core.records import SUPERVISOR_ID
from tinytown.store import control

# Move one message to another agent's list atomically, rewritten (its "to").
# KEYS: 1 source list, 2 destination list; ARGV: 1 raw message, 2 rewritten message, 3 urgent,
# 4 the most the destination takes (full: nothing moves, 0 is returned).
_MOVE = """
if redis.call('LLEN', KEYS[2]) >= tonumber(ARGV[4]) then return 0 end  -- the target is full
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
if ARGV[3] == '1' then redis.call('LPUSH', KEYS[2], ARGV[2])
else redis.call('RPUSH', KEYS[2], ARGV[2]) end
return 1
"""


# Add a message unless the list already holds the most it takes (ARGV[3]; 0 = no bound), or,
# with ARGV[4] = "1" (nobody takes from it: the conductor's), drop its oldest to make room.
# KEYS: 1 the list; ARGV: 1 the message, 2 "1" = at the head (urgent), 3 the most, 4 trim.
# Returns the new length, or -1 (full).
_PUSH = """
local most = tonumber(ARGV[3])
if most > 0 and ARGV[4] ~= '1' and redis.call('LLEN', KEYS[1]) >= most then return -1 end
local n
if ARGV[2] == '1' then n = redis.call('LPUSH', KEYS[1], ARGV[1])
else n = redis.call('RPUSH', KEYS[1], ARGV[1]) end
if most > 0 and n > most then
  if ARGV[2] == '1' then redis.call('LTRIM', KEYS[1], 0, most - 1)
  else redis.call('LTRIM', KEYS[1], -most, -1) end
  n = most
end
return n
"""


class InboxStore:
    def __init__(self, r: redis.Redis, keys: Keys):
        self.r, self.keys = r, keys
        self._move = r.register_script(_MOVE)
        self._push = r.register_script(_PUSH)

    def lists(self, agent_id: str) -> tuple[str, str]:
        """The agent's two lists, urgent first (the order a worker reads them in)."""
        return self.keys.urgent(agent_id), self.keys.inbox(agent_id)

    def send(
        self,
        to_agent_id: str,
        text: str,
        *,
        kind: str = "task",
        sender: str = SUPERVISOR_ID,
        urgent: bool = False,
    ) -> dict:
        """Put a message on an agent's inbox (urgent: at the head of its urgent list); Full when
        that list holds ``INBOX_MAX_MESSAGES``. A ``shutdown`` always goes to the head of the
        urgent list, whatever the lists hold (the worker looks only at their first messages),
        and nudges the agent's worker to look at once (an idle worker otherwise sees new
        messages only at its next heartbeat). The conductor's inbox, which nobody takes from,
        keeps its newest ``INBOX_MAX_MESSAGES``."""
        message = build_message(sender, to_agent_id, text, kind)
        shutdown = message.get("type") == "shutdown"
        urgent = urgent or shutdown
        key = self.keys.urgent(to_agent_id) if urgent else self.keys.inbox(to_agent_id)
        most = 0 if shutdown else defaults.INBOX_MAX_MESSAGES
        trim = int(to_agent_id == SUPERVISOR_ID)
        if self._push(keys=[key], args=[json.dumps(message), int(urgent), most, trim]) < 0:
            raise Full(
                f"the {'urgent ' if urgent else ''}inbox of agent {to_agent_id} holds {most} "
                "messages, the most it takes; its worker reads them with its next tasks "
                f"({defaults.PROMPT_MESSAGES_MAX} a task), or `tt reclaim` moves them"
            )
        if shutdown:
            control.publish(self.r, self.keys, to_agent_id, control.STOP)
        return message

    def peek(self, agent_id: str, limit: int = 100) -> tuple[list[dict], int, int]:
        """The first ``limit`` normal messages, the inbox length and the urgent length."""
        pipe = self.r.pipeline(transaction=False)
        pipe.lrange(self.keys.inbox(agent_id), 0, limit - 1)
        pipe.llen(self.keys.inbox(agent_id))
        pipe.llen(self.keys.urgent(agent_id))
        raw, total, urgent = pipe.execute()
        return [decode(m) for m in raw], total, urgent

    def raw(self, agent_id: str, limit: int = -1) -> list[tuple[str, str]]:
        """``(list key, raw message)`` of the agent's messages, urgent ones first."""
        pipe = self.r.pipeline(transaction=False)
        for key in self.lists(agent_id):
            pipe.lrange(key, 0, limit if limit < 0 else limit - 1)
        return [
            (key, raw) for key, raws in zip(self.lists(agent_id), pipe.execute()) for raw in raws
        ]

    def lengths(self, agent_ids: Iterable[str]) -> list[tuple[int, int]]:
        """``(inbox length, urgent length)`` per agent, one round trip."""
        ids = list(agent_ids)
        if not ids:
            return []
        pipe = self.r.pipeline(transaction=False)
        for agent_id in ids:
            pipe.llen(self.keys.inbox(agent_id))
            pipe.llen(self.keys.urgent(agent_id))
        out = pipe.execute()
        return list(zip(out[::2], out[1::2]))

    def urgent_total(self, agent_ids: Iterable[str]) -> int:
        return sum(urgent for _, urgent in self.lengths(agent_ids))

    def remove(self, list_key: str, raw: str) -> bool:
        """Take one message off a list; False if it was no longer there."""
        return bool(self.r.lrem(list_key, 1, raw))

    def move(self, list_key: str, raw: str, target_id: str, *, urgent: bool) -> bool:
        """Move one message to another agent's inbox, addressed to it, atomically; False if it
        was no longer where it was, or the target's list holds ``INBOX_MAX_MESSAGES``."""
        message = decode(raw)
        message["to"] = target_id
        dest = self.keys.urgent(target_id) if urgent else self.keys.inbox(target_id)
        return bool(
            self._move(
                keys=[list_key, dest],
                args=[raw, json.dumps(message), int(urgent), defaults.INBOX_MAX_MESSAGES],
            )
        )
