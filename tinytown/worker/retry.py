"""Riding out a Redis restart: a worker's calls to Redis, retried with backoff while it is away.

A worker survives Redis being unreachable for ``--redis-retry-secs`` (a restart, a failover):
each call is retried, ``REDIS_BACKOFF_FIRST_SECS`` apart at first and doubling up to
``REDIS_BACKOFF_MAX_SECS``. Past the budget :class:`RedisGone` ends the worker with exit code 4.
A draining worker waits no longer than its ``drain_timeout_secs``: it is leaving anyway.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from tinytown.core import defaults


class RedisGone(Exception):
    """Redis stayed unreachable for longer than the retry budget."""


class RedisRetry:
    """``with_redis(step, fn, *args)``: call ``fn``, retrying while Redis is unreachable.

    ``step`` names the call in the log lines (``redis_unavailable``, ``redis_reconnected``);
    ``draining`` is truthy while the worker is leaving (its shorter budget applies then).
    """

    def __init__(
        self,
        retry_secs: float,
        drain_timeout_secs: float,
        log: Callable[..., None],
        draining: Callable[[], object],
    ):
        self.retry_secs, self.drain_timeout_secs = retry_secs, drain_timeout_secs
        self.log, self.draining = log, draining

    def __call__(self, step: str, fn, *args, **kwargs):
        """Call ``fn``; while Redis is unreachable, retry with backoff until the budget ends.

        Raises :class:`RedisGone` then.
        """
        since, delay = None, defaults.REDIS_BACKOFF_FIRST_SECS
        while True:
            try:
                result = fn(*args, **kwargs)
            except (redis.ConnectionError, redis.TimeoutError) as err:
                if since is None:
                    since = time.monotonic()
                    self.log(
                        "redis_unavailable", step=step, detail=str(err), retry_secs=self.retry_secs
                    )
                budget = self.retry_secs
                if self.draining():
                    budget = min(self.retry_secs, self.drain_timeout_secs)
                if time.monotonic() - since >= budget:
                    raise RedisGone(
                        f"no answer from Redis for {budget:.0f} s (last error: {err})"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, defaults.REDIS_BACKOFF_MAX_SECS)
                continue
            if since is not None:
                after_secs = round(time.monotonic() - since, 2)
                self.log("redis_reconnected", step=step, after_secs=after_secs)
            return result

    def wait_after_error(self, step: str, err: Exception, ping: Callable[[], object]) -> None:
        """After ``err`` broke a call that must not simply be repeated: wait until ``ping``
        (a PING through the worker's store) answers."""
        self.log("redis_error", step=step, detail=str(err))
        self(step, ping)
