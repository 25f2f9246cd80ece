"""A2A's JSON-RPC errors, and how an operation's :class:`~tinytown.core.errors.Problem` becomes one.

The codes are A2A's (the same in 1.0 and 0.3); 1.0 also names each error's ``reason`` in a
``google.rpc.ErrorInfo`` detail, which :mod:`.wire` adds. The message is always our own sentence
(the one REST puts in a problem's ``detail``), so the calling agent learns what to fix.

A denial is not an A2A error: it is answered with HTTP 401 or 403 (as A2A asks of transports) and
a JSON-RPC error whose code, outside JSON-RPC's reserved range, is that same status.
"""

from __future__ import annotations

from dataclasses import dataclass

from tinytown.core import rpc
from tinytown.core.errors import Problem


@dataclass(frozen=True)
class Kind:
    code: int
    reason: str  # A2A 1.0's ErrorInfo reason


TASK_NOT_FOUND = Kind(-32001, "TASK_NOT_FOUND")
TASK_NOT_CANCELABLE = Kind(-32002, "TASK_NOT_CANCELABLE")
PUSH_NOT_SUPPORTED = Kind(-32003, "PUSH_NOTIFICATION_NOT_SUPPORTED")
UNSUPPORTED_OPERATION = Kind(-32004, "UNSUPPORTED_OPERATION")
CONTENT_TYPE_NOT_SUPPORTED = Kind(-32005, "CONTENT_TYPE_NOT_SUPPORTED")
EXTENDED_CARD_NOT_CONFIGURED = Kind(-32007, "EXTENDED_AGENT_CARD_NOT_CONFIGURED")
VERSION_NOT_SUPPORTED = Kind(-32009, "VERSION_NOT_SUPPORTED")
INVALID_REQUEST = Kind(rpc.INVALID_REQUEST, "INVALID_REQUEST")
METHOD_NOT_FOUND = Kind(rpc.METHOD_NOT_FOUND, "METHOD_NOT_FOUND")
INVALID_PARAMS = Kind(rpc.INVALID_PARAMS, "INVALID_PARAMS")
INTERNAL_ERROR = Kind(rpc.INTERNAL_ERROR, "INTERNAL_ERROR")
UNAUTHENTICATED = Kind(401, "UNAUTHENTICATED")
PERMISSION_DENIED = Kind(403, "PERMISSION_DENIED")

DENIALS = (UNAUTHENTICATED, PERMISSION_DENIED)


class A2AError(Exception):
    """Answer the call with this error. ``status`` is what REST would have answered (the audit
    line's status); ``field`` names the argument at fault, when one is."""

    def __init__(self, kind: Kind, message: str, *, status: int = 400, field: str | None = None):
        super().__init__(message)
        self.kind, self.message, self.status, self.field = kind, message, status, field

    @property
    def code(self) -> int:
        return self.kind.code

    @property
    def denied(self) -> bool:
        return self.kind in DENIALS

    @property
    def http_status(self) -> int:
        """A denial's own status; every other JSON-RPC error travels in a 200."""
        return self.status if self.denied else 200


def invalid(message: str, field: str | None = None) -> A2AError:
    return A2AError(INVALID_PARAMS, message, status=422, field=field)


def from_problem(
    problem: Problem,
    *,
    not_found: Kind = INVALID_PARAMS,
    conflict: Kind = INVALID_PARAMS,
    message: str | None = None,
) -> A2AError:
    """The A2A error for an operation's problem: a lookup's 404 is ``not_found`` (TaskNotFound
    where the id is the A2A task's), a refused change's 409 is ``conflict``, a denial stays a
    denial, Redis trouble is an internal error; anything else the caller can fix is invalid
    params. ``message`` replaces the detail (for a 404 that must name both lookups)."""
    status = problem.status
    if status == 401:
        kind = UNAUTHENTICATED
    elif status == 403:
        kind = PERMISSION_DENIED
    elif status == 404:
        kind = not_found
    elif status == 409:
        kind = conflict
    elif status >= 500:
        kind = INTERNAL_ERROR
    else:
        kind = INVALID_PARAMS
    return A2AError(kind, message or problem.detail, status=status, field=problem.field)
