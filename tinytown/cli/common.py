"""What every ``tt`` command shares: loading the town and printing results."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from tinytown.config import Config, is_town, load_config, town_dir
from tinytown.connection.target import resolve_target
from tinytown.core import defaults, inputs
from tinytown.core.errors import (
    ConfigError,
    ExitStatus,
    NotFound,
    RedisUnavailable,
    TinytownError,
)
from tinytown.core.records import Agent
from tinytown.core.urls import redact_text
from tinytown.store import Town
from tinytown.store.short_ids import match_short_id, short_id_digits

TASK_ID_HELP = (
    "task id, or its first 8 or more hex digits (as printed by `tt backlog add` or `tt task list`)"
)


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error: ``tt backlog add: error: … (see tt backlog add --help)``,
    exit status 2, instead of a usage block and a second line."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def undecodable(value: str) -> str | None:
    """Why a command-line string is not UTF-8 text (Python keeps such bytes as U+DC80–U+DCFF)."""
    for i, ch in enumerate(value):
        if "\udc80" <= ch <= "\udcff":
            return f"is not valid UTF-8 (byte 0x{ord(ch) - 0xDC00:02X} at character {i})"
    return None


def rule(check: Callable[[str, str], Any], what: str) -> Callable[[str], Any]:
    """An argparse ``type`` that applies a rule of :mod:`tinytown.core.inputs` (argparse turns the
    error into a one-line message and exit status 2)."""

    def parse(value: str) -> Any:
        if (why := undecodable(value)) is not None:
            raise argparse.ArgumentTypeError(why)
        try:
            return check(value, what)
        except inputs.InputError as err:  # "field 'x' is …" → "is …": argparse names the argument
            raise argparse.ArgumentTypeError(str(err).replace(f"field {what!r} ", "")) from None

    parse.__name__ = what  # argparse names the type in some messages
    return parse


TEXT = rule(inputs.text, "text")


def _some_text(value: str, field: str) -> str:
    if not value.strip():
        raise inputs.InputError(field, f"field {field!r} must not be empty")
    return inputs.text(value, field)


SOME_TEXT = rule(_some_text, "text")  # as TEXT, and not empty (as REST refuses it)
AGENT = rule(inputs.reference, "agent")
NAME = rule(inputs.name, "name")
REPO = rule(inputs.repo, "repo")
BRANCH = rule(inputs.branch, "branch")
TAGS = rule(lambda v, f: inputs.tags([t.strip() for t in v.split(",") if t.strip()], f), "tags")


class BadInput(TinytownError):
    """An argument that parses but cannot be used (exit 2, as argparse's own errors)."""

    exit_status = ExitStatus.USAGE


def whole_number(low: int, high: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number from ``low`` to ``high`` (one line, exit 2 else)."""

    def parse(value: str) -> int:
        digits = value.strip().removeprefix("-")
        if not (digits.isascii() and digits.isdigit() and len(digits) <= 12) or not (
            low <= int(value) <= high
        ):
            raise argparse.ArgumentTypeError(
                f"must be a whole number from {low} to {high}, got {value[:40]!r}"
            )
        return int(value)

    parse.__name__ = "whole number"
    return parse


LIMIT = whole_number(1, defaults.TOWNHALL_PAGE_LIMIT_MAX)  # as REST's limit
OFFSET = whole_number(0, 10**9)


def require_town(explicit: str | None) -> Path:
    """The town directory (``--town``, ``$TINYTOWN_TOWN_DIR``, the current directory), or
    ConfigError (exit 3) saying how to get one: never a new town, nor its Redis, by accident."""
    root = town_dir(explicit)
    if is_town(root):
        return root
    named_by = (
        "--town" if explicit else "TINYTOWN_TOWN_DIR" if os.environ.get("TINYTOWN_TOWN_DIR") else ""
    )
    where = f"in {root} (from {named_by})" if named_by else f"here ({root})"
    config = root / defaults.CONFIG_FILENAME
    what = (
        "does not exist"
        if not root.is_dir()
        else f"holds {defaults.CONFIG_FILENAME} as something that is not a file"
        if config.exists()
        else f"has no {defaults.CONFIG_FILENAME}"
    )
    raise ConfigError(
        f"no town {where}: the directory {what}; run `tt init` "
        f"{'there' if named_by else 'here'} to make one, or pass --town DIR or set "
        "TINYTOWN_TOWN_DIR to use an existing town"
    )


def config_of(args: argparse.Namespace) -> Config:
    """The town's configuration; every command but ``tt init`` comes through here (the one
    place that refuses a directory that is not a town)."""
    return load_config(require_town(args.town))


def open_town(args: argparse.Namespace) -> Town:
    """Load the config and connect, starting the town's own Redis if needed."""
    return Town.connect(config_of(args))


def resolve_agent(town: Town, ref: str) -> Agent:
    """An agent by id, name, nickname or 4-character short id (the store's rule, upstream's),
    or by a unique short id of 8 or more hex digits (what ``tt agent list`` shows)."""
    try:
        return town.agents.resolve(ref)
    except NotFound:
        if short_id_digits(ref) is None:
            raise
    return town.agents.get(match_short_id("agent", ref, town.agents.ids()))


def guard_redis(func):
    """Turn a Redis failure mid-command into a clear RedisUnavailable (exit 4)."""

    def wrapper(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except (redis.ConnectionError, redis.TimeoutError) as err:
            target = resolve_target(config_of(args))
            raise RedisUnavailable(
                f"lost Redis at {target.display}: {redact_text(str(err), target.url)}"
            ) from None
        except redis.ResponseError as err:  # (an input no rule caught: said, not a traceback)
            target = resolve_target(config_of(args))
            raise TinytownError(f"Redis refused: {redact_text(str(err), target.url)}") from None

    wrapper.__doc__ = func.__doc__
    return wrapper


def add_page_flags(parser: argparse.ArgumentParser) -> None:
    """``--limit`` (1–1000, default 100, as REST's) and ``--offset`` for a list command."""
    parser.add_argument(
        "--limit",
        type=LIMIT,
        default=defaults.TOWNHALL_PAGE_LIMIT,
        help="at most this many, 1 to 1000 (default: %(default)s)",
    )
    parser.add_argument(
        "--offset", type=OFFSET, default=0, help="skip this many first (default: 0)"
    )


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def human(value: Any) -> str:
    """A value as a person reads it, never as Python writes it: lists joined with ", ",
    booleans as yes/no, None as nothing."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(human(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={human(v)}" for k, v in value.items())
    return str(value)


def print_fields(record: dict[str, Any]) -> None:
    """``key: value`` lines, keys aligned; empty values (None, "", []) are left out. A value of
    several lines keeps them under its first."""
    shown = {k: human(v) for k, v in record.items() if not _empty(v)}
    width = max((len(k) for k in shown), default=0)
    for key, text in shown.items():
        lines = text.splitlines() or [""]
        print(f"{key:>{width}}: {lines[0]}")
        for line in lines[1:]:
            print(f"{'':>{width}}  {line}")


def _empty(value: Any) -> bool:
    return value is None or (
        isinstance(value, str | list | tuple | set | frozenset | dict) and not value
    )


def print_table(rows: list[list[str]], headers: list[str]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]
    for row in [headers, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())


def short(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
