"""The scaler's log: one ``key=value`` line per event on stderr, written by the town's one logfmt
writer (:mod:`tinytown.core.logfmt`, shared with the worker). Debug events show only with
``--verbose``."""

from __future__ import annotations

from typing import Any

from tinytown.core import logfmt

_verbose = False


def set_verbose(verbose: bool) -> None:
    """Show debug events too (``-v``)."""
    global _verbose
    _verbose = verbose


def log(level: str, event: str, **fields: Any) -> None:
    """``ts=… level=… event=… key=value …`` in one write; a debug event only when verbose."""
    if level == "debug" and not _verbose:
        return
    logfmt.emit(logfmt.line(event, level=level, **fields))
