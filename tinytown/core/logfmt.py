"""One log line per event, ``key=value``, as the worker and the scaler write them on stderr.

``ts=2026-12-06T10:00:00.123456+00:00 [level=warning] event=task_started task=… attempt=2``:
the time and the event first, then the fields in the order given. A field that is None or ""
is left out; a value with a space, a quote, ``=``, a line break, any other control character or
a bidi override is written as a JSON string (those escaped: a value from outside cannot colour a
terminal, forge a line or show reversed); lists and mappings as JSON; anything else with
``str()``.
"""

from __future__ import annotations

import json
import os
import re
import sys

from tinytown.core.clock import now, to_rfc3339

_needs_quotes = re.compile(
    '[ "=\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]'
).search


def value_text(value) -> str:
    if type(value) is str:  # (the usual case, first: the worker writes lines on its task path)
        text = value
    elif isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=str)
    else:
        text = str(value)
    if _needs_quotes(text):
        return json.dumps(text)
    return text


def line(event: str, *, level: str | None = None, **fields) -> str:
    parts = [f"ts={to_rfc3339(now())}"]
    if level:
        parts.append(f"level={level}")
    parts.append(f"event={event}")
    parts += [
        f"{key}={value_text(value)}"
        for key, value in fields.items()
        if value is not None and value != ""
    ]
    return " ".join(parts)


def audit_line(**fields) -> str:
    """One audit record as a JSON line, with its time (RFC 3339): townhall's audit log and
    ``tt mcp-stdio``'s write the same records."""
    return json.dumps({"ts": to_rfc3339(now()), "event": "audit", **fields}, separators=(",", ":"))


def audit_result(status: int) -> str:
    """How an audited call ended, by the HTTP status it had (or would have had)."""
    return "success" if status < 300 else "denied" if status in (401, 403) else "error"


def emit(text: str, stream=None) -> None:
    """Write one line in one ``write(2)``: safe in a signal handler, and threads never
    interleave."""
    fd = (stream or sys.stderr).fileno()
    os.write(fd, (text + "\n").encode("utf-8", errors="replace"))
