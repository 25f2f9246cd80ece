"""Time as the scaler computes with it: Unix seconds (floats), read from and written as RFC 3339.

Reading goes through the town's one timestamp parser (:func:`tinytown.core.clock.parse_rfc3339`);
times from townhall and Docker must carry their zone (``Z`` or an offset).
"""

from __future__ import annotations

import datetime as dt

from tinytown.core.clock import parse_rfc3339


def iso(epoch: float) -> str:
    """RFC 3339, UTC, whole seconds: ``2027-01-15T08:00:00+00:00``."""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="seconds")


def epoch_secs(text: str) -> float | None:
    """Epoch seconds of an RFC 3339 time with a zone (any fraction; Docker writes nanoseconds,
    kept to the microsecond); None if it is not one."""
    moment = parse_rfc3339(text, require_zone=True)
    return None if moment is None else moment.timestamp()
