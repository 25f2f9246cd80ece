"""``tt init`` and ``tt status``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tinytown.cli.common import add_json_flag, guard_redis, open_town, print_json
from tinytown.config import TOWN_NAME_RE, default_town_name, load_config, town_dir
from tinytown.config.exposure import exposure
from tinytown.connection.target import resolve_target
from tinytown.core import defaults
from tinytown.core.clis import PRESETS
from tinytown.core.errors import ConfigError, TinytownError
from tinytown.core.states import rest_state


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "init",
        help="create tinytown.toml in the town directory",
        description="Write tinytown.toml (with every coding-CLI preset) "
        "and ignore .tt/ in .gitignore. "
        "Nothing else is needed: Redis starts on first use.",
    )
    p.add_argument(
        "--name",
        type=_town_name,
        help="town name, 1-100 of A-Z a-z 0-9 . _ - starting with a letter or digit; namespaces "
        "Redis keys (default: the directory name)",
    )
    p.add_argument(
        "--cli",
        type=_preset,
        default=defaults.DEFAULT_CLI,
        help=f"default coding CLI, a preset: {', '.join(sorted(PRESETS))} (default: %(default)s)",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing tinytown.toml")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser(
        "status",
        help="show the town: Redis, agents and tasks by state",
        description="Connect to the town (starting its own Redis if needed) and summarise it.",
    )
    add_json_flag(p)
    p.set_defaults(func=cmd_status)


def toml_string(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def render_config(name: str, default_cli: str) -> str:
    clis = "\n".join(
        f"[agent_clis.{toml_string(n) if '-' in n else n}]\ncommand = {toml_string(c)}\n"
        for n, c in PRESETS.items()
    )
    return f"""# Tinytown town configuration. Every key is optional; see README.md "Configuration".
name = {toml_string(name)}
default_cli = {toml_string(default_cli)}
max_agents = {defaults.MAX_AGENTS}

[redis]
# With no url, the town runs its own Redis on a unix socket. REDIS_URL overrides this table.
use_socket = true
socket_path = "{defaults.REDIS_SOCKET_PATH}"
persist = false

[townhall]
bind = "{defaults.TOWNHALL_BIND}"
rest_port = {defaults.TOWNHALL_PORT}
request_timeout_ms = {defaults.TOWNHALL_REQUEST_TIMEOUT_MS}

[townhall.auth]
# `tt auth add-key NAME` adds an API key here (and sets mode = "api_key"); see docs/api.md.
mode = "none"

[agent]
idle_timeout_secs = {defaults.IDLE_TIMEOUT_SECS}
heartbeat_interval_secs = {defaults.HEARTBEAT_INTERVAL_SECS}
# while idle; default 6 × heartbeat_interval_secs (an idle worker's death is seen in 3 of them)
# idle_heartbeat_secs = {defaults.HEARTBEAT_INTERVAL_SECS * defaults.IDLE_HEARTBEAT_FACTOR}
claim_timeout_secs = {defaults.CLAIM_TIMEOUT_SECS}
max_attempts = {defaults.MAX_ATTEMPTS}
task_timeout_secs = {defaults.TASK_TIMEOUT_SECS}
drain_timeout_secs = {defaults.DRAIN_TIMEOUT_SECS}

# Coding CLIs: each reads the prompt on stdin. Add your own with command, workdir and env.
{clis}"""


def ignore_runtime_dir(root: Path) -> bool:
    """Append ``.tt/`` to ``.gitignore`` unless it is already ignored. Returns True if written."""
    path = root / ".gitignore"
    lines = path.read_text().splitlines() if path.exists() else []
    if any(line.strip() in (".tt", ".tt/", "/.tt", "/.tt/") for line in lines):
        return False
    prefix = "" if not lines or path.read_text().endswith("\n") else "\n"
    with path.open("a") as fh:
        fh.write(f"{prefix}.tt/\n")
    return True


GUNICORN_SHIM = """\
# Written by `tt init`: plain `gunicorn townhall:app` run in this directory applies [townhall]
# from tinytown.toml (bind, port, workers, timeouts, TLS) and townhall's start-up rules.
from tinytown.gunicorn_conf import *  # noqa: F401,F403
"""


def write_gunicorn_shim(root: Path) -> Path | None:
    """``gunicorn.conf.py`` (gunicorn reads it from the working directory by default), if absent."""
    path = root / "gunicorn.conf.py"
    if path.exists():
        return None
    path.write_text(GUNICORN_SHIM)
    return path


def _town_name(value: str) -> str:
    if not TOWN_NAME_RE.match(value):
        raise argparse.ArgumentTypeError(
            f"{value[:100]!r} is not a town name (1-100 of A-Z a-z 0-9 . _ -, starting with a "
            "letter or digit)"
        )
    return value


def _preset(value: str) -> str:
    if value not in PRESETS:
        raise argparse.ArgumentTypeError(
            f"{value[:100]!r} is not a preset ({', '.join(sorted(PRESETS))}); for a CLI of your "
            "own, add an [agent_clis.NAME] table to tinytown.toml and set default_cli"
        )
    return value


def cmd_init(args: argparse.Namespace) -> int:
    root = town_dir(args.town)
    if not root.is_dir():
        raise TinytownError(f"town directory {root} does not exist")
    path = root / defaults.CONFIG_FILENAME
    if path.exists() and not args.force:
        raise TinytownError(f"{path} already exists; use --force to overwrite it")
    name = args.name or default_town_name(root)
    text = render_config(name, args.cli)
    previous = path.read_text() if path.is_file() else None  # (--force: put back on a failure)
    try:  # never leave a half-made town, or a file the town itself would reject
        path.write_text(text)
        load_config(root)
        ignored = ignore_runtime_dir(root)
        shim = write_gunicorn_shim(root)
    except (ConfigError, OSError) as err:
        if previous is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(previous)
        if isinstance(err, OSError):
            where = err.filename or root
            raise TinytownError(
                f"cannot write the town in {root}: {where}: {err.strerror}; nothing was changed"
            ) from None
        raise
    print(f"Initialised town {name!r} in {root}")
    print(
        f"  wrote {path}"
        + (f"\n  wrote {shim}" if shim else "")
        + ("\n  added .tt/ to .gitignore" if ignored else "")
    )
    print("  next: gunicorn townhall:app   (townhall; starts the town's Redis on first use)")
    print("        python -m agent_worker   (a worker; exits after [agent] idle_timeout_secs)")
    return 0


def liveness(agent, now_ms: int) -> str:
    """The state, or ``dead (was working, no heartbeat for 42 s)`` past the agent's window."""
    if not agent.active or agent.alive(now_ms):
        return agent.state
    age = agent.heartbeat_age_secs(now_ms)
    return f"dead (was {agent.state}, " + (
        "never beat)" if age is None else f"no heartbeat for {age:.0f} s)"
    )


@guard_redis
def cmd_status(args: argparse.Namespace) -> int:
    town = open_town(args)
    if (exposed := exposure(town.config.file)) is not None:
        print(f"tt: warning: {exposed.message}", file=sys.stderr)
    version = town.server_version()
    agents = town.agents.all()
    now_ms = town.agents.now_ms()
    task_counts = town.tasks.counts()
    _, backlog_len = town.tasks.backlog(limit=0)
    data = {
        "name": town.config.name,
        "root": str(town.config.root),
        "redis_url": resolve_target(town.config).display,
        "redis_version": version,
        "agent_count": len(agents),
        "agents": [
            {
                "id": a.id,
                "name": a.name,
                "state": rest_state(a.state),  # as REST's /v1/status spells it
                "alive": a.alive(now_ms),
                "current_task": a.current_task,
                "last_heartbeat": a.last_heartbeat,
                "heartbeat_age_secs": a.heartbeat_age_secs(now_ms),
                "heartbeat_interval_secs": a.heartbeat_interval_secs or None,
            }
            for a in agents
        ],
        "tasks": task_counts,
        "backlog": backlog_len,
    }
    if args.json:
        print_json(data)
        return 0
    print(f"Town {data['name']}  ({data['root']})")
    print(f"Redis {data['redis_url']}  version {data['redis_version']}")
    print(f"Agents: {len(agents)}")
    for a in agents:
        task = f"  task {a.current_task}" if a.current_task else ""
        print(f"  {a.name:<20} {liveness(a, now_ms):<9} {a.id}{task}")
    print("Tasks:  " + "  ".join(f"{s} {n}" for s, n in task_counts.items()))
    print(f"Backlog: {backlog_len}")
    return 0
