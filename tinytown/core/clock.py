"""Time as the town writes and reads it: UTC, RFC 3339 with ``+00:00`` (readers also take ``Z``
and up to nanosecond fractions, as upstream writes). The one timestamp parser of the worker,
townhall and the scaler."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_ZONE = re.compile(r"([Zz]|[+-]\d\d:\d\d)$")


def now() -> datetime:
    return datetime.now(UTC)


def to_rfc3339(ts: datetime) -> str:
    return (ts if ts.tzinfo is UTC else ts.astimezone(UTC)).isoformat()


def parse_rfc3339(text: str | None, *, require_zone: bool = False) -> datetime | None:
    """A time from ``text``; None if it is not one. Without a zone it is taken as UTC, unless
    ``require_zone`` (a time from another program, which must say)."""
    if not text or not isinstance(text, str):
        return None
    t = text.strip()
    if require_zone and not _ZONE.search(t):
        return None
    t = t.replace("Z", "+00:00").replace("z", "+00:00")
    if "." in t:  # Python parses at most 6 fraction digits; upstream writes 9
        head, _, rest = t.partition(".")
        digits = "".join(c for c in rest if c.isdigit())
        t = f"{head}.{digits[:6]}{rest[len(digits) :]}"
    try:
        ts = datetime.fromisoformat(t)
    except ValueError:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def epoch_us(ts: datetime) -> int:
    return int(ts.timestamp() * 1_000_000)
