"""What every ``tt`` command shares: loading the town and printing results."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import redis

from ..config import Config, load_config
from ..errors import RedisUnavailable
from ..redis_url import redact_text, resolve_target
from ..store import Town

TASK_ID_HELP = "task id (as printed by `tt backlog add` or `tt task list`)"


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
            raise RedisUnavailable(f"lost Redis at {target.display}: {redact_text(str(err), target.url)}") from None

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
