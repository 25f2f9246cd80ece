"""Errors that carry their fix, and the exit codes they map to."""

from __future__ import annotations

import enum


class ExitStatus(enum.IntEnum):
    """Exit codes shared by ``tt``, ``townhall`` start-up and ``agent_worker``.

    0 is a clean exit, including a worker's idle exit. Scripts may rely on these numbers.
    """

    SUCCESS = 0
    FAILURE = 1  # the command ran and failed (e.g. a task in the wrong state)
    USAGE = 2  # bad command line (argparse's own code)
    CONFIG_ERROR = 3  # tinytown.toml or an environment override is invalid
    REDIS_UNAVAILABLE = 4  # Redis unreachable, refused the credentials, or too old
    NOT_FOUND = 5  # the named task, agent or mission does not exist
    ADDRESS_IN_USE = 6  # townhall's address is taken (another townhall?)
    INTERRUPTED = 130  # Ctrl-C


class TinytownError(Exception):
    """Base class: ``str(err)`` is a complete, user-facing sentence."""

    exit_status = ExitStatus.FAILURE


class ConfigError(TinytownError):
    """Invalid configuration; the message names the key, the value and the expected form."""

    exit_status = ExitStatus.CONFIG_ERROR


class RedisUnavailable(TinytownError):
    """Redis could not be reached, refused the credentials or is too old."""

    exit_status = ExitStatus.REDIS_UNAVAILABLE


class NotFound(TinytownError):
    """A task, agent or mission that does not exist."""

    exit_status = ExitStatus.NOT_FOUND


class AddressInUse(TinytownError):
    """Townhall's bind address is already taken by another process."""

    exit_status = ExitStatus.ADDRESS_IN_USE


class Full(TinytownError):
    """A bounded store is full (an agent's inbox): nothing was added."""


class InvalidTransition(TinytownError):
    """A state change that the record's current state does not allow."""

    def __init__(self, kind: str, record_id: str, state: str, action: str):
        self.kind, self.record_id, self.state, self.action = kind, record_id, state, action
        super().__init__(f"{kind} {record_id} is {state}; it cannot be {action}")


class Problem(Exception):
    """A caller's request that cannot be done as asked: an HTTP status, a complete sentence
    (``detail``) and, where one argument is at fault, its ``field``. REST answers it as a problem
    document, MCP as a tool error, A2A as a JSON-RPC error, all with the same sentence."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        field: str | None = None,
        headers: dict | None = None,
        **extra,
    ):
        super().__init__(detail)
        self.status, self.detail, self.field = status, detail, field
        self.headers, self.extra = headers or {}, extra
