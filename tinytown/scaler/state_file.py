"""The state file: where the scaler's memory (:mod:`tinytown.scaler.memory`) lives between passes,
so ``--once`` from cron behaves like the loop.

One file per town, by default ``$XDG_STATE_HOME/tinytown-scaler/<town>/state.json``, written
atomically after each pass; a file written for another town is never used or replaced. A lock
next to it (``state.json.lock``) lets one pass act at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

from tinytown.scaler.defaults import STATE_FILE
from tinytown.scaler.errors import ConfigError
from tinytown.scaler.log import log
from tinytown.scaler.memory import State
from tinytown.scaler.model import Config
from tinytown.scaler.settings import ENV_PREFIX


def state_path(config: Config, environ: Mapping[str, str], town: str) -> Path:
    """``--state-file``, else a file of the town's own under $XDG_STATE_HOME (~/.local/state)."""
    if config.state_file:
        return Path(os.path.expanduser(config.state_file))
    base = environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    # The town comes from townhall: never let it name a path outside the directory.
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", town)
    return Path(base) / STATE_FILE.format(town="_" + safe if safe.startswith(".") else safe)


class StateOfAnotherTown(ConfigError):
    """The state file belongs to another town; it is neither used nor replaced."""

    def __init__(self, path: Path, state_town: str, town: str):
        self.path, self.state_town, self.town = path, state_town, town
        super().__init__(
            f"state file {path} belongs to town {state_town!r}, not {town!r} (the town this "
            f"scaler serves); refusing to use or replace it. Give each town its own state file "
            f"(--state-file or {ENV_PREFIX}STATE_FILE), or delete {path} if town "
            f"{state_town!r} is no longer scaled from here"
        )


def load_state(path: Path, town: str) -> State:
    """The town's state from ``path``; empty when the file is missing (or unreadable, logged).
    Raises StateOfAnotherTown when the file names another town."""
    try:
        data = json.loads(path.read_text())
        state = State.from_json(data)
    except FileNotFoundError:
        return State(town=town)
    except (OSError, ValueError, TypeError, AttributeError) as err:
        log(
            "warning",
            "state_unreadable",
            path=str(path),
            error=str(err),
            action="starting from empty state",
        )
        return State(town=town)
    if state.town and state.town != town:
        raise StateOfAnotherTown(path, state.town, town)
    state.town = town
    return state


def save_state(path: Path, state: State, now: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".state-", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump(state.to_json(now), fh, indent=1, sort_keys=True)
    os.replace(tmp, path)


@contextlib.contextmanager
def pass_lock(path: Path):
    """Yields True when this process holds the pass lock, False when another pass holds it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path.with_name(path.name + ".lock"), "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
