"""Where townhall's own log lines go: stderr, one line per event, beside gunicorn's.

Under gunicorn nothing configures Python's logging, so the ``tinytown.*`` loggers had no
handler: audit lines (INFO) were dropped and warnings came out unformatted. :func:`configure`
gives them one stderr handler:

- ``tinytown.audit``: the JSON record as it is (``{"ts": …, "event": "audit", …}``), one per line,
  for a log shipper to parse;
- every other ``tinytown.*`` logger: ``ts=… level=… logger=… <message>``, the message being
  ``event=… key=value …`` as everywhere else in townhall.

Called once per process by ``townhall.py``; tests that build an app directly keep pytest's
capture. Idempotent.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

_MARK = "_tinytown_handler"


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name == "tinytown.audit":
            return message
        ts = datetime.fromtimestamp(record.created, UTC).isoformat()
        line = f"ts={ts} level={record.levelname.lower()} logger={record.name} {message}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure(stream=None) -> None:
    """Send ``tinytown.*`` records at INFO and above to ``stream`` (stderr), once."""
    root = logging.getLogger("tinytown")
    if any(getattr(h, _MARK, False) for h in root.handlers):
        return
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_Formatter())
    setattr(handler, _MARK, True)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False  # not twice, if something configures the root logger too
