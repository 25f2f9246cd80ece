"""``tt``: operate a town from the shell.

Exit codes (also in the README): 0 success; 1 the command failed (e.g. a task in the wrong
state, an ambiguous short id); 2 bad command line; 3 invalid configuration, or no town here (no
tinytown.toml); 4 Redis unreachable, refusing the credentials or too old; 5 the named task, agent
or mission does not exist; 6 townhall's address is in use (townhall's start-up); 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tinytown import __version__
from tinytown.cli import (
    agent,
    auth,
    backlog,
    events,
    mcp,
    mission,
    notify,
    redis_cmd,
    task,
    town,
    worker,
)
from tinytown.cli.common import Parser, undecodable
from tinytown.core.errors import ExitStatus, TinytownError

COMMAND_GROUPS = (
    town,
    backlog,
    task,
    agent,
    mission,
    events,
    notify,
    auth,
    redis_cmd,
    worker,
    mcp,
)

EPILOG = """exit codes:
  0    success
  1    the command failed (e.g. a task in the wrong state, an ambiguous short id)
  2    bad command line (an argument out of range, an empty text, a bad items file)
  3    invalid configuration (tinytown.toml or an environment override), or no
       town here: run `tt init`, or give --town DIR or TINYTOWN_TOWN_DIR; or a town
       directory tt may not read or write
  4    Redis unreachable, refused the credentials, or older than 7.0
  5    the named task, agent or mission does not exist
  6    townhall's address is in use (townhall's start-up, not tt)
  130  interrupted

Task, agent and mission ids may be shortened to their first 8 or more hex digits.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="tt",
        description="Operate a Tinytown town: its Redis, backlog, tasks, agents, missions, "
        "events, notifications and API keys. Every command but `tt init` needs a town: a "
        "directory with tinytown.toml.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tt {__version__}")
    parser.add_argument(
        "-t",
        "--town",
        metavar="DIR",
        help="town directory (default: $TINYTOWN_TOWN_DIR, else the current directory)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # What is printed may come from anyone (a task's result, a message): never fail on it.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args = parser.parse_args(argv)
    for key, value in vars(args).items():  # every string argument, whatever its own rule
        if isinstance(value, str) and (why := undecodable(value)) is not None:
            parser.error(f"argument {key.replace('_', '-')} {why}")
    try:
        return int(args.func(args) or 0)
    except TinytownError as err:
        print(f"tt: error: {err}", file=sys.stderr)
        return int(err.exit_status)
    except KeyboardInterrupt:
        return int(ExitStatus.INTERRUPTED)
    except BrokenPipeError:
        return int(ExitStatus.SUCCESS)
    except PermissionError as err:  # the town directory, .tt/ or a file in it: not ours to use
        print(f"tt: error: {_os_error(err)}; check who owns the town directory", file=sys.stderr)
        return int(ExitStatus.CONFIG_ERROR)
    except OSError as err:  # (a disk full, a file gone under us: one line, not a traceback)
        print(f"tt: error: {_os_error(err)}", file=sys.stderr)
        return int(ExitStatus.FAILURE)


def _os_error(err: OSError) -> str:
    where = f"{err.filename}: " if err.filename else ""
    return f"{where}{err.strerror or err}"


if __name__ == "__main__":
    sys.exit(main())
