"""Task tokens: what a coding CLI holds to report its own task to townhall over REST.

For each attempt, the worker makes a random token (``tttask.<task id>.<secret>``), passes it to
the CLI as ``TINYTOWN_TASK_TOKEN`` and stores only its SHA-256 under ``task_token:<task id>``,
expiring after the task timeout plus ``TASK_TOKEN_GRACE_SECS``. Townhall accepts the token for
``POST /v1/tasks/<that id>/complete`` or ``/fail`` only, and only while the stored hash is this
token's and the task is ``running``; the worker deletes the hash when the CLI exits (only its
own: an attempt taken over meanwhile has stored another), and a worker's claim of the task for
a new attempt deletes it (a frozen worker judged dead, whose CLI still runs, reports nothing
once another attempt has the task). The secret has 256 random bits, so a
fast hash is as safe as Argon2 here and costs a townhall request nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

import redis

from tinytown.core import defaults
from tinytown.core.keys import Keys
from tinytown.core.records import is_uuid
from tinytown.core.states import TASK_RUNNING
from tinytown.store.scripts import queue_script

PREFIX = "tttask"

# Delete the hash only if it is still this token's (a later attempt may have replaced it). With
# a second key, the attempt's end is counted there once: its CLI's seconds added only by the
# call that revoked the token (a retry after a lost reply finds it gone and adds nothing).
# KEYS: 1 the token, [2 a float counter]; ARGV: 1 the token's digest, [2 seconds].
_REVOKE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if KEYS[2] then redis.call('INCRBYFLOAT', KEYS[2], ARGV[2]) end
return 1
"""


def new_secret() -> str:
    """A token's random part (made ahead by the worker, off the way to its CLI's start)."""
    return secrets.token_urlsafe(defaults.TASK_TOKEN_SECRET_BYTES)


def new_token(task_id: str, secret: str | None = None) -> str:
    """A fresh token for one attempt of ``task_id`` (``secret``: from :func:`new_secret`, used
    once)."""
    return f"{PREFIX}.{task_id}.{secret or new_secret()}"


def task_of(token: str) -> str | None:
    """The task id a task token names (None: not a task token)."""
    parts = token.split(".")
    if len(parts) == 3 and parts[0] == PREFIX and is_uuid(parts[1]) and parts[2]:
        return parts[1]
    return None


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class TaskTokens:
    def __init__(self, r: redis.Redis, keys: Keys):
        self.r, self.keys = r, keys
        self._revoke = r.register_script(_REVOKE)

    @classmethod
    def of(cls, town) -> TaskTokens:
        """The task tokens of a :class:`tinytown.store.Town`."""
        return cls(town.redis, town.keys)

    def issue(self, task_id: str, token: str, ttl_secs: int) -> None:
        """Store the token's hash for its task (replacing an earlier attempt's)."""
        self.r.set(self.keys.task_token(task_id), digest(token), ex=ttl_secs)

    def valid(self, task_id: str, token: str) -> bool:
        """The token is its task's current one and the task is running. One round trip."""
        pipe = self.r.pipeline(transaction=False)
        pipe.get(self.keys.task_token(task_id))
        pipe.hget(self.keys.task(task_id), "state")
        stored, state = pipe.execute()
        return (
            stored is not None
            and hmac.compare_digest(stored, digest(token))
            and state == TASK_RUNNING
        )

    def revoke(self, task_id: str, token: str) -> bool:
        """Delete the token's hash if it is still stored; True if it was."""
        return bool(self._revoke(keys=[self.keys.task_token(task_id)], args=[digest(token)]))

    def queue_revoke(
        self, pipe, task_id: str, token: str, count: tuple[str, float] | None = None
    ) -> None:
        """Queue a :meth:`revoke` on ``pipe`` as a bare ``EVALSHA`` (``scripts.queue_script``);
        ``count``: ``(counter key, seconds)`` added only if this revoke deleted the token."""
        keys, args = [self.keys.task_token(task_id)], [digest(token)]
        if count is not None:
            keys.append(count[0])
            args.append(round(count[1], 3))
        queue_script(pipe, self._revoke, keys, args)
