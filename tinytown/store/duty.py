"""A background duty's loop: townhall's keeper, mission dispatcher and notifier threads.

It runs ``step()`` until stopped, waiting the seconds the step returns (None: at once, for a
step that blocks on Redis itself). A Redis error is logged once (``event=<name>_redis_error``),
retried every ``retry_secs``, and its end logged (``event=<name>_resumed``); any other error is
logged (``event=<name>_error``) and retried too: a bug in one step must not end the duty.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping

import redis


def run_duty(
    name: str,
    step: Callable[[], float | None],
    stopped: threading.Event,
    log: logging.Logger,
    *,
    retry_secs: float,
    fields: Mapping[str, str] = {},  # noqa: B006 (read only)
    describe: Callable[[Exception], str] | None = None,
) -> None:
    """``fields``: extra ``key=value`` pairs for the log lines; ``describe(err)``: the text an
    unexpected error is logged with (default: its traceback)."""
    extra = "".join(f" {k}={v}" for k, v in fields.items())
    failing = False
    while not stopped.is_set():
        try:
            wait = step()
            if failing:
                log.info("event=%s_resumed%s", name, extra)
            failing = False
        except redis.RedisError as err:
            if not failing:
                log.warning("event=%s_redis_error%s detail=%s", name, extra, json.dumps(str(err)))
            failing, wait = True, retry_secs
        except Exception as err:
            if describe is None:
                log.exception("event=%s_error%s", name, extra)
            else:
                log.error("event=%s_error%s %s", name, extra, describe(err))
            wait = retry_secs
        if wait:
            stopped.wait(wait)
