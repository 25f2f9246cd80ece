"""What every ``tt`` command shares: loading the town and printing results."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

import redis

from tinytown.config import Config, load_config
from tinytown.connection.target import resolve_target
from tinytown.core import inputs
from tinytown.core.errors import RedisUnavailable
from tinytown.core.urls import redact_text
from tinytown.store import Town

TASK_ID_HELP = "task id (as printed by `tt backlog add` or `tt task list`)"


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
AGENT = rule(inputs.reference, "agent")
NAME = rule(inputs.name, "name")
REPO = rule(inputs.repo, "repo")
BRANCH = rule(inputs.branch, "branch")
TAGS = rule(lambda v, f: inputs.tags([t.strip() for t in v.split(",") if t.strip()], f), "tags")


def config_of(args: argparse.Namespace) -> Config:
    return load_config(args.town)


def open_town(args: argparse.Namespace) -> Town:
    """Load the config and connect, starting the town's own Redis if needed."""
    return Town.connect(config_of(args))


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

    wrapper.__doc__ = func.__doc__
    return wrapper


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def print_table(rows: list[list[str]], headers: list[str]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]
    for row in [headers, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())


def short(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
