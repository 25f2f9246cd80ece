"""Nudges to a worker over Redis pub/sub, so that it acts now rather than at its next heartbeat.

- ``cancel <task id>``: published when a running task is cancelled (``TaskStore.cancel``); the
  worker running it stops its CLI at once.
- ``stop``: published when an agent is stopped through REST; an idle worker leaves its blocking
  read and checks its controls at once (a working one finishes its task first, as before).

Best effort by design: a worker that is not listening at that moment (starting, reconnecting)
misses the nudge and learns the same from Redis at its next heartbeat or control check, which
remain the source of truth. Nothing here changes state. With Redis ACLs, the users of townhall,
``tt`` and the workers need access to the channels ``tt:<town>:control:*`` (``&tt:*``); without
it, nudges are not sent (the worker logs ``control_unavailable`` once) and everything still works
at heartbeat speed.
"""

from __future__ import annotations

import redis

from tinytown.core.keys import Keys

CANCEL, STOP = "cancel", "stop"


def publish(r: redis.Redis, keys: Keys, agent_id: str, kind: str, task_id: str = "") -> bool:
    """Send a nudge; False if it could not be sent (the change it reports is made already, and
    the worker finds it anyway: a failed nudge must not fail the request that made it)."""
    try:
        r.publish(keys.control(agent_id), f"{kind} {task_id}".strip())
    except redis.RedisError:  # a dropped connection, or an ACL user without channel access
        return False
    return True


def parse(message: str) -> tuple[str, str]:
    """``"cancel <id>"`` → ``("cancel", "<id>")``; ``"stop"`` → ``("stop", "")``."""
    kind, _, task_id = message.partition(" ")
    return kind, task_id


class Listener:
    """A worker's subscription to its control channel. Raises ``redis.RedisError`` when Redis is
    away or the channel is not allowed; close it and make a new one to listen again."""

    def __init__(self, r: redis.Redis, keys: Keys, agent_id: str):
        self._pubsub = r.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(keys.control(agent_id))

    def next(self, timeout: float) -> tuple[str, str] | None:
        """The next nudge as ``(kind, task id)``, or None after ``timeout`` seconds."""
        message = self._pubsub.get_message(timeout=timeout)
        return parse(message["data"]) if message is not None else None

    def close(self) -> None:
        self._pubsub.close()
