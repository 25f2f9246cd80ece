"""How the scaler fails: its exceptions, each with a message that says what to fix, and its exit
codes.

The scaler keeps exit codes of its own (``ExitStatus``), not the worker's
(:mod:`tinytown.core.errors`): 4 and 5 mean townhall and Docker here, the dependencies a scaler
pass needs. ``docs/scaler.md`` lists them; a test holds the two together.
"""

from __future__ import annotations

import enum
import re


class ExitStatus(enum.IntEnum):
    """Exit codes of the scaler; scripts and systemd units may rely on these numbers."""

    SUCCESS = 0
    USAGE = 2  # bad command line (argparse's own code)
    CONFIG_ERROR = 3  # an invalid flag, environment variable or TOML key; a state file that
    # cannot be written or belongs to another town
    TOWNHALL_UNAVAILABLE = 4  # /api/scaling or /v1/agents unreachable, non-200 or malformed
    DOCKER_UNAVAILABLE = 5  # every outpost failed (unreachable, or every start refused)
    INTERRUPTED = 130  # Ctrl-C during --once or status; a second signal in the loop


class ConfigError(Exception):
    """Invalid configuration; the message names the key, the value and the expected form."""


class Malformed(ValueError):
    """A townhall response that does not match the contract; its message says what is wrong."""


class TownhallError(Exception):
    """Townhall unreachable, not 200, or its answer malformed; the message says which and why."""


class OutpostError(Exception):
    """A Docker engine that could not be reached or refused a call; the message names the
    outpost, the call and the reason."""


def short_reason(err: Exception) -> str:
    """The useful part of a requests or Docker SDK error: its errno text when there is one; a
    bearer credential it quotes (an invalid header, say) shown as ``Bearer ****``."""
    text = re.sub(r"(?i)(bearer\s+)[^\s'\"]+", r"\1****", str(err))
    errno = re.search(r"\[Errno -?\d+\] [^'\")\]]+", text)
    if errno:
        return errno.group(0).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(err).__name__}: {first}"[:300]
