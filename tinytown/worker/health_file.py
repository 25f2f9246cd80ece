"""The worker's health file: evidence, kept inside its container, that its heartbeat reaches Redis.

A worker started with ``TINYTOWN_HEALTH_FILE=PATH`` writes ``PATH`` after every heartbeat that
Redis acknowledged; without the variable it writes nothing. The file holds the worker's own
``heartbeat_interval_secs`` and ``dead_after_heartbeats``, and its modification time is the
moment of the last acknowledged heartbeat, so a checker needs no configuration:

    python -m tinytown.worker.health_file [PATH]    # PATH defaults to $TINYTOWN_HEALTH_FILE

exits 0 while the file was written within ``dead_after_heartbeats`` x ``heartbeat_interval_secs``
(the same "dead" as everywhere else in Tinytown), and 1 when it is older, missing or unreadable,
printing one line that says which. That is the contract of a Docker ``HEALTHCHECK``: the scaler
gives every worker container it starts this command as its healthcheck, so a container's
Docker health is the worker's own word on whether its heartbeats still land, independent of what
townhall reports.

A heartbeat costs one ``utime`` of the file; the content is written (to a temporary file, then
renamed into place) only on the first heartbeat of a process or when the file has gone. Writing
never stops the worker: a failure is reported once through ``on_error`` until a write succeeds.

Only the standard library and :mod:`tinytown.core.defaults` are imported, so the check starts fast.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable

from tinytown.core.defaults import DEAD_AFTER_HEARTBEATS

ENV_VAR = "TINYTOWN_HEALTH_FILE"
EXIT_FRESH = 0
EXIT_STALE = 1  # Docker: unhealthy (2 is reserved by Docker)


class HealthFile:
    """Writes the health file after each acknowledged heartbeat; a no-op without a path."""

    def __init__(
        self,
        path: str | None,
        heartbeat_interval_secs: float,
        on_error: Callable[..., None] | None = None,
    ):
        self.path = path or None
        self.heartbeat_interval_secs = heartbeat_interval_secs
        self.on_error = on_error
        self._written = False  # the content is written once per process, then only touched
        self._failing = False

    @classmethod
    def from_env(
        cls,
        heartbeat_interval_secs: float,
        on_error: Callable[..., None] | None = None,
        environ: dict[str, str] | None = None,
    ) -> HealthFile:
        """The health file ``$TINYTOWN_HEALTH_FILE`` names (none when it is unset or empty)."""
        env = os.environ if environ is None else environ
        return cls(env.get(ENV_VAR, "").strip() or None, heartbeat_interval_secs, on_error)

    def beat(self) -> None:
        """Record a heartbeat that Redis acknowledged. Never raises."""
        if self.path is None:
            return
        try:
            if self._written:
                try:
                    os.utime(self.path)
                except FileNotFoundError:  # removed from outside: write it again
                    self._write()
            else:
                self._write()
                self._written = True
        except OSError as err:
            if not self._failing and self.on_error is not None:
                self.on_error(path=self.path, detail=f"{type(err).__name__}: {err}")
            self._failing = True
            return
        self._failing = False

    def _write(self) -> None:
        body = json.dumps(
            {
                "heartbeat_interval_secs": self.heartbeat_interval_secs,
                "dead_after_heartbeats": DEAD_AFTER_HEARTBEATS,
                "pid": os.getpid(),
            }
        )
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w") as fh:
                fh.write(body + "\n")
            os.replace(tmp, self.path)
        except OSError:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise


def _positive_number(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def check(path: str, now: float | None = None) -> tuple[bool, str]:
    """Is the health file at ``path`` fresh? Returns ``(fresh, one line saying why)``."""
    now = time.time() if now is None else now
    try:
        written_at = os.stat(path).st_mtime
        with open(path) as fh:
            data = json.loads(fh.read())
    except FileNotFoundError:
        return (
            False,
            f"no health file at {path}: the worker has not had a heartbeat acknowledged yet",
        )
    except (OSError, ValueError) as err:
        return False, f"health file {path} is unreadable: {err}"
    interval = data.get("heartbeat_interval_secs") if isinstance(data, dict) else None
    dead_after = data.get("dead_after_heartbeats") if isinstance(data, dict) else None
    if not _positive_number(interval) or not _positive_number(dead_after):
        return False, (
            f"health file {path} does not hold a positive heartbeat_interval_secs and "
            f"dead_after_heartbeats: {data!r}"[:300]
        )
    age, limit = now - written_at, dead_after * interval
    if age > limit:
        return False, (
            f"last acknowledged heartbeat {age:.1f}s ago, over {limit:g}s "
            f"({dead_after:g} x {interval:g}s)"
        )
    return True, f"last acknowledged heartbeat {max(age, 0.0):.1f}s ago (limit {limit:g}s)"


def main(argv: list[str] | None = None) -> int:
    """``python -m tinytown.worker.health_file [PATH]``: exit 0 fresh, 1 stale, missing or unset."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or (args and args[0].startswith("-")):
        print(
            "usage: python -m tinytown.worker.health_file [PATH]  (default: $TINYTOWN_HEALTH_FILE)"
        )
        return EXIT_STALE
    path = args[0] if args else os.environ.get(ENV_VAR, "").strip()
    if not path:
        print(f"{ENV_VAR} is not set: the worker writes no health file")
        return EXIT_STALE
    fresh, reason = check(path)
    print(reason)
    return EXIT_FRESH if fresh else EXIT_STALE


if __name__ == "__main__":
    sys.exit(main())
