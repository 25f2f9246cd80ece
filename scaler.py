"""Tinytown scaler: turns townhall's scaling signal into agent-worker containers on Docker.

Each pass reads ``GET /api/scaling`` and ``GET /v1/agents`` from townhall, lists this town's worker
containers on every outpost (a Docker engine: the local one, or remote ones over ``tcp://`` with
TLS or ``ssh://``), and then:

- **starts** workers until the live count reaches ``desired_agents`` clamped to
  [``min_workers``, ``max_workers``], on the first outpost in preference order that has room, whose
  circuit breaker is closed, that is not holding starts after a crash loop, and that keeps the
  hourly cost under ``cost_cap_hourly``. Workers share one named volume per outpost,
  ``tinytown-<town>-workspace`` at ``/workspace/.tt`` (git checkouts and task logs), which the
  scaler creates and never removes;
- **drains** (SIGTERM) an *idle* surplus worker only when the signal says ``scale_down`` or
  ``scale_to_zero``, the surplus has lasted ``scale_down_after_passes`` passes and
  ``scale_down_cooldown_secs`` have passed since the last start. A worker that is Working, Starting
  or holds a task is never touched, nor one whose container Docker does not report healthy; the
  agent list and the container's health are read again just before each SIGTERM: workers retire
  themselves when idle (exit 0);
- **restarts** a running worker whose agent is not alive (townhall's ``alive``, else a heartbeat
  older than ``unhealthy_after_secs``) or is in Error, *and* whose container Docker reports
  unhealthy, for ``restart_after_failures`` passes in a row; if the restart fails (or the
  container has used up ``max_restarts``), it marks the container in the state file, stops
  counting it as capacity and runs the notification hook;
- **holds starts** on an outpost whose workers exited non-zero within ``quick_exit_secs`` of
  starting ``crash_loop_after_exits`` times in a row (bad configuration, Redis unreachable), for
  the breaker backoff, and runs the notification hook once with the exit code and the last log
  lines;
- **removes** exited workers, keeping the newest ``keep_exited`` per outpost for their logs.

Destructive actions need consistent evidence from two witnesses: townhall, and the container
itself, through the Docker healthcheck the scaler gives every worker (``python -P -m
tinytown.worker.health_file``, which passes while the worker's heartbeats reach Redis). When townhall's
answers contradict each other (the signal's ``active_agents``/``busy_agents`` against
``/v1/agents``) the pass drains, restarts and gives up on nobody; when townhall and a container's
health disagree, that container is left alone; either is logged as ``evidence_inconsistent`` and
reported (``--json``, ``status``). Containers without a healthcheck are never restarted or drained
unless ``trust_townhall_alone`` is set (``evidence_missing`` says so).

If the signal is unreachable, not 200 or malformed, the pass does nothing at all. Containers are
found by their labels only (``tinytown.town``, ``tinytown.role=agent-worker``,
``tinytown.outpost``, ``tinytown.agent_id``); each new one gets a fresh UUID as
``TINYTOWN_AGENT_ID`` so it maps to exactly one agent record.

Configuration: command-line flags, then ``TINYTOWN_SCALER_<KEY>`` environment variables, then a
TOML file (``--config``), then the defaults below; ``python scaler.py --help`` lists every key and
``python scaler.py config`` prints the resolved configuration. Outposts are configured only in
the TOML file (``[[outposts]]``); without any, one outpost ``local`` uses the local engine
(``DOCKER_HOST`` or the default socket). Cooldowns, circuit breakers and health counters live in a
small JSON state file of the town's own, so ``--once`` from cron behaves like the loop; a state
file written for another town is never used or replaced (exit 3). See ``docs/scaler.md``.

Modes: ``run`` (default; loops every ``interval_secs`` until SIGTERM/SIGINT, or one pass with
``--once``), ``status`` (this town's containers, agents and cost) and ``config``. ``--dry-run``
prints the plan and changes nothing; ``--json`` prints one JSON object per pass on stdout.
Logs go to stderr, one ``key=value`` line per event.

Exit codes (``ExitStatus``): 0 success, and the loop's end on SIGTERM or SIGINT (it finishes the
current pass first); 2 bad command line; 3 bad configuration, or a state file that cannot be
written or belongs to another town (``--once``; nothing done); 4 townhall unavailable: scaling
signal or agent list unreachable, non-200 or malformed (``--once``); 5 Docker unavailable: every
outpost failed (``--once``); 130 interrupted: Ctrl-C during ``--once`` or ``status``, or a second
SIGTERM/SIGINT while the loop finishes its pass. The loop never exits on 4 or 5, nor on a state
file of another town: it logs and retries next interval.

Only the standard library, ``requests`` and ``docker`` are imported, so this file can be copied
onto a VM alone (Python >= 3.11). Sections, in order: defaults, logging, configuration, pure
policy (plain data in, decisions out; tested without Docker or HTTP), townhall client, Docker
outposts, notifications, reconcile (the ``Scaler`` class), ``status``, command line.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import enum
import fcntl
import importlib.util
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import docker
import docker.errors
import docker.tls
import docker.types
import requests


class ExitStatus(enum.IntEnum):
    """Exit codes of ``scaler.py``; scripts and systemd units may rely on these numbers."""

    SUCCESS = 0
    USAGE = 2  # bad command line (argparse's own code)
    CONFIG_ERROR = 3  # an invalid flag, environment variable or TOML key; a state file that
    # cannot be written or belongs to another town
    TOWNHALL_UNAVAILABLE = 4  # /api/scaling or /v1/agents unreachable, non-200 or malformed
    DOCKER_UNAVAILABLE = 5  # every outpost failed (unreachable, or every start refused)
    INTERRUPTED = 130  # Ctrl-C during --once or status; a second signal in the loop


# --- defaults (every one with its unit in its name) ---------------------------------------------
TOWNHALL_URL = "http://127.0.0.1:8080"
MIN_WORKERS = 0
MAX_WORKERS = 10
INTERVAL_SECS = 10.0  # Buildkite's scaler polls every 10 s; Nomad evaluates every 10 s
# Scale up at once, scale down slowly (peers: 5 min in KEDA, HPA and Nomad).
SCALE_DOWN_COOLDOWN_SECS = 300.0
SCALE_DOWN_AFTER_PASSES = 3  # a surplus must persist this many passes in a row (hysteresis)
KEEP_EXITED_PER_OUTPOST = 3
# Workers heartbeat every 5 s; 90 s is Docker HEALTHCHECK's 30 s x 3 and Gas Town's "3 missed".
UNHEALTHY_AFTER_SECS = 90.0
RESTART_AFTER_FAILURES = 3
MAX_RESTARTS_PER_CONTAINER = 3  # then mark it and notify instead of restarting forever
START_GRACE_SECS = 120.0  # a younger (or just restarted) container is not judged
RESTART_TIMEOUT_SECS = 30.0  # docker restart: SIGTERM, then SIGKILL after this (drain is 25 s)
BREAKER_BACKOFF_SECS = 30.0
BREAKER_BACKOFF_MAX_SECS = 600.0
# A worker that exits non-zero this soon after starting is crashing, not finishing: bad
# configuration exits 3 at once, Redis unreachable exits 4 after the worker's 60 s of retries.
QUICK_EXIT_SECS = 120.0
CRASH_LOOP_AFTER_EXITS = 3  # quick non-zero exits in a row that hold starts on an outpost
CRASH_LOG_LINES = 20  # log lines of the last crashed worker sent with the notification
# The worker image's town directory is /workspace and [agent] workspace_dir is .tt/workspace
# under it; the volume covers all of .tt (checkouts and task logs) because Docker would create a
# missing /workspace/.tt as root, where the worker (uid 10001) could not write its logs.
WORKSPACE_MOUNT = "/workspace/.tt"
WORKSPACE_VOLUME = "tinytown-{town}-workspace"
NO_WORKSPACE_VOLUME = "none"
WORKSPACE_INIT_MOUNT = "/tinytown-workspace"
HTTP_TIMEOUT_SECS = 5.0
DOCKER_TIMEOUT_SECS = 30.0
NOTIFY_TIMEOUT_SECS = 10.0
LOCAL_OUTPOST = "local"
STATE_FILE = "tinytown-scaler/{town}/state.json"  # under $XDG_STATE_HOME, else ~/.local/state
# Each worker container's own evidence of life: a Docker healthcheck that reads the health file
# the worker touches after every heartbeat Redis acknowledged (tinytown/worker/health_file.py). It is
# given at create, so derived images need nothing; -P keeps a checkout in /workspace from
# shadowing the installed package.
HEALTHCHECK = "python -P -m tinytown.worker.health_file"
IMAGE_HEALTHCHECK = "image"  # healthcheck = "image": pass none, the image's own applies
HEALTH_FILE_ENV = "TINYTOWN_HEALTH_FILE"  # read by the worker and by the healthcheck
HEALTH_FILE = "/tmp/tinytown-worker.health"  # inside the container, never on a shared volume
HEARTBEAT_INTERVAL_SECS = 5.0  # the workers' [agent] heartbeat_interval_secs default
HEALTHCHECK_TIMEOUT_SECS = 10.0  # a Python start on a loaded VM can take seconds
HEALTHCHECK_RETRIES = 2  # the file already allows 3 missed heartbeats; 2 checks in a row confirm
# /api/scaling and /v1/agents are read a moment apart: their agent counts may differ by this much
# (plus one per container still within its start grace) before the answers count as inconsistent.
EVIDENCE_TOLERANCE_AGENTS = 1
STATE_VERSION = 1

ENV_PREFIX = "TINYTOWN_SCALER_"
ROLE = "agent-worker"
ROLE_WORKSPACE = "workspace"  # the shared workspace volume
ROLE_WORKSPACE_INIT = "workspace-init"  # the one-off container that hands it to the image's user
LABEL_TOWN = "tinytown.town"
LABEL_ROLE = "tinytown.role"
LABEL_OUTPOST = "tinytown.outpost"
LABEL_AGENT_ID = "tinytown.agent_id"
LABEL_STARTED_AT = "tinytown.started_at"
LABEL_COST_PER_HOUR = "tinytown.cost_per_hour"
LIVE_STATUSES = frozenset({"created", "running", "restarting", "paused"})
HEALTH_STATUSES = frozenset({"starting", "healthy", "unhealthy"})  # Docker's; None: no healthcheck
EXITED_STATUSES = frozenset({"exited", "dead"})
AGENT_STATES = frozenset(
    {"Starting", "Idle", "Working", "Paused", "Draining", "Stopped", "Error", "Cold"}
)
ACTIVE_AGENT_STATES = frozenset({"Starting", "Idle", "Working", "Paused", "Draining"})
RECOMMENDATIONS = ("scale_up", "steady", "scale_down", "scale_to_zero")
DOWN_RECOMMENDATIONS = frozenset({"scale_down", "scale_to_zero"})
RESERVED_ENV = frozenset({"TINYTOWN_AGENT_ID", "TINYTOWN_AGENT_NAME"})
SECRET_NAME_RE = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL", re.IGNORECASE)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
VOLUME_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]+$")  # Docker's rule
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# ================================================================================================
# Logging: one key=value line per event, on stderr
# ================================================================================================
_verbose = False


def log(level: str, event: str, **fields: Any) -> None:
    if level == "debug" and not _verbose:
        return
    parts = [f"ts={iso(time.time())}", f"level={level}", f"event={event}"]
    for key, value in fields.items():
        if value is None:
            continue
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        if not text or re.search(r'[\s"=]', text):
            text = json.dumps(text)
        parts.append(f"{key}={text}")
    print(" ".join(parts), file=sys.stderr, flush=True)


def iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat(timespec="seconds")


_RFC3339_RE = re.compile(
    r"^(\d{4}-\d\d-\d\d)[Tt ](\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|z|[+-]\d\d:\d\d)$"
)


def parse_rfc3339(text: str) -> float | None:
    """Epoch seconds of an RFC 3339 time (``Z`` or offset, any fraction); None if it is not one."""
    match = _RFC3339_RE.match(text)
    if not match:
        return None
    date, clock, fraction, zone = match.groups()
    zone = "+00:00" if zone in ("Z", "z") else zone
    try:
        moment = dt.datetime.fromisoformat(f"{date}T{clock}{zone}")
    except ValueError:
        return None
    return moment.timestamp() + (float(f"0.{fraction}") if fraction else 0.0)


# ================================================================================================
# Configuration: flags > TINYTOWN_SCALER_* environment > TOML file > defaults
# ================================================================================================
class ConfigError(Exception):
    """Invalid configuration; the message names the key, the value and the expected form."""


@dataclass(frozen=True)
class Outpost:
    """A Docker engine that may run workers. Order in the config = preference."""

    name: str = LOCAL_OUTPOST
    docker_host: str | None = None  # None: the local engine (DOCKER_HOST or the default socket)
    max_workers: int = MAX_WORKERS
    cost_per_hour: float = 0.0
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_verify: bool = True


@dataclass(frozen=True)
class Config:
    url: str = TOWNHALL_URL
    api_key: str | None = None
    api_key_file: str | None = None
    townhall_ca_file: str | None = None
    town: str | None = None
    image: str | None = None
    command: str | None = None
    network: str | None = None
    volumes: tuple[str, ...] = ()
    workspace: str = WORKSPACE_MOUNT
    workspace_volume: str = WORKSPACE_VOLUME
    healthcheck: str = HEALTHCHECK
    env: Mapping[str, str] = field(default_factory=dict)
    pass_env: tuple[str, ...] = ()
    min_workers: int = MIN_WORKERS
    max_workers: int = MAX_WORKERS
    interval_secs: float = INTERVAL_SECS
    scale_down_cooldown_secs: float = SCALE_DOWN_COOLDOWN_SECS
    scale_down_after_passes: int = SCALE_DOWN_AFTER_PASSES
    keep_exited: int = KEEP_EXITED_PER_OUTPOST
    unhealthy_after_secs: float = UNHEALTHY_AFTER_SECS
    heartbeat_interval_secs: float = HEARTBEAT_INTERVAL_SECS
    trust_townhall_alone: bool = False
    restart_after_failures: int = RESTART_AFTER_FAILURES
    max_restarts: int = MAX_RESTARTS_PER_CONTAINER
    start_grace_secs: float = START_GRACE_SECS
    restart_timeout_secs: float = RESTART_TIMEOUT_SECS
    breaker_backoff_secs: float = BREAKER_BACKOFF_SECS
    breaker_backoff_max_secs: float = BREAKER_BACKOFF_MAX_SECS
    crash_loop_after_exits: int = CRASH_LOOP_AFTER_EXITS
    quick_exit_secs: float = QUICK_EXIT_SECS
    cost_cap_hourly: float | None = None
    state_file: str | None = None
    notify_command: str | None = None
    notify_webhook: str | None = None
    http_timeout_secs: float = HTTP_TIMEOUT_SECS
    docker_timeout_secs: float = DOCKER_TIMEOUT_SECS
    outposts: tuple[Outpost, ...] = (Outpost(),)


@dataclass(frozen=True)
class Setting:
    """One configuration key: its Config field, TOML table, type and help line."""

    key: str
    kind: str  # str | int | float | bool | list | map
    group: str
    help: str
    section: str = ""  # TOML table ("" = top level)
    metavar: str | None = None
    minimum: float | None = None
    flag: str | None = None  # default --key-with-dashes
    from_env: bool = True

    @property
    def env(self) -> str | None:
        return ENV_PREFIX + self.key.upper() if self.from_env else None

    @property
    def option(self) -> str:
        return self.flag or "--" + self.key.replace("_", "-")


SETTINGS = (
    Setting("url", "str", "townhall", "townhall base URL", metavar="URL"),
    Setting("api_key", "str", "townhall", "API key with scope town.read (prefer --api-key-file)",
            metavar="KEY"),
    Setting("api_key_file", "str", "townhall", "file holding the API key", metavar="PATH"),
    Setting("townhall_ca_file", "str", "townhall", "CA bundle to verify townhall's TLS certificate",
            metavar="PATH"),
    Setting("town", "str", "townhall", "expected town name; a townhall serving another town is "
            "refused (default: the signal's town)", metavar="NAME"),
    Setting("image", "str", "container", "worker image, already on each outpost (never pulled)",
            section="container", metavar="IMAGE"),
    Setting("command", "str", "container", "override the image's command (split like a shell)",
            section="container", metavar="CMD"),
    Setting("network", "str", "container", "Docker network for workers", section="container",
            metavar="NAME"),
    Setting("volumes", "list", "container", "extra mount SOURCE:/path[:ro], repeatable (env: "
            "comma-separated)", section="container", metavar="SPEC", flag="--volume"),
    Setting("workspace", "str", "container", "where workers mount the workspace volume; must "
            "contain the worker's [agent] workspace_dir", section="container", metavar="PATH"),
    Setting("workspace_volume", "str", "container", "named volume every worker of the town "
            "shares on an outpost, created by the scaler and never removed; {town} is replaced, "
            f"'{NO_WORKSPACE_VOLUME}' mounts none", section="container", metavar="NAME"),
    Setting("healthcheck", "str", "container", "Docker healthcheck command given to each worker "
            "(split like a shell; it reads the worker's health file); "
            f"'{IMAGE_HEALTHCHECK}' gives none, so the image's own applies", section="container",
            metavar="CMD"),
    Setting("env", "map", "container", "set KEY=VALUE in workers, repeatable (TOML: "
            "[container.env])", section="container", metavar="KEY=VALUE", from_env=False),
    Setting("pass_env", "list", "container", "pass this variable from the scaler's environment, "
            "e.g. REDIS_URL, repeatable", section="container", metavar="NAME"),
    Setting("min_workers", "int", "scaling", "fewest workers kept running", minimum=0,
            metavar="N"),
    Setting("max_workers", "int", "scaling", "most workers across all outposts", minimum=0,
            metavar="N"),
    Setting("interval_secs", "float", "scaling", "seconds between passes in the loop",
            minimum=0.1, metavar="SECS"),
    Setting("scale_down_cooldown_secs", "float", "scaling", "no drain until this long after the "
            "last start", minimum=0, metavar="SECS"),
    Setting("scale_down_after_passes", "int", "scaling", "a surplus must persist this many "
            "passes before a drain", minimum=1, metavar="N"),
    Setting("keep_exited", "int", "scaling", "exited workers kept per outpost for their logs",
            minimum=0, metavar="N"),
    Setting("cost_cap_hourly", "float", "scaling", "no start that would take the hourly cost of "
            "live workers above this (default: no cap)", minimum=0, metavar="AMOUNT"),
    Setting("unhealthy_after_secs", "float", "health", "a heartbeat older than this is a failure "
            "(when townhall does not say whether the agent is alive)", minimum=1, metavar="SECS"),
    Setting("heartbeat_interval_secs", "float", "health", "the workers' [agent] "
            "heartbeat_interval_secs: their Docker healthcheck runs this often", minimum=1,
            metavar="SECS"),
    Setting("trust_townhall_alone", "bool", "health", "restart or drain a container that has no "
            "Docker healthcheck (started by an older scaler) on townhall's word alone",
            metavar="BOOL"),
    Setting("restart_after_failures", "int", "health", "consecutive failures before a restart",
            minimum=1, metavar="N"),
    Setting("max_restarts", "int", "health", "health restarts per container before it is marked "
            "and notified instead", minimum=0, metavar="N"),
    Setting("start_grace_secs", "float", "health", "containers younger than this (or restarted "
            "since) are not judged", minimum=0, metavar="SECS"),
    Setting("restart_timeout_secs", "float", "health", "docker restart waits this long after "
            "SIGTERM before SIGKILL", minimum=0, metavar="SECS"),
    Setting("crash_loop_after_exits", "int", "health", "quick non-zero exits in a row that hold "
            "starts on an outpost for the breaker backoff (0: never)", minimum=0, metavar="N"),
    Setting("quick_exit_secs", "float", "health", "a non-zero exit this soon after the start "
            "counts toward a crash loop", minimum=0, metavar="SECS"),
    Setting("notify_command", "str", "health", "run on a failed restart or a crash loop; event "
            "JSON on stdin", metavar="CMD"),
    Setting("notify_webhook", "str", "health", "POST the event JSON to this URL", metavar="URL"),
    Setting("breaker_backoff_secs", "float", "outposts", "skip a failed outpost this long, "
            "doubling per failure", minimum=0, metavar="SECS"),
    Setting("breaker_backoff_max_secs", "float", "outposts", "longest breaker backoff",
            minimum=0, metavar="SECS"),
    Setting("docker_timeout_secs", "float", "outposts", "timeout of each Docker API call",
            minimum=1, metavar="SECS"),
    Setting("http_timeout_secs", "float", "townhall", "timeout of each townhall request",
            minimum=0.1, metavar="SECS"),
    Setting("state_file", "str", "state", "JSON state: cooldowns, breakers, health counters; "
            "one per town (default: $XDG_STATE_HOME/" + STATE_FILE.format(town="<town>") + ")",
            metavar="PATH"),
)
SETTINGS_BY_KEY = {s.key: s for s in SETTINGS}
OUTPOST_KEYS = {f.name for f in dataclasses.fields(Outpost)}
EXPECTED = {
    "str": "a non-empty string",
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "list": "a list of strings",
    "map": "a table of NAME = \"value\" strings",
}


BOOL_WORDS = {"true": True, "1": True, "yes": True, "on": True,
              "false": False, "0": False, "no": False, "off": False}


def _invalid(key: str, value: Any, source: str, expected: str) -> ConfigError:
    return ConfigError(f"invalid {key}={value!r} (from {source}): expected {expected}")


def coerce(setting: Setting, value: Any, source: str) -> Any:
    """Turn a raw value (a string from a flag or env, or a TOML value) into the setting's type."""
    key, kind = setting.key, setting.kind
    expected = EXPECTED[kind]
    if setting.minimum is not None:
        expected += f" >= {setting.minimum:g}"
    if kind == "str":
        if not isinstance(value, str) or not value.strip():
            raise _invalid(key, value, source, expected)
        return value.strip()
    if kind in ("int", "float"):
        number: float
        if isinstance(value, str):
            try:
                number = int(value) if kind == "int" else float(value)
            except ValueError:
                raise _invalid(key, value, source, expected) from None
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _invalid(key, value, source, expected)
        elif kind == "int" and not isinstance(value, int):
            raise _invalid(key, value, source, expected)
        else:
            number = value
        if not math.isfinite(number) or (setting.minimum is not None and number < setting.minimum):
            raise _invalid(key, value, source, expected)
        return int(number) if kind == "int" else float(number)
    if kind == "bool":
        if isinstance(value, str) and value.strip().lower() in BOOL_WORDS:
            return BOOL_WORDS[value.strip().lower()]
        if not isinstance(value, bool):
            raise _invalid(key, value, source, expected)
        return value
    if kind == "list":
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise _invalid(key, value, source, expected)
        return [v.strip() for v in value]
    # map: a TOML table, or a list of KEY=VALUE strings from --env
    if isinstance(value, list):
        pairs = {}
        for item in value:
            name, sep, val = item.partition("=")
            if not sep:
                raise _invalid(key, item, source, "KEY=VALUE")
            pairs[name.strip()] = val
        value = pairs
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _invalid(key, value, source, expected)
    return dict(value)


def read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}; check --config or "
                          f"{ENV_PREFIX}CONFIG") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from None


def flatten_toml(doc: dict[str, Any], path: str) -> tuple[dict[str, Any], list[Any]]:
    """Settings found in the file (keyed like Config) and its raw ``[[outposts]]`` tables."""
    known_top = {s.key for s in SETTINGS if not s.section} | {"outposts", "container"}
    known_container = {s.key for s in SETTINGS if s.section == "container"}
    for key in doc:
        if key not in known_top:
            raise ConfigError(f"unknown key {key!r} in {path}; known keys: "
                              f"{', '.join(sorted(known_top))}")
    container = doc.get("container", {})
    if not isinstance(container, dict):
        raise _invalid("container", container, path, "a [container] table")
    for key in container:
        if key not in known_container:
            raise ConfigError(f"unknown key 'container.{key}' in {path}; known keys: "
                              f"{', '.join(sorted(known_container))}")
    values = {k: v for k, v in doc.items() if k not in ("outposts", "container")}
    values.update(container)
    outposts = doc.get("outposts", [])
    if not isinstance(outposts, list):
        raise _invalid("outposts", outposts, path, "[[outposts]] tables")
    return values, outposts


def parse_outposts(raw: list[Any], source: str, max_workers: int) -> tuple[Outpost, ...]:
    if not raw:
        return (Outpost(max_workers=max_workers),)
    outposts: list[Outpost] = []
    for index, table in enumerate(raw):
        where = f"outposts[{index}]"
        if not isinstance(table, dict):
            raise _invalid(where, table, source, "a table")
        unknown = set(table) - OUTPOST_KEYS
        if unknown:
            raise ConfigError(f"unknown key {sorted(unknown)[0]!r} in {where} of {source}; known "
                              f"keys: {', '.join(sorted(OUTPOST_KEYS))}")
        name = table.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise _invalid(f"{where}.name", name, source, "letters, digits, '.', '_' or '-'")
        if any(o.name == name for o in outposts):
            raise _invalid(f"{where}.name", name, source, "a name not used by another outpost")
        host = table.get("docker_host")
        if host is not None and (not isinstance(host, str) or
                                 not re.match(r"^(unix|tcp|ssh)://.", host)):
            raise _invalid(f"{where}.docker_host", host, source,
                           "unix:///path, tcp://host:port or ssh://user@host")
        mw = coerce(Setting("max_workers", "int", "", "", minimum=0),
                    table.get("max_workers", max_workers), f"{source} {where}")
        cost = coerce(Setting("cost_per_hour", "float", "", "", minimum=0),
                      table.get("cost_per_hour", 0.0), f"{source} {where}")
        tls = {}
        for key in ("tls_ca", "tls_cert", "tls_key"):
            value = table.get(key)
            if value is None:
                continue
            if not isinstance(value, str) or not os.path.isfile(os.path.expanduser(value)):
                raise _invalid(f"{where}.{key}", value, source, "the path of an existing file")
            if not (host or "").startswith("tcp://"):
                raise _invalid(f"{where}.{key}", value, source, "TLS files only with tcp://")
            tls[key] = os.path.expanduser(value)
        if ("tls_cert" in tls) != ("tls_key" in tls):
            raise _invalid(f"{where}.tls_cert", table.get("tls_cert"), source,
                           "tls_cert and tls_key together")
        if host and host.startswith("ssh://") and importlib.util.find_spec("paramiko") is None:
            raise _invalid(f"{where}.docker_host", host, source, "an installed paramiko for "
                           "ssh:// (the Docker SDK needs it): pip install 'docker[ssh]'")
        verify = table.get("tls_verify", True)
        if not isinstance(verify, bool):
            raise _invalid(f"{where}.tls_verify", verify, source, "true or false")
        outposts.append(Outpost(name, host, mw, cost, tls_verify=verify, **tls))
    return tuple(outposts)


def load_config(flags: Mapping[str, Any], environ: Mapping[str, str]) -> Config:
    """Resolve every setting. ``flags`` maps setting keys to values given on the command line."""
    config_path = flags.get("config") or environ.get(ENV_PREFIX + "CONFIG")
    file_values: dict[str, Any] = {}
    raw_outposts: list[Any] = []
    if config_path:
        file_values, raw_outposts = flatten_toml(read_toml(config_path), config_path)
    # Layers from lowest to highest precedence: (source name, values).
    layers: list[tuple[str, dict[str, Any]]] = [(str(config_path), file_values)]
    env_layer = {s.key: environ[s.env] for s in SETTINGS if s.env and environ.get(s.env)}
    layers.append(("the environment", env_layer))
    layers.append(("the command line", {k: v for k, v in flags.items()
                                         if k in SETTINGS_BY_KEY and v not in (None, [])}))

    resolved: dict[str, Any] = {}
    origin: dict[str, str] = {}  # where each value came from, for messages
    rank: dict[str, int] = {}  # which layer it came from: 0 file, 1 environment, 2 command line
    for layer, (source, values) in enumerate(layers):
        for key, raw in values.items():
            setting = SETTINGS_BY_KEY[key]
            where = setting.env if source == "the environment" else (
                setting.option if source == "the command line" else source)
            value = coerce(setting, raw, where)
            if setting.kind == "list":  # lists add up across layers
                value = list(dict.fromkeys([*resolved.get(key, []), *value]))
            elif setting.kind == "map":  # maps merge; the higher layer wins per name
                value = {**resolved.get(key, {}), **value}
            resolved[key] = value
            origin[key], rank[key] = where, layer

    # api_key and api_key_file are one choice: the higher layer wins; both in one layer is an error.
    if "api_key" in resolved and "api_key_file" in resolved:
        if rank["api_key"] == rank["api_key_file"]:
            raise ConfigError(f"both api_key and api_key_file are set ({origin['api_key']} and "
                              f"{origin['api_key_file']}); set only one")
        resolved.pop("api_key_file" if rank["api_key"] > rank["api_key_file"] else "api_key")
    if "api_key_file" in resolved:
        path = os.path.expanduser(resolved["api_key_file"])
        try:
            resolved["api_key"] = Path(path).read_text().strip()
        except OSError as err:
            raise ConfigError(f"cannot read api_key_file={path!r} (from "
                              f"{origin['api_key_file']}): {err.strerror}") from None
        if not resolved["api_key"]:
            raise ConfigError(f"api_key_file={path!r} is empty; it should hold the API key")

    for key in ("volumes", "pass_env"):
        if key in resolved:
            resolved[key] = tuple(resolved[key])
    max_workers = resolved.get("max_workers", MAX_WORKERS)
    config = Config(**resolved,
                    outposts=parse_outposts(raw_outposts, str(config_path), max_workers))
    validate(config, origin)
    return config


def validate(config: Config, origin: Mapping[str, str]) -> None:
    """Checks that span keys or need more than a type; raises ConfigError naming the key."""

    def where(key: str) -> str:
        return origin.get(key, "the defaults")

    if not re.match(r"^https?://[^/\s]+", config.url):
        raise _invalid("url", config.url, where("url"), "http://host:port or https://host:port")
    if config.min_workers > config.max_workers:
        raise _invalid("min_workers", config.min_workers, where("min_workers"),
                       f"at most max_workers ({config.max_workers})")
    if config.breaker_backoff_max_secs < config.breaker_backoff_secs:
        raise _invalid("breaker_backoff_max_secs", config.breaker_backoff_max_secs,
                       where("breaker_backoff_max_secs"), "at least breaker_backoff_secs")
    if config.town is not None and not NAME_RE.match(config.town):
        raise _invalid("town", config.town, where("town"), "a town name (letters, digits, ._-)")
    if config.notify_webhook and not re.match(r"^https?://", config.notify_webhook):
        raise _invalid("notify_webhook", config.notify_webhook, where("notify_webhook"),
                       "an http:// or https:// URL")
    for spec in config.volumes:
        parts = spec.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1].startswith("/") or (
                len(parts) == 3 and parts[2] not in ("ro", "rw")):
            raise _invalid("volumes", spec, where("volumes"), "SOURCE:/container/path[:ro|rw]")
    if not config.workspace.startswith("/"):
        raise _invalid("workspace", config.workspace, where("workspace"), "an absolute path")
    if config.workspace_volume != NO_WORKSPACE_VOLUME:
        try:
            sample = config.workspace_volume.format(town="t")
        except (KeyError, IndexError, ValueError):
            sample = ""
        if not VOLUME_NAME_RE.match(sample):
            raise _invalid("workspace_volume", config.workspace_volume, where("workspace_volume"),
                           f"a volume name (letters, digits, _.-; {{town}} allowed) or "
                           f"'{NO_WORKSPACE_VOLUME}'")
        clash = [spec for spec in config.volumes
                 if spec.split(":")[1].rstrip("/") == config.workspace.rstrip("/")]
        if clash:
            raise _invalid("volumes", clash[0], where("volumes"), f"no mount at {config.workspace}"
                           f", where the workspace volume goes: change workspace, or set "
                           f"workspace_volume = '{NO_WORKSPACE_VOLUME}'")
    for key, names in (("env", config.env), ("pass_env", config.pass_env)):
        for name in names:
            if not ENV_NAME_RE.match(name):
                raise _invalid(key, name, where(key), "a variable name like REDIS_URL")
            if name in RESERVED_ENV:
                raise _invalid(key, name, where(key), "no TINYTOWN_AGENT_ID or "
                               "TINYTOWN_AGENT_NAME: the scaler sets those per container")
    for name in ("townhall_ca_file",):
        value = getattr(config, name)
        if value is not None and not os.path.isfile(os.path.expanduser(value)):
            raise _invalid(name, value, where(name), "the path of an existing file")
    for key in ("command", "healthcheck"):
        value = getattr(config, key)
        try:
            words = shlex.split(value) if value is not None else None
        except ValueError as err:
            raise _invalid(key, value, where(key), f"shell words ({err})") from None
        if words == []:
            raise _invalid(key, value, where(key), "a command")


def workspace_volume_name(config: Config, town: str) -> str | None:
    """The town's shared workspace volume, or None when workers get none."""
    if config.workspace_volume == NO_WORKSPACE_VOLUME:
        return None
    return config.workspace_volume.format(town=town)


def state_path(config: Config, environ: Mapping[str, str], town: str) -> Path:
    """``--state-file``, else a file of the town's own under $XDG_STATE_HOME (~/.local/state)."""
    if config.state_file:
        return Path(os.path.expanduser(config.state_file))
    base = environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    # The town comes from townhall: never let it name a path outside the directory.
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", town)
    return Path(base) / STATE_FILE.format(town="_" + safe if safe.startswith(".") else safe)


def redact_value(name: str, value: str) -> str:
    """Hide secrets: values of secret-looking names, and passwords inside URLs."""
    if SECRET_NAME_RE.search(name):
        return "****"
    return re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1****@", value)


def config_summary(config: Config) -> dict[str, Any]:
    data = dataclasses.asdict(config)
    data["api_key"] = "****" if config.api_key else None
    data["env"] = {k: redact_value(k, v) for k, v in config.env.items()}
    return data


# ================================================================================================
# Pure policy: plain data in, decisions out. No Docker, no HTTP, no clock (``now`` is passed in).
# ================================================================================================
class Malformed(ValueError):
    """A townhall response that does not match the contract; its message says what is wrong."""


@dataclass(frozen=True)
class Signal:
    town: str
    timestamp: str
    queue_depth: int
    pending_tasks: int
    in_flight_tasks: int
    active_agents: int
    cold_agents: int
    desired_agents: int
    max_agents: int
    scaling_recommendation: str
    idle_agents: int | None = None
    busy_agents: int | None = None


SIGNAL_COUNTS = ("queue_depth", "pending_tasks", "in_flight_tasks", "active_agents",
                 "cold_agents", "desired_agents", "max_agents")


def _count(body: Mapping[str, Any], key: str, required: bool = True) -> int | None:
    if key not in body and not required:
        return None
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Malformed(f"{key}={value!r}: expected a whole number >= 0")
    return value


def parse_signal(body: Any) -> Signal:
    """Validate a ``GET /api/scaling`` body strictly; raise Malformed on anything unexpected.

    ``idle_agents`` and ``busy_agents`` are this project's additions: checked when present, not
    required, so an upstream townhall still drives the scaler.
    """
    if not isinstance(body, dict):
        raise Malformed(f"expected a JSON object, got {type(body).__name__}")
    town = body.get("town")
    if not isinstance(town, str) or not town:
        raise Malformed(f"town={town!r}: expected a non-empty string")
    stamp = body.get("timestamp")
    if not isinstance(stamp, str) or parse_rfc3339(stamp) is None:
        raise Malformed(f"timestamp={stamp!r}: expected an RFC 3339 time")
    counts = {key: _count(body, key) for key in SIGNAL_COUNTS}
    recommendation = body.get("scaling_recommendation")
    if recommendation not in RECOMMENDATIONS:
        raise Malformed(f"scaling_recommendation={recommendation!r}: expected one of "
                        f"{', '.join(RECOMMENDATIONS)}")
    return Signal(town, stamp, **counts, scaling_recommendation=recommendation,
                  idle_agents=_count(body, "idle_agents", required=False),
                  busy_agents=_count(body, "busy_agents", required=False))


@dataclass(frozen=True)
class Agent:
    id: str
    state: str
    current_task: str | None
    last_heartbeat: float | None  # epoch seconds
    name: str | None = None
    alive: bool | None = None  # townhall's word: a heartbeat within the agent's own window
    heartbeat_interval_secs: int | None = None  # the agent's own
    heartbeat_age_secs: float | None = None  # as townhall measured it

    @property
    def busy(self) -> bool:
        return self.state in ("Working", "Starting") or self.current_task is not None

    @property
    def live(self) -> bool:
        """Counted among ``active_agents``: an active state, and alive when townhall says."""
        return self.state in ACTIVE_AGENT_STATES and self.alive is not False


def _optional_number(item: Mapping[str, Any], key: str, index: int,
                     kind: type | tuple[type, ...]) -> Any:
    value = item.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value):
        raise Malformed(f"agents[{index}].{key}={value!r}: expected "
                        f"{'a whole number' if kind is int else 'a number'} or null")
    return value


def parse_agents(body: Any) -> dict[str, Agent]:
    """Validate a ``GET /v1/agents`` body; raise Malformed if any agent is not as the contract says.

    ``current_task`` and ``last_heartbeat`` must be present (they may be null): without them
    nobody can tell a busy or dead worker from an idle one. ``alive``, ``heartbeat_interval_secs``
    and ``heartbeat_age_secs`` are this project's additions: checked when present, not required.
    """
    if not isinstance(body, dict) or not isinstance(body.get("agents"), list):
        raise Malformed("expected an object with an 'agents' list")
    agents: dict[str, Agent] = {}
    for index, item in enumerate(body["agents"]):
        if not isinstance(item, dict):
            raise Malformed(f"agents[{index}]: expected an object")
        agent_id, state = item.get("id"), item.get("state")
        if not isinstance(agent_id, str) or not agent_id:
            raise Malformed(f"agents[{index}].id={agent_id!r}: expected a non-empty string")
        if state not in AGENT_STATES:
            raise Malformed(f"agents[{index}].state={state!r}: expected one of "
                            f"{', '.join(sorted(AGENT_STATES))}")
        for key in ("current_task", "last_heartbeat"):
            if key not in item or not (item[key] is None or isinstance(item[key], str)):
                raise Malformed(f"agents[{index}].{key}={item.get(key)!r}: expected a string or "
                                "null")
        heartbeat = None
        if item["last_heartbeat"] is not None:
            heartbeat = parse_rfc3339(item["last_heartbeat"])
            if heartbeat is None:
                raise Malformed(f"agents[{index}].last_heartbeat={item['last_heartbeat']!r}: "
                                "expected an RFC 3339 time")
        name = item.get("name") if isinstance(item.get("name"), str) else None
        alive = item.get("alive")
        if alive is not None and not isinstance(alive, bool):
            raise Malformed(f"agents[{index}].alive={alive!r}: expected true, false or null")
        interval = _optional_number(item, "heartbeat_interval_secs", index, int)
        if interval is not None and interval < 1:
            raise Malformed(f"agents[{index}].heartbeat_interval_secs={interval!r}: expected a "
                            "whole number >= 1")
        age = _optional_number(item, "heartbeat_age_secs", index, (int, float))
        agents[agent_id] = Agent(agent_id, state, item["current_task"] or None, heartbeat, name,
                                 alive, interval, None if age is None else float(age))
    return agents


@dataclass(frozen=True)
class Worker:
    """One worker container as Docker reports it, reduced to what the policy needs."""

    container_id: str
    name: str
    outpost: str
    agent_id: str | None
    status: str  # Docker's: created, running, restarting, paused, exited, dead, removing
    started_at: float | None  # from the tinytown.started_at label, else the creation time
    cost_per_hour: float = 0.0
    finished_at: float | None = None  # known only after a full inspect
    exit_code: int | None = None  # known only after a full inspect of an exited container
    ran_secs: float | None = None  # its last run, start to finish (full inspect only)
    health: str | None = None  # Docker's: starting, healthy, unhealthy; None without a healthcheck

    @property
    def live(self) -> bool:
        return self.status in LIVE_STATUSES

    def age_secs(self, now: float) -> float | None:
        return None if self.started_at is None else max(0.0, now - self.started_at)

    def cost_so_far(self, now: float) -> float:
        if self.started_at is None:
            return 0.0
        end = now if self.live or self.finished_at is None else self.finished_at
        return max(0.0, end - self.started_at) / 3600.0 * self.cost_per_hour


def worker_from_attrs(attrs: Mapping[str, Any], outpost: Outpost) -> Worker:
    """Build a Worker from ``docker ps`` (sparse) or ``docker inspect`` (full) attributes."""
    labels = attrs.get("Labels") or (attrs.get("Config") or {}).get("Labels") or {}
    state = attrs.get("State")
    status = state.get("Status", "") if isinstance(state, dict) else str(state or "")
    name = attrs.get("Name") or ((attrs.get("Names") or [""])[0])
    created = attrs.get("Created")
    created_at = float(created) if isinstance(created, (int, float)) else (
        parse_rfc3339(created) if isinstance(created, str) else None)
    started_at = parse_rfc3339(labels.get(LABEL_STARTED_AT, "")) or created_at
    finished_at = exit_code = ran_secs = None
    if isinstance(state, dict):
        finished = parse_rfc3339(state.get("FinishedAt") or "")
        finished_at = finished if finished and finished > 0 else None  # 0001-01-01 = never
        last_start = parse_rfc3339(state.get("StartedAt") or "")
        if status in EXITED_STATUSES and isinstance(state.get("ExitCode"), int):
            exit_code = state["ExitCode"]
            if finished_at and last_start and last_start > 0:
                ran_secs = max(0.0, finished_at - last_start)
    try:
        cost = float(labels.get(LABEL_COST_PER_HOUR, outpost.cost_per_hour))
    except ValueError:
        cost = outpost.cost_per_hour
    return Worker(attrs.get("Id", ""), name.lstrip("/"), labels.get(LABEL_OUTPOST, outpost.name),
                  labels.get(LABEL_AGENT_ID) or None, status, started_at, cost, finished_at,
                  exit_code, ran_secs, container_health(attrs))


_HEALTH_IN_PS_STATUS = re.compile(r"\((healthy|unhealthy|health: starting)\)\s*$")


def container_health(attrs: Mapping[str, Any]) -> str | None:
    """Docker's health status of a container (``starting``, ``healthy`` or ``unhealthy``), from
    ``docker inspect`` (State.Health) or ``docker ps`` (``Up 5 minutes (healthy)``); None when
    it has no healthcheck."""
    state = attrs.get("State")
    if isinstance(state, dict):
        health = state.get("Health")
        status = health.get("Status") if isinstance(health, dict) else None
        return status if status in HEALTH_STATUSES else None
    match = _HEALTH_IN_PS_STATUS.search(str(attrs.get("Status") or ""))
    if not match:
        return None
    return "starting" if match.group(1) == "health: starting" else match.group(1)


def clamp_target(desired: int, min_workers: int, max_workers: int) -> int:
    return max(min_workers, min(desired, max_workers))


# --- circuit breaker per outpost --------------------------------------------------------------
@dataclass(frozen=True)
class Breaker:
    failures: int = 0
    open_until: float = 0.0  # epoch seconds; the outpost is skipped before this
    last_error: str | None = None

    def is_open(self, now: float) -> bool:
        return now < self.open_until

    def failed(self, now: float, error: str, backoff_secs: float, max_secs: float) -> Breaker:
        """One more failure: skip the outpost for a backoff that doubles per failure, capped."""
        failures = self.failures + 1
        backoff = min(backoff_secs * 2 ** min(failures - 1, 30), max_secs)
        return Breaker(failures, now + backoff, error)

    def succeeded(self) -> Breaker:
        return Breaker()


# --- where new workers go -------------------------------------------------------------------
@dataclass(frozen=True)
class OutpostView:
    """An outpost as this pass sees it."""

    name: str
    max_workers: int
    cost_per_hour: float
    available: bool  # reachable this pass and its breaker closed
    live: int  # live workers seen on it
    hold: str | None = None  # why it takes no new workers now (a crash loop), if it does not


@dataclass(frozen=True)
class Placement:
    outposts: tuple[str, ...]  # one entry per new worker, in start order
    unplaced: int = 0
    reason: str | None = None  # why some could not be placed


def choose_outposts(count: int, outposts: Sequence[OutpostView], hourly_cost: float,
                    cost_cap_hourly: float | None) -> Placement:
    """Place ``count`` new workers: each on the first outpost, in preference order, that is
    available, below its ``max_workers`` and whose price keeps the fleet within the cost cap."""
    live = {o.name: o.live for o in outposts}
    chosen: list[str] = []
    reason = None
    for _ in range(count):
        pick = None
        blocked_by_cost = False
        held = []
        for o in outposts:
            if o.available and o.hold:
                held.append(f"{o.name} holds starts ({o.hold})")
                continue
            if not o.available or live[o.name] >= o.max_workers:
                continue
            over_cap = cost_cap_hourly is not None and \
                hourly_cost + o.cost_per_hour > cost_cap_hourly + 1e-9
            if over_cap:
                blocked_by_cost = True
                continue
            pick = o
            break
        if pick is None:
            if blocked_by_cost:
                reason = f"cost cap reached: {hourly_cost:.4f}/h of {cost_cap_hourly:g}/h in use"
            elif held:
                reason = "; ".join(held)
            elif any(o.available for o in outposts):
                reason = "all available outposts at max_workers"
            else:
                reason = "no outpost available (unreachable or circuit breaker open)"
            break
        chosen.append(pick.name)
        live[pick.name] += 1
        hourly_cost += pick.cost_per_hour
    return Placement(tuple(chosen), count - len(chosen), reason)


# --- scale-down: cooldown, hysteresis, never a busy worker -----------------------------------
@dataclass(frozen=True)
class ScaleDownGate:
    allowed: bool
    surplus_passes: int  # consecutive passes with a surplus and a down signal, this one included
    reason: str


def scale_down_gate(recommendation: str, surplus: int, surplus_passes: int,
                    last_scale_up_at: float | None, now: float, cooldown_secs: float,
                    after_passes: int) -> ScaleDownGate:
    """May this pass drain surplus workers? Only on a down signal that has lasted
    ``after_passes`` passes in a row, and not within ``cooldown_secs`` of the last start."""
    if surplus <= 0:
        return ScaleDownGate(False, 0, "no surplus")
    if recommendation not in DOWN_RECOMMENDATIONS:
        return ScaleDownGate(False, 0, f"signal says {recommendation}")
    passes = surplus_passes + 1
    if last_scale_up_at is not None and now - last_scale_up_at < cooldown_secs:
        left = cooldown_secs - (now - last_scale_up_at)
        return ScaleDownGate(False, passes, f"cooldown: {left:.0f}s left since the last start")
    if passes < after_passes:
        return ScaleDownGate(False, passes, f"surplus seen {passes}/{after_passes} passes")
    return ScaleDownGate(True, passes, f"surplus {surplus} for {passes} passes")


def drain_veto(agent: Agent | None) -> str | None:
    """Why townhall says this agent's worker must not be drained, or None when it is alive and
    Idle with no task."""
    if agent is None:
        return "agent not registered"
    if agent.alive is False:
        return "agent not alive"
    if agent.state != "Idle" or agent.busy:
        return f"agent {agent.state}" + (f" with task {agent.current_task}"
                                         if agent.current_task else "")
    return None


def health_veto(health: str | None, trust_townhall_alone: bool) -> str | None:
    """Why the container's own Docker health does not confirm a drain, or None when it does:
    healthy, or no healthcheck at all while townhall alone is trusted."""
    if health == "healthy" or (health is None and trust_townhall_alone):
        return None
    if health is None:
        return "no Docker healthcheck to confirm the worker (set trust_townhall_alone to act on " \
               "townhall's word alone)"
    return f"Docker health {health}"


def drain_candidates(workers: Iterable[Worker], agents: Mapping[str, Agent], surplus: int,
                     outpost_order: Sequence[str],
                     trust_townhall_alone: bool = False) -> list[Worker]:
    """Up to ``surplus`` running workers whose agent is alive and Idle with no task and whose
    container Docker reports healthy, least preferred outpost first, oldest first. An agent that
    is unknown, busy, starting or draining, or a container that does not confirm it, is never
    chosen."""
    rank = {name: i for i, name in enumerate(outpost_order)}
    idle = [w for w in workers
            if w.status == "running" and drain_veto(agents.get(w.agent_id or "")) is None
            and health_veto(w.health, trust_townhall_alone) is None]
    idle.sort(key=lambda w: (-rank.get(w.outpost, len(rank)), w.started_at or 0.0))
    return idle[:max(0, surplus)]


# --- health ---------------------------------------------------------------------------------
# Why a verdict is unknown (also the names of the events that log it).
EVIDENCE_INCONSISTENT = "evidence_inconsistent"  # townhall contradicts itself or the engine
EVIDENCE_MISSING = "evidence_missing"  # the container has no healthcheck to confirm townhall


@dataclass(frozen=True)
class Verdict:
    judged: bool
    healthy: bool
    reason: str
    unknown: str | None = None  # EVIDENCE_INCONSISTENT or EVIDENCE_MISSING: nothing destructive


def townhall_failure(agent: Agent | None, now: float, unhealthy_after_secs: float) -> str | None:
    """What townhall's record says is wrong with an agent, or None when it is alive and well.
    Townhall's own ``alive`` decides when it is given; else the heartbeat's age."""
    if agent is None:
        return "agent not registered"
    if agent.state == "Error":
        return "agent state Error"
    if agent.alive is not None:
        if agent.alive:
            return None
        age = agent.heartbeat_age_secs
        if age is None and agent.last_heartbeat is not None:
            age = now - agent.last_heartbeat
        return "agent not alive" + (f" (heartbeat {age:.0f}s old)" if age is not None
                                    else " (no heartbeat)")
    if agent.last_heartbeat is None:
        return "no heartbeat"
    age = now - agent.last_heartbeat
    if age > unhealthy_after_secs:
        return f"heartbeat {age:.0f}s old"
    return None


def health_verdict(worker: Worker, agent: Agent | None, now: float, unhealthy_after_secs: float,
                   start_grace_secs: float, quiet_since: float | None = None,
                   trust_townhall_alone: bool = False) -> Verdict:
    """Judge one container by two witnesses: its agent's record in townhall and its own Docker
    health (the worker's health file). It fails only when both say so; when they disagree, or
    townhall's word cannot be confirmed (no healthcheck, unless ``trust_townhall_alone``), the
    verdict is unknown. A container is not judged within ``start_grace_secs`` of its start or of
    ``quiet_since`` (its last restart or drain request), nor while Docker's health is starting."""
    if worker.status != "running":
        return Verdict(False, True, f"container {worker.status}")
    since = max(worker.started_at or 0.0, quiet_since or 0.0)
    if now - since < start_grace_secs:
        return Verdict(False, True, "within start grace")
    failure = townhall_failure(agent, now, unhealthy_after_secs)
    if worker.health == "starting":
        return Verdict(False, True, "Docker health starting")
    if worker.health is None:
        if failure is None:
            return Verdict(True, True, "ok")
        if trust_townhall_alone:
            return Verdict(True, False, failure)
        return Verdict(False, True, f"townhall says {failure}, but the container has no Docker "
                       "healthcheck to confirm it (started by an older scaler or image); not "
                       "restarted unless trust_townhall_alone is set", EVIDENCE_MISSING)
    if worker.health == "unhealthy":
        if failure is not None:
            return Verdict(True, False, f"{failure}; Docker health unhealthy")
        return Verdict(False, True, "Docker health unhealthy, but townhall says the agent is "
                       "alive", EVIDENCE_INCONSISTENT)
    if failure is not None:
        return Verdict(False, True, f"townhall says {failure}, but Docker health is healthy",
                       EVIDENCE_INCONSISTENT)
    return Verdict(True, True, "ok")


def next_failure_count(previous: int, verdict: Verdict) -> int:
    """Consecutive failures after this verdict: +1 on a failure, 0 when healthy or unknown (the
    witnesses must agree for ``restart_after_failures`` passes in a row), unchanged when not
    judged."""
    if verdict.unknown:
        return 0
    if not verdict.judged:
        return previous
    return 0 if verdict.healthy else previous + 1


def evidence_conflicts(signal_: Signal, agents: Mapping[str, Agent], workers: Iterable[Worker],
                       now: float, start_grace_secs: float) -> tuple[str, ...]:
    """Where townhall's two answers contradict each other: the signal's ``active_agents`` (and
    ``busy_agents``, when given) against the agents ``/v1/agents`` lists as live (and Working),
    beyond a race tolerance of EVIDENCE_TOLERANCE_AGENTS plus one per live container still within
    its start grace (its agent may register between the two reads). An empty list while the
    signal counts live agents is the plainest case. Empty when they agree."""
    live = [a for a in agents.values() if a.live]
    young = sum(1 for w in workers if w.live and (w.age_secs(now) or 0.0) < start_grace_secs)
    tolerance = EVIDENCE_TOLERANCE_AGENTS + young
    conflicts = []
    for name, claimed, listed in (
            ("active_agents", signal_.active_agents, len(live)),
            ("busy_agents", signal_.busy_agents, sum(1 for a in live if a.state == "Working"))):
        if claimed is not None and abs(claimed - listed) > tolerance:
            conflicts.append(f"/api/scaling says {name}={claimed} but /v1/agents lists {listed} "
                             f"{'live' if name == 'active_agents' else 'Working'} agent(s) "
                             f"(tolerance {tolerance})")
    return tuple(conflicts)


def exited_to_remove(workers: Iterable[Worker], keep: int) -> list[Worker]:
    """Exited workers beyond the newest ``keep`` on each outpost."""
    by_outpost: dict[str, list[Worker]] = {}
    for w in workers:
        if w.status in EXITED_STATUSES:
            by_outpost.setdefault(w.outpost, []).append(w)
    doomed = []
    for exited in by_outpost.values():
        exited.sort(key=lambda w: w.started_at or 0.0, reverse=True)
        doomed.extend(exited[keep:])
    return doomed


# --- crash loops: workers that die right after starting ----------------------------------------
@dataclass(frozen=True)
class CrashWatch:
    """One outpost's quick non-zero exits in a row, and the hold on new starts they opened."""

    streak: int = 0
    hold: Breaker = field(default_factory=Breaker)  # open: no new workers on this outpost
    last_exit_code: int | None = None


def is_crash(worker: Worker, quick_exit_secs: float) -> bool:
    """A non-zero exit within ``quick_exit_secs`` of the start. Exit 0 (idle exit, drain) never
    is, nor is a failure after a long run."""
    return (worker.exit_code not in (None, 0) and worker.ran_secs is not None
            and worker.ran_secs < quick_exit_secs)


def watch_exits(watch: CrashWatch, exits: Iterable[Worker], now: float, after_exits: int,
                quick_exit_secs: float, backoff_secs: float,
                max_secs: float) -> tuple[CrashWatch, Worker | None]:
    """Count exits seen for the first time, oldest first. A crash adds one to the streak and
    anything else resets it (and lifts the hold). When the streak reaches ``after_exits`` and no
    hold is open, a hold opens for the breaker backoff, doubling per hold in one crash loop.
    Returns the new watch and the exit that opened a hold this time, if one did."""
    opened = None
    if after_exits <= 0:
        return watch, None
    for w in sorted(exits, key=lambda w: w.finished_at or 0.0):
        if not is_crash(w, quick_exit_secs):
            watch, opened = CrashWatch(), None
            continue
        hold = watch.hold
        streak = watch.streak + 1
        if streak >= after_exits and not hold.is_open(now):
            hold = hold.failed(now, f"{streak} workers in a row exited within "
                               f"{quick_exit_secs:g}s, the last with code {w.exit_code}",
                               backoff_secs, max_secs)
            opened = w
        watch = CrashWatch(streak, hold, w.exit_code)
    return watch, opened


def crash_limited(view: OutpostView, watch: CrashWatch, now: float,
                  after_exits: int) -> OutpostView:
    """The outpost as placement should see it: held while the hold is open; after it, in a crash
    loop still, one new worker per pass as a trial."""
    if watch.hold.is_open(now):
        return dataclasses.replace(view, hold=f"{watch.hold.last_error}; until "
                                              f"{iso(watch.hold.open_until)}")
    if after_exits and watch.streak >= after_exits:
        return dataclasses.replace(view, max_workers=min(view.max_workers, view.live + 1))
    return view


# --- what the scaler remembers between passes (the state file) -------------------------------
@dataclass
class ContainerMemory:
    outpost: str
    health_failures: int = 0
    restarts: int = 0
    restarted_at: float | None = None
    drain_requested_at: float | None = None
    marked_error_at: float | None = None
    marked_reason: str | None = None
    exit_counted: bool = False  # its exit has been counted toward a crash loop


@dataclass
class State:
    town: str | None = None
    last_scale_up_at: float | None = None
    surplus_passes: int = 0
    removed_cost: float = 0.0  # cost of workers already removed, accumulated
    breakers: dict[str, Breaker] = field(default_factory=dict)
    last_seen_hourly: dict[str, float] = field(default_factory=dict)  # per outpost
    containers: dict[str, ContainerMemory] = field(default_factory=dict)
    crash_loops: dict[str, CrashWatch] = field(default_factory=dict)  # per outpost

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "updated_at": now,
            "town": self.town,
            "last_scale_up_at": self.last_scale_up_at,
            "surplus_passes": self.surplus_passes,
            "removed_cost": round(self.removed_cost, 6),
            "outposts": {
                name: {**dataclasses.asdict(b), "last_seen_hourly": self.last_seen_hourly.get(name)}
                for name, b in self.breakers.items()
            },
            "containers": {cid: dataclasses.asdict(m) for cid, m in self.containers.items()},
            "crash_loops": {name: dataclasses.asdict(w) for name, w in self.crash_loops.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> State:
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"state version {data.get('version')!r}, expected {STATE_VERSION}")
        state = cls(data.get("town"), data.get("last_scale_up_at"),
                    int(data.get("surplus_passes", 0)), float(data.get("removed_cost", 0.0)))
        for name, b in (data.get("outposts") or {}).items():
            hourly = b.pop("last_seen_hourly", None)
            state.breakers[name] = Breaker(**b)
            if hourly is not None:
                state.last_seen_hourly[name] = float(hourly)
        for cid, m in (data.get("containers") or {}).items():
            state.containers[cid] = ContainerMemory(**m)
        for name, w in (data.get("crash_loops") or {}).items():
            state.crash_loops[name] = CrashWatch(w["streak"], Breaker(**w["hold"]),
                                                 w.get("last_exit_code"))
        return state


# --- one pass, decided --------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    target: int
    live: int  # live workers counted toward the target (those marked in error are not)
    placement: Placement
    gate: ScaleDownGate
    drains: tuple[Worker, ...]
    restarts: tuple[Worker, ...]
    give_up: tuple[tuple[Worker, str], ...]  # failing too often after restarts: mark and notify
    removals: tuple[Worker, ...]
    health_failures: Mapping[str, int]  # container id -> consecutive failures after this pass
    verdicts: Mapping[str, Verdict]
    agents_known: bool
    # Townhall's answers contradict each other: no drain, restart or give-up this pass.
    conflicts: tuple[str, ...] = ()
    unknown: tuple[Worker, ...] = ()  # containers whose verdict is unknown (see ``verdicts``)

    @property
    def shortfall(self) -> int:
        return max(0, self.target - self.live)

    @property
    def surplus(self) -> int:
        return max(0, self.live - self.target)


def hourly_cost(workers: Iterable[Worker]) -> float:
    return sum(w.cost_per_hour for w in workers if w.live)


def plan_pass(config: Config, signal_: Signal, agents: Mapping[str, Agent] | None,
              workers: Sequence[Worker], outposts: Sequence[OutpostView], state: State,
              now: float, unseen_hourly: float = 0.0) -> Plan:
    """Decide one pass. ``agents`` is None when the agent list was unavailable: then nothing is
    drained and nobody is judged. When townhall's answers contradict each other
    (:func:`evidence_conflicts`) nothing is drained or judged either, and every health count
    starts again. ``unseen_hourly`` is the last known hourly cost of outposts not seen this pass,
    counted against the cost cap so a network blip cannot double the spend. Starts and removals
    of exited containers go on in both cases."""
    target = clamp_target(signal_.desired_agents, config.min_workers, config.max_workers)
    live = [w for w in workers if w.live]
    # A container marked in error, or asked to drain, still costs money and takes its outpost's
    # room, but it will do no more work: it does not count toward the target.
    leaving = {cid for cid, m in state.containers.items()
               if m.marked_error_at is not None or m.drain_requested_at is not None}
    serving = [w for w in live if w.container_id not in leaving]
    placement = choose_outposts(max(0, target - len(serving)), outposts,
                                hourly_cost(live) + unseen_hourly, config.cost_cap_hourly)

    surplus = max(0, len(serving) - target)
    gate = scale_down_gate(signal_.scaling_recommendation, surplus, state.surplus_passes,
                           state.last_scale_up_at, now, config.scale_down_cooldown_secs,
                           config.scale_down_after_passes)
    conflicts = () if agents is None else evidence_conflicts(signal_, agents, workers, now,
                                                             config.start_grace_secs)
    drains: list[Worker] = []
    if agents is None and gate.allowed:
        gate = ScaleDownGate(False, gate.surplus_passes, "agent list unavailable")
    elif conflicts and surplus:
        gate = ScaleDownGate(False, 0, f"evidence inconsistent: {conflicts[0]}")
    elif gate.allowed:
        drains = drain_candidates(serving, agents or {}, surplus, [o.name for o in outposts],
                                  config.trust_townhall_alone)

    failures: dict[str, int] = {}
    verdicts: dict[str, Verdict] = {}
    restarts: list[Worker] = []
    give_up: list[tuple[Worker, str]] = []
    if agents is not None:
        drained_now = {w.container_id for w in drains}
        for w in live:
            memory = state.containers.get(w.container_id) or ContainerMemory(w.outpost)
            if memory.marked_error_at is not None or w.container_id in drained_now:
                continue
            if conflicts:
                verdict = Verdict(False, True, f"townhall inconsistent: {conflicts[0]}",
                                  EVIDENCE_INCONSISTENT)
            else:
                quiet_since = max(memory.restarted_at or 0.0, memory.drain_requested_at or 0.0)
                verdict = health_verdict(w, agents.get(w.agent_id or ""), now,
                                         config.unhealthy_after_secs, config.start_grace_secs,
                                         quiet_since or None, config.trust_townhall_alone)
            verdicts[w.container_id] = verdict
            count = next_failure_count(memory.health_failures, verdict)
            failures[w.container_id] = count
            if count >= config.restart_after_failures:
                if memory.restarts >= config.max_restarts:
                    give_up.append((w, f"{verdict.reason} after {memory.restarts} restarts"))
                else:
                    restarts.append(w)

    unknown = tuple(w for w in live if not conflicts and verdicts.get(w.container_id)
                    and verdicts[w.container_id].unknown)
    return Plan(target, len(serving), placement, gate, tuple(drains), tuple(restarts),
                tuple(give_up), tuple(exited_to_remove(workers, config.keep_exited)), failures,
                verdicts, agents is not None, conflicts, unknown)


# ================================================================================================
# Townhall client
# ================================================================================================
class TownhallError(Exception):
    """Townhall unreachable, not 200, or its answer malformed; the message says which and why."""


class Townhall:
    def __init__(self, config: Config):
        self.base = config.url.rstrip("/")
        self.timeout = config.http_timeout_secs
        self.session = requests.Session()
        self.session.headers["Accept"] = "application/json"
        if config.api_key:
            self.session.headers["Authorization"] = f"Bearer {config.api_key}"
        if config.townhall_ca_file:
            self.session.verify = os.path.expanduser(config.townhall_ca_file)

    def _get(self, path: str) -> Any:
        url = self.base + path
        try:
            response = self.session.get(url, timeout=self.timeout)
        except requests.RequestException as err:
            raise TownhallError(f"GET {url} failed ({short_reason(err)}); is townhall running "
                                "and is --url right?") from None
        if response.status_code != 200:
            hint = " (check the API key and its town.read scope)" \
                if response.status_code in (401, 403) else ""
            raise TownhallError(f"GET {url} answered {response.status_code}{hint}: "
                                f"{response.text[:200]!r}")
        try:
            return response.json()
        except ValueError:
            raise TownhallError(f"GET {url} answered 200 with a body that is not JSON: "
                                f"{response.text[:200]!r}") from None

    def scaling_signal(self) -> Signal:
        body = self._get("/api/scaling")
        try:
            return parse_signal(body)
        except Malformed as err:
            raise TownhallError(f"GET {self.base}/api/scaling is malformed: {err}") from None

    def agents(self) -> dict[str, Agent]:
        body = self._get("/v1/agents")
        try:
            return parse_agents(body)
        except Malformed as err:
            raise TownhallError(f"GET {self.base}/v1/agents is malformed: {err}") from None


# ================================================================================================
# Docker outposts
# ================================================================================================
class OutpostError(Exception):
    pass


def short_reason(err: Exception) -> str:
    """The useful part of a requests or Docker SDK error: its errno text when there is one."""
    text = str(err)
    errno = re.search(r"\[Errno -?\d+\] [^'\")\]]+", text)
    if errno:
        return errno.group(0).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(err).__name__}: {first}"[:300]


def worker_healthcheck(config: Config) -> dict[str, Any]:
    """The Docker healthcheck every worker container gets: ``config.healthcheck`` (by default
    ``python -P -m tinytown.worker.health_file``, which judges the worker's health file by the worker's
    own heartbeat interval) run once per heartbeat interval; unhealthy after
    HEALTHCHECK_RETRIES failures in a row, not counted within the start grace."""
    ns = 1_000_000_000
    return {"test": ["CMD", *shlex.split(config.healthcheck)],
            "interval": int(config.heartbeat_interval_secs * ns),
            "timeout": int(HEALTHCHECK_TIMEOUT_SECS * ns), "retries": HEALTHCHECK_RETRIES,
            "start_period": int(config.start_grace_secs * ns)}


class DockerOutpost:
    """One outpost's Docker engine. Every call raises OutpostError with a readable reason."""

    def __init__(self, outpost: Outpost, timeout_secs: float):
        self.outpost = outpost
        self.timeout = int(math.ceil(timeout_secs))
        self._client: docker.DockerClient | None = None

    @property
    def name(self) -> str:
        return self.outpost.name

    def client(self) -> docker.DockerClient:
        if self._client is None:
            o = self.outpost
            try:
                if o.docker_host is None:
                    self._client = docker.from_env(timeout=self.timeout)
                else:
                    tls = None
                    if o.tls_ca or o.tls_cert:
                        cert = (o.tls_cert, o.tls_key) if o.tls_cert else None
                        tls = docker.tls.TLSConfig(client_cert=cert, ca_cert=o.tls_ca,
                                                   verify=o.tls_verify)
                    # use_ssh_client: the system ssh binary, so paramiko is not needed.
                    self._client = docker.DockerClient(
                        base_url=o.docker_host, tls=tls or False, timeout=self.timeout,
                        use_ssh_client=o.docker_host.startswith("ssh://"))
            except Exception as err:  # the SDK raises DockerException, OSError, ValueError…
                raise OutpostError(f"cannot reach Docker at {o.docker_host or 'the local engine'}"
                                   f": {short_reason(err)}") from None
        return self._client

    def _call(self, what: str, fn, *args, missing_ok: bool = False, **kwargs):
        """``fn(*args, **kwargs)``; with ``missing_ok``, None when Docker answers 404."""
        try:
            return fn(*args, **kwargs)
        except OutpostError:
            raise
        except Exception as err:
            if not isinstance(err, docker.errors.NotFound):
                self._client = None  # reconnect next time
            elif missing_ok:
                return None
            raise OutpostError(f"{what} on outpost {self.name}: {short_reason(err)}") from None

    def list_workers(self, town: str | None, full: bool = False) -> list[Worker]:
        labels = [f"{LABEL_ROLE}={ROLE}", f"{LABEL_OUTPOST}={self.name}"]
        if town:
            labels.append(f"{LABEL_TOWN}={town}")
        containers = self._call("list containers", lambda: self.client().containers.list(
            all=True, filters={"label": labels}, sparse=not full, ignore_removed=True))
        workers = []
        for c in containers:
            if not full and c.attrs.get("State") in EXITED_STATUSES:
                # Only an inspect tells its exit code and how long it ran (crash loops).
                self._call("inspect container", c.reload, missing_ok=True)
                if not isinstance(c.attrs.get("State"), dict):
                    continue  # removed meanwhile
            workers.append(worker_from_attrs(c.attrs, self.outpost))
        return workers

    def start_worker(self, config: Config, town: str, now: float,
                     environ: Mapping[str, str]) -> tuple[str, str, str]:
        """Create and start one worker; returns (container id, container name, agent id)."""
        agent_id = str(uuid.uuid4())
        short = agent_id[:8]
        name = f"tt-{town}-{self.name}-{short}"
        env = {k: environ[k] for k in config.pass_env if k in environ}
        env.update(config.env)
        env.setdefault("TINYTOWN_TOWN_NAME", town)
        env.setdefault(HEALTH_FILE_ENV, HEALTH_FILE)
        env.update(TINYTOWN_AGENT_ID=agent_id, TINYTOWN_AGENT_NAME=f"{self.name}-{short}",
                   TINYTOWN_OUTPOST=self.name)
        labels = {LABEL_TOWN: town, LABEL_ROLE: ROLE, LABEL_OUTPOST: self.name,
                  LABEL_AGENT_ID: agent_id, LABEL_STARTED_AT: iso(now),
                  LABEL_COST_PER_HOUR: f"{self.outpost.cost_per_hour:g}"}
        mounts = []
        volume = workspace_volume_name(config, town)
        if volume:
            self.ensure_workspace_volume(volume, config.image, town)
            mounts.append(docker.types.Mount(target=config.workspace, source=volume,
                                             type="volume"))
        volumes = {}
        for spec in config.volumes:
            source, target, *mode = spec.split(":")
            volumes[source] = {"bind": target, "mode": mode[0] if mode else "rw"}
        kwargs: dict[str, Any] = dict(
            name=name, labels=labels, environment=env, detach=True, mounts=mounts,
            volumes=volumes, restart_policy={"Name": "no"}, network=config.network)
        if config.command:
            kwargs["command"] = shlex.split(config.command)
        if config.healthcheck != IMAGE_HEALTHCHECK:
            kwargs["healthcheck"] = worker_healthcheck(config)
        client = self.client()
        container = self._call("create container", client.containers.create, config.image,
                               **kwargs)
        try:
            self._call("start container", container.start)
        except OutpostError:
            with contextlib.suppress(Exception):
                container.remove(force=True, v=True)
            raise
        return container.id, name, agent_id

    def ensure_workspace_volume(self, name: str, image: str, town: str) -> None:
        """Create the town's shared workspace volume on this engine if it is missing, owned by
        the image's user: a new volume's root belongs to root, and the worker runs as 10001.
        Checked before every start: Docker would silently create a deleted one owned by root."""
        client = self.client()
        if self._call("inspect volume", client.volumes.get, name, missing_ok=True) is None:
            image_config = self._call("inspect image", client.images.get, image).attrs.get("Config")
            user = (image_config or {}).get("User") or ""
            labels = {LABEL_TOWN: town, LABEL_ROLE: ROLE_WORKSPACE, LABEL_OUTPOST: self.name}
            volume = self._call("create volume", client.volumes.create, name=name, labels=labels)
            try:
                if user.split(":")[0] not in ("", "0", "root"):
                    self._hand_over(volume.name, image, user, {**labels,
                                                               LABEL_ROLE: ROLE_WORKSPACE_INIT})
            except BaseException:
                with contextlib.suppress(Exception):
                    volume.remove(force=True)  # so that the next start tries again
                raise
            log("info", "workspace_volume_created", outpost=self.name, volume=name, owner=user)

    def _hand_over(self, volume: str, image: str, user: str, labels: dict[str, str]) -> None:
        """``chown USER`` the volume's root in a one-off root container of the worker image."""
        container = self._call(
            "create workspace-init container", self.client().containers.create, image,
            entrypoint=["chown", user, WORKSPACE_INIT_MOUNT], user="0",
            labels=labels, network_mode="none", detach=True,
            mounts=[docker.types.Mount(target=WORKSPACE_INIT_MOUNT, source=volume,
                                       type="volume")])
        try:
            self._call("start workspace-init container", container.start)
            code = self._call("wait for workspace-init container", container.wait,
                              timeout=self.timeout).get("StatusCode")
            if code != 0:
                output = self._call("read workspace-init logs", container.logs).decode(
                    errors="replace").strip()
                raise OutpostError(f"chown {user} of workspace volume {volume} on outpost "
                                   f"{self.name} exited {code}: {output[-300:]}")
        finally:
            with contextlib.suppress(Exception):
                container.remove(force=True)

    def log_tail(self, container_id: str, lines: int) -> str | None:
        """The last ``lines`` lines a container wrote (stdout and stderr), None if unreadable:
        best effort, for a notification."""
        try:
            container = self.client().containers.get(container_id)
            return container.logs(tail=lines).decode(errors="replace")
        except (docker.errors.DockerException, requests.RequestException) as err:
            log("warning", "logs_unreadable", container=container_id[:12], error=short_reason(err))
            return None

    def health(self, container_id: str) -> str | None:
        """The container's Docker health now (inspected): starting, healthy, unhealthy or None."""
        container = self._call("get container", self.client().containers.get, container_id)
        return container_health(container.attrs)

    def drain(self, container_id: str) -> None:
        container = self._call("get container", self.client().containers.get, container_id)
        self._call("SIGTERM container", container.kill, signal="SIGTERM")

    def restart(self, container_id: str, timeout_secs: float) -> None:
        container = self._call("get container", self.client().containers.get, container_id)
        self._call("restart container", container.restart, timeout=int(timeout_secs))

    def remove(self, container_id: str) -> Worker | None:
        """Remove an exited container (and any anonymous volume; never the named workspace
        volume); returns it as last inspected, for its cost."""
        container = self._call("get container", self.client().containers.get, container_id)
        worker = worker_from_attrs(container.attrs, self.outpost)
        self._call("remove container", container.remove, v=True)
        return worker


# ================================================================================================
# Notifications
# ================================================================================================
def notify(config: Config, event: dict[str, Any]) -> None:
    """Run the notification hook(s); failures are logged, never raised."""
    payload = json.dumps(event)
    if config.notify_command:
        env = {**os.environ, "TINYTOWN_EVENT": event["event"],
               "TINYTOWN_TOWN": event.get("town") or "", "TINYTOWN_OUTPOST": event.get("outpost")
               or "", "TINYTOWN_CONTAINER_ID": event.get("container_id") or "",
               "TINYTOWN_AGENT_ID": event.get("agent_id") or ""}
        try:
            done = subprocess.run(shlex.split(config.notify_command), input=payload, text=True,
                                  env=env, timeout=NOTIFY_TIMEOUT_SECS, capture_output=True)
            if done.returncode != 0:
                log("warning", "notify_command_failed", exit_code=done.returncode,
                    stderr=done.stderr[-300:])
        except (OSError, subprocess.SubprocessError) as err:
            log("warning", "notify_command_failed", error=str(err))
    if config.notify_webhook:
        try:
            response = requests.post(config.notify_webhook, data=payload,
                                     headers={"Content-Type": "application/json"},
                                     timeout=NOTIFY_TIMEOUT_SECS)
            if response.status_code >= 300:
                log("warning", "notify_webhook_failed", status=response.status_code)
        except requests.RequestException as err:
            log("warning", "notify_webhook_failed", error=str(err))


# ================================================================================================
# Reconcile: one pass of reading, planning and acting
# ================================================================================================
class StateOfAnotherTown(ConfigError):
    """The state file belongs to another town; it is neither used nor replaced."""

    def __init__(self, path: Path, state_town: str, town: str):
        self.path, self.state_town, self.town = path, state_town, town
        super().__init__(
            f"state file {path} belongs to town {state_town!r}, not {town!r} (the town this "
            f"scaler serves); refusing to use or replace it. Give each town its own state file "
            f"(--state-file or {ENV_PREFIX}STATE_FILE), or delete {path} if town "
            f"{state_town!r} is no longer scaled from here")


def load_state(path: Path, town: str) -> State:
    """The town's state from ``path``; empty when the file is missing (or unreadable, logged).
    Raises StateOfAnotherTown when the file names another town."""
    try:
        data = json.loads(path.read_text())
        state = State.from_json(data)
    except FileNotFoundError:
        return State(town=town)
    except (OSError, ValueError, TypeError, AttributeError) as err:
        log("warning", "state_unreadable", path=str(path), error=str(err),
            action="starting from empty state")
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


@dataclass
class Report:
    """What a pass did; printed as one JSON line with --json."""

    exit_status: ExitStatus = ExitStatus.SUCCESS
    town: str | None = None
    error: str | None = None
    signal: Signal | None = None
    plan: dict[str, Any] | None = None
    actions: list[dict[str, Any]] = field(default_factory=list)
    outposts: list[dict[str, Any]] = field(default_factory=list)
    cost: dict[str, Any] | None = None

    def to_json(self, now: float, dry_run: bool) -> dict[str, Any]:
        return {"ts": iso(now), "town": self.town, "dry_run": dry_run,
                "exit_code": int(self.exit_status), "error": self.error,
                "signal": dataclasses.asdict(self.signal) if self.signal else None,
                "plan": self.plan, "actions": self.actions, "outposts": self.outposts,
                "cost": self.cost}


def _worker_ref(w: Worker) -> dict[str, Any]:
    return {"container_id": w.container_id[:12], "name": w.name, "outpost": w.outpost,
            "agent_id": w.agent_id}


class Scaler:
    """Holds the clients and the state between passes; ``run_pass`` is one reconcile."""

    def __init__(self, config: Config, environ: Mapping[str, str], dry_run: bool = False):
        self.config = config
        self.environ = environ
        self.dry_run = dry_run
        self.townhall = Townhall(config)
        self.outposts = [DockerOutpost(o, config.docker_timeout_secs) for o in config.outposts]
        self.memory: State | None = None  # kept across passes only in --dry-run

    def run_pass(self, now: float) -> Report:
        report = Report(town=self.config.town)
        # 1. The signal. Without a valid one nothing at all is done, not even to the state file.
        sig = self._signal(report)
        if sig is None:
            return report
        path = state_path(self.config, self.environ, sig.town)
        try:
            if self.dry_run:
                if self.memory is None or self.memory.town != sig.town:
                    self.memory = load_state(path, sig.town)
                return self._pass(self.memory, sig, now, report)
            with pass_lock(path) as held:
                if not held:
                    log("warning", "pass_skipped", reason="another scaler pass holds the lock",
                        lock=str(path) + ".lock")
                    report.error = "another scaler pass holds the lock"
                    return report
                state = load_state(path, sig.town)
                self._pass(state, sig, now, report)
                save_state(path, state, now)
                return report
        except StateOfAnotherTown as err:
            log("error", "state_other_town", path=str(err.path), state_town=err.state_town,
                town=err.town, error=str(err), action="nothing done; the file is left as it is")
            report.error, report.exit_status = str(err), ExitStatus.CONFIG_ERROR
            return report
        except OSError as err:
            message = (f"state file {path}: {err.strerror or err}; set --state-file "
                       f"or {ENV_PREFIX}STATE_FILE to a writable path")
            log("error", "state_file_unwritable", error=message)
            report.error, report.exit_status = message, ExitStatus.CONFIG_ERROR
            return report

    def _signal(self, report: Report) -> Signal | None:
        """The scaling signal of the configured town, or None (logged and reported)."""
        config = self.config
        try:
            sig = self.townhall.scaling_signal()
            if config.town and sig.town != config.town:
                raise TownhallError(f"townhall at {config.url} serves town {sig.town!r}, not the "
                                    f"configured town {config.town!r}")
        except TownhallError as err:
            log("error", "signal_unavailable", reason=str(err), action="nothing changed")
            report.error, report.exit_status = str(err), ExitStatus.TOWNHALL_UNAVAILABLE
            return None
        report.signal, report.town = sig, sig.town
        return sig

    def _pass(self, state: State, sig: Signal, now: float, report: Report) -> Report:
        config = self.config
        # 2. What runs where. An outpost whose breaker is open is not contacted.
        workers, views, unseen_hourly = self._survey(state, sig.town, now, report)
        if not any(v.available for v in views):
            report.error = "no outpost reachable"
            report.exit_status = ExitStatus.DOCKER_UNAVAILABLE
            log("error", "docker_unavailable", reason="every outpost failed or is in backoff",
                action="nothing changed")
            return report

        views = self._watch_crashes(workers, views, state, sig.town, now, report)

        # 3. The agents, for busy checks and health. Without them: starts only.
        agents: dict[str, Agent] | None
        try:
            agents = self.townhall.agents()
        except TownhallError as err:
            agents = None
            report.error = str(err)
            report.exit_status = ExitStatus.TOWNHALL_UNAVAILABLE
            log("warning", "agents_unavailable", reason=str(err),
                action="starting workers only: no drains, no health checks")

        # 4. Decide, then act.
        plan = plan_pass(config, sig, agents, workers, views, state, now, unseen_hourly)
        report.plan = self._describe(plan)
        state.surplus_passes = plan.gate.surplus_passes
        self._log_evidence(plan, sig.town)
        outpost_of = {w.container_id: w.outpost for w in workers}
        for cid, count in plan.health_failures.items():
            memory = state.containers.setdefault(cid, ContainerMemory(outpost_of[cid]))
            if count > memory.health_failures:
                log("warning", "worker_unhealthy", container=cid[:12], failures=count,
                    reason=plan.verdicts[cid].reason)
            memory.health_failures = count
        if not self.dry_run:
            started = self._start(plan, views, workers, state, sig.town, now, report,
                                  unseen_hourly)
            if plan.shortfall and not started and report.actions:
                report.error = "every start attempt failed"
                report.exit_status = ExitStatus.DOCKER_UNAVAILABLE
            self._drain(plan, state, now, report)
            self._restart(plan, state, now, report, sig.town)
            self._remove(plan, state, report)
        report.cost = self._cost(workers, state, now)
        return report

    def _log_evidence(self, plan: Plan, town: str) -> None:
        """One line per contradiction, and per container whose verdict is unknown."""
        for conflict in plan.conflicts:
            log("warning", EVIDENCE_INCONSISTENT, town=town, reason=conflict,
                action="nothing destructive this pass: no drain, restart or give-up; starts and "
                       "removals of exited containers go on")
        for w in plan.unknown:
            verdict = plan.verdicts[w.container_id]
            log("warning", verdict.unknown, container=w.container_id[:12], agent_id=w.agent_id,
                outpost=w.outpost, health=w.health, reason=verdict.reason,
                action="not restarted or drained")

    def _survey(self, state: State, town: str, now: float,
                report: Report) -> tuple[list[Worker], list[OutpostView], float]:
        """List workers on every outpost whose breaker is closed, updating the breakers.

        Returns the workers, one view per outpost, and the last known hourly cost of the outposts
        that could not be seen."""
        workers: list[Worker] = []
        views: list[OutpostView] = []
        unseen_hourly = 0.0
        config = self.config
        for outpost in self.outposts:
            o = outpost.outpost
            breaker = state.breakers.get(o.name, Breaker())
            entry = {"name": o.name, "max_workers": o.max_workers,
                     "cost_per_hour": o.cost_per_hour, "reachable": None, "live": None,
                     "breaker_failures": breaker.failures, "error": breaker.last_error,
                     "breaker_open_until": iso(breaker.open_until) if breaker.failures else None}
            report.outposts.append(entry)
            found = None
            if not breaker.is_open(now):
                try:
                    found = outpost.list_workers(town)
                except OutpostError as err:
                    breaker = breaker.failed(now, str(err), config.breaker_backoff_secs,
                                             config.breaker_backoff_max_secs)
                    state.breakers[o.name] = breaker
                    log("warning", "outpost_unreachable", outpost=o.name, error=str(err),
                        retry_at=iso(breaker.open_until))
                    entry.update(reachable=False, error=str(err), breaker_failures=breaker.failures,
                                 breaker_open_until=iso(breaker.open_until))
            if found is None:
                unseen_hourly += state.last_seen_hourly.get(o.name, 0.0)
                views.append(OutpostView(o.name, o.max_workers, o.cost_per_hour, False, 0))
                continue
            if breaker.failures:
                log("info", "outpost_recovered", outpost=o.name)
            state.breakers[o.name] = breaker.succeeded()
            state.last_seen_hourly[o.name] = hourly_cost(found)
            live = sum(1 for w in found if w.live)
            entry.update(reachable=True, live=live, error=None, breaker_failures=0,
                         breaker_open_until=None)
            views.append(OutpostView(o.name, o.max_workers, o.cost_per_hour, True, live))
            workers.extend(found)
        self._forget_gone(state, workers, {v.name for v in views if v.available})
        return workers, views, unseen_hourly

    def _watch_crashes(self, workers: Sequence[Worker], views: list[OutpostView], state: State,
                       town: str, now: float, report: Report) -> list[OutpostView]:
        """Count exits not seen before; hold starts on an outpost whose workers crash-loop and
        notify once per crash loop. Returns the views with holds and trial limits applied."""
        config = self.config
        limited = []
        for view, entry in zip(views, report.outposts):
            watch = state.crash_loops.get(view.name, CrashWatch())
            if view.available:
                fresh = []
                for w in workers:
                    if w.outpost != view.name or w.status not in EXITED_STATUSES:
                        continue
                    memory = state.containers.setdefault(w.container_id,
                                                         ContainerMemory(w.outpost))
                    # A worker the scaler drained or gave up on did not crash by itself.
                    if not memory.exit_counted and memory.drain_requested_at is None \
                            and memory.marked_error_at is None:
                        fresh.append(w)
                    memory.exit_counted = True
                watch, opened = watch_exits(
                    watch, fresh, now, config.crash_loop_after_exits, config.quick_exit_secs,
                    config.breaker_backoff_secs, config.breaker_backoff_max_secs)
                if opened is not None:
                    self._hold_starts(view.name, watch, opened, town, now, report)
                if watch == CrashWatch():
                    state.crash_loops.pop(view.name, None)
                else:
                    state.crash_loops[view.name] = watch
            entry.update(crash_exits=watch.streak, starts_held_until=iso(watch.hold.open_until)
                         if watch.hold.is_open(now) else None)
            limited.append(crash_limited(view, watch, now, config.crash_loop_after_exits))
        return limited

    def _hold_starts(self, outpost: str, watch: CrashWatch, w: Worker, town: str, now: float,
                     report: Report) -> None:
        hold = watch.hold
        log("error", "outpost_crash_loop", outpost=outpost, exits=watch.streak,
            exit_code=w.exit_code, container=w.container_id[:12],
            held_until=iso(hold.open_until))
        if self.dry_run:
            return  # the plan says why nothing starts there; a dry run notifies nobody
        report.actions.append({"action": "hold_starts", **_worker_ref(w), "ok": True,
                               "exit_code": w.exit_code, "exits": watch.streak,
                               "until": iso(hold.open_until)})
        if hold.failures > 1:
            return  # one notification per crash loop
        by_name = {o.name: o for o in self.outposts}
        notify(self.config, {
            "event": "outpost_crash_loop", "town": town, "outpost": outpost,
            "container_id": w.container_id, "container_name": w.name, "agent_id": w.agent_id,
            "exit_code": w.exit_code, "exits": watch.streak, "reason": hold.last_error,
            "held_until": iso(hold.open_until),
            "log_tail": by_name[outpost].log_tail(w.container_id, CRASH_LOG_LINES),
            "timestamp": iso(now)})

    def _forget_gone(self, state: State, workers: Sequence[Worker], seen: set[str]) -> None:
        present = {w.container_id for w in workers}
        for cid, memory in list(state.containers.items()):
            if memory.outpost in seen and cid not in present:
                del state.containers[cid]
        for name in list(state.breakers):
            if name not in {o.name for o in self.outposts}:
                del state.breakers[name]
                state.last_seen_hourly.pop(name, None)

    def _describe(self, plan: Plan) -> dict[str, Any]:
        return {
            "target": plan.target, "live": plan.live, "shortfall": plan.shortfall,
            "surplus": plan.surplus, "starts": list(plan.placement.outposts),
            "unplaced": plan.placement.unplaced, "unplaced_reason": plan.placement.reason,
            "scale_down": {"allowed": plan.gate.allowed, "reason": plan.gate.reason,
                           "surplus_passes": plan.gate.surplus_passes},
            "drains": [_worker_ref(w) for w in plan.drains],
            "restarts": [_worker_ref(w) for w in plan.restarts],
            "give_up": [{**_worker_ref(w), "reason": r} for w, r in plan.give_up],
            "removals": [_worker_ref(w) for w in plan.removals],
            "health_checked": plan.agents_known,
            "evidence_inconsistent": list(plan.conflicts),
            "unknown": [{**_worker_ref(w), "health": w.health,
                         "evidence": plan.verdicts[w.container_id].unknown,
                         "reason": plan.verdicts[w.container_id].reason} for w in plan.unknown],
        }

    def _start(self, plan: Plan, views: list[OutpostView], workers: list[Worker], state: State,
               town: str, now: float, report: Report, unseen_hourly: float) -> int:
        if plan.placement.unplaced:
            log("warning", "start_limited", wanted=plan.shortfall,
                placed=len(plan.placement.outposts), reason=plan.placement.reason)
        by_name = {o.name: o for o in self.outposts}
        started = 0
        hourly = hourly_cost(workers) + unseen_hourly
        for _ in range(plan.shortfall):
            # Re-place each start: a failed outpost drops out and the next one is tried.
            pick = choose_outposts(1, views, hourly, self.config.cost_cap_hourly)
            if not pick.outposts:
                break
            name = pick.outposts[0]
            outpost = by_name[name]
            index = next(i for i, v in enumerate(views) if v.name == name)
            try:
                cid, cname, agent_id = outpost.start_worker(self.config, town, time.time(),
                                                            self.environ)
            except OutpostError as err:
                breaker = state.breakers.get(name, Breaker()).failed(
                    now, str(err), self.config.breaker_backoff_secs,
                    self.config.breaker_backoff_max_secs)
                state.breakers[name] = breaker
                views[index] = dataclasses.replace(views[index], available=False)
                log("error", "start_failed", outpost=name, error=str(err),
                    retry_at=iso(breaker.open_until))
                report.actions.append({"action": "start", "outpost": name, "ok": False,
                                       "error": str(err)})
                continue
            started += 1
            hourly += outpost.outpost.cost_per_hour
            state.last_seen_hourly[name] = state.last_seen_hourly.get(name, 0.0) + \
                outpost.outpost.cost_per_hour
            views[index] = dataclasses.replace(views[index], live=views[index].live + 1)
            state.last_scale_up_at = now
            state.containers[cid] = ContainerMemory(name)
            log("info", "worker_started", outpost=name, container=cid[:12], name=cname,
                agent_id=agent_id)
            report.actions.append({"action": "start", "outpost": name, "ok": True,
                                   "container_id": cid[:12], "name": cname,
                                   "agent_id": agent_id})
        return started

    def _drain(self, plan: Plan, state: State, now: float, report: Report) -> None:
        if plan.drains:
            state.surplus_passes = 0  # the next drain needs a fresh run of surplus passes
        for w in plan.drains:
            outpost = next(o for o in self.outposts if o.name == w.outpost)
            # The plan's agent list is seconds old: an Idle worker may have taken a task since.
            # Both witnesses are asked again: townhall, then the container's own health.
            try:
                veto = drain_veto(self.townhall.agents().get(w.agent_id or ""))
            except TownhallError as err:
                veto = f"agent list unavailable: {err}"
            veto = veto or self._health_veto(outpost, w, "healthy")
            if veto:
                log("info", "drain_skipped", container=w.container_id[:12], agent_id=w.agent_id,
                    outpost=w.outpost, reason=veto)
                report.actions.append({"action": "drain_skipped", **_worker_ref(w), "ok": True,
                                       "reason": veto})
                continue
            try:
                outpost.drain(w.container_id)
            except OutpostError as err:
                log("error", "drain_failed", container=w.container_id[:12], error=str(err))
                report.actions.append({"action": "drain", **_worker_ref(w), "ok": False,
                                       "error": str(err)})
                continue
            state.containers.setdefault(w.container_id, ContainerMemory(w.outpost)) \
                .drain_requested_at = now
            log("info", "worker_drain_requested", container=w.container_id[:12],
                agent_id=w.agent_id, outpost=w.outpost, reason=plan.gate.reason)
            report.actions.append({"action": "drain", **_worker_ref(w), "ok": True})

    def _restart(self, plan: Plan, state: State, now: float, report: Report, town: str) -> None:
        for w, reason in plan.give_up:
            self._mark_error(w, state, now, report, town, reason, None)
        for w in plan.restarts:
            memory = state.containers.setdefault(w.container_id, ContainerMemory(w.outpost))
            reason = plan.verdicts[w.container_id].reason
            outpost = next(o for o in self.outposts if o.name == w.outpost)
            # Docker's health is asked again just before: a worker that recovered is spared.
            veto = self._health_veto(outpost, w, "unhealthy")
            if veto:
                memory.health_failures = 0
                log("info", "restart_skipped", container=w.container_id[:12],
                    agent_id=w.agent_id, outpost=w.outpost, reason=veto)
                report.actions.append({"action": "restart_skipped", **_worker_ref(w),
                                       "ok": True, "reason": veto})
                continue
            try:
                outpost.restart(w.container_id, self.config.restart_timeout_secs)
            except OutpostError as err:
                self._mark_error(w, state, now, report, town, reason, str(err))
                continue
            memory.restarts += 1
            memory.restarted_at, memory.health_failures = time.time(), 0
            memory.drain_requested_at = None  # a fresh worker process: it serves again
            log("warning", "worker_restarted", container=w.container_id[:12],
                agent_id=w.agent_id, outpost=w.outpost, reason=reason, restarts=memory.restarts)
            report.actions.append({"action": "restart", **_worker_ref(w), "ok": True,
                                   "reason": reason})

    def _health_veto(self, outpost: DockerOutpost, w: Worker, wanted: str) -> str | None:
        """Why the container's Docker health, inspected now, does not confirm the action
        (``wanted`` is ``healthy`` for a drain, ``unhealthy`` for a restart), or None."""
        try:
            health = outpost.health(w.container_id)
        except OutpostError as err:
            return f"container health unreadable: {err}"
        if health == wanted or (health is None and self.config.trust_townhall_alone):
            return None
        return "no Docker healthcheck" if health is None else f"Docker health now {health}"

    def _mark_error(self, w: Worker, state: State, now: float, report: Report, town: str,
                    reason: str, error: str | None) -> None:
        memory = state.containers.setdefault(w.container_id, ContainerMemory(w.outpost))
        memory.marked_error_at, memory.marked_reason = now, error or reason
        event = {"event": "worker_restart_failed" if error else "worker_restarts_exhausted",
                 "town": town, "outpost": w.outpost, "container_id": w.container_id,
                 "container_name": w.name, "agent_id": w.agent_id, "reason": reason,
                 "error": error, "restarts": memory.restarts, "timestamp": iso(now)}
        log("error", event["event"], container=w.container_id[:12], agent_id=w.agent_id,
            outpost=w.outpost, reason=reason, error=error)
        report.actions.append({"action": "mark_error", **_worker_ref(w), "ok": True,
                               "reason": reason, "error": error})
        notify(self.config, event)

    def _remove(self, plan: Plan, state: State, report: Report) -> None:
        for w in plan.removals:
            outpost = next(o for o in self.outposts if o.name == w.outpost)
            try:
                gone = outpost.remove(w.container_id)
            except OutpostError as err:
                log("warning", "remove_failed", container=w.container_id[:12], error=str(err))
                report.actions.append({"action": "remove", **_worker_ref(w), "ok": False,
                                       "error": str(err)})
                continue
            state.removed_cost += (gone or w).cost_so_far(time.time())
            state.containers.pop(w.container_id, None)
            log("info", "worker_removed", container=w.container_id[:12], agent_id=w.agent_id,
                outpost=w.outpost)
            report.actions.append({"action": "remove", **_worker_ref(w), "ok": True})

    def _cost(self, workers: Sequence[Worker], state: State, now: float) -> dict[str, Any]:
        """Hourly rate (last seen on every outpost, this pass's starts included) and cost so far."""
        live = [w for w in workers if w.live]
        return {"hourly": round(sum(state.last_seen_hourly.values()), 6),
                "cap_hourly": self.config.cost_cap_hourly,
                "live_so_far": round(sum(w.cost_so_far(now) for w in live), 6),
                "removed_total": round(state.removed_cost, 6)}


# ================================================================================================
# status
# ================================================================================================
def run_status(config: Config, environ: Mapping[str, str], as_json: bool) -> ExitStatus:
    townhall = Townhall(config)
    now = time.time()
    town, sig, agents, townhall_error, state_error = config.town, None, None, None, None
    try:
        sig = townhall.scaling_signal()
        if town and sig.town != town:
            raise TownhallError(f"townhall at {config.url} serves town {sig.town!r}, not the "
                                f"configured town {town!r}")
        town = sig.town
        agents = townhall.agents()
    except TownhallError as err:
        townhall_error = str(err)
        log("warning", "townhall_unavailable", reason=str(err), action="agent states unknown")
    state = State(town=town)
    if town:
        try:
            state = load_state(state_path(config, environ, town), town)
        except StateOfAnotherTown as err:
            state_error = str(err)
            log("warning", "state_other_town", path=str(err.path), state_town=err.state_town,
                town=town, action="shown without the scaler's memory")
    rows, outposts, workers = [], [], []
    for o in config.outposts:
        outpost = DockerOutpost(o, config.docker_timeout_secs)
        hold = state.crash_loops.get(o.name, CrashWatch()).hold
        held = {"starts_held_until": iso(hold.open_until), "hold_reason": hold.last_error} \
            if hold.is_open(now) else {"starts_held_until": None}
        try:
            found = outpost.list_workers(town, full=True)
        except OutpostError as err:
            outposts.append({"name": o.name, "reachable": False, "error": str(err), **held})
            log("warning", "outpost_unreachable", outpost=o.name, error=str(err))
            continue
        outposts.append({"name": o.name, "reachable": True, "live": sum(w.live for w in found),
                         "max_workers": o.max_workers, "cost_per_hour": o.cost_per_hour, **held})
        workers.extend(found)
        for w in found:
            agent = (agents or {}).get(w.agent_id or "")
            memory = state.containers.get(w.container_id)
            marked = {"at": iso(memory.marked_error_at), "reason": memory.marked_reason} \
                if memory and memory.marked_error_at is not None else None
            rows.append({**_worker_ref(w), "status": w.status, "health": w.health,
                         "agent_state": agent.state if agent else (
                             "unknown" if agents is None else "unregistered"),
                         "current_task": agent.current_task if agent else None,
                         "age_secs": round(w.age_secs(now) or 0),
                         "cost_so_far": round(w.cost_so_far(now), 6), "marked_error": marked,
                         "evidence": None})
    # The same judgement a pass would make: contradictions, and containers whose verdict is unknown.
    conflicts = evidence_conflicts(sig, agents, workers, now, config.start_grace_secs) \
        if sig is not None and agents is not None else ()
    if agents is not None and not conflicts:
        for w, row in zip(workers, rows):
            memory = state.containers.get(w.container_id) or ContainerMemory(w.outpost)
            quiet = max(memory.restarted_at or 0.0, memory.drain_requested_at or 0.0)
            verdict = health_verdict(w, agents.get(w.agent_id or ""), now,
                                     config.unhealthy_after_secs, config.start_grace_secs,
                                     quiet or None, config.trust_townhall_alone)
            if verdict.unknown:
                row["evidence"] = {"kind": verdict.unknown, "reason": verdict.reason}
    live_count = sum(w.live for w in workers)
    cost = {"hourly": round(hourly_cost(workers), 6), "cap_hourly": config.cost_cap_hourly,
            "so_far": round(sum(w.cost_so_far(now) for w in workers), 6),
            "removed_total": round(state.removed_cost, 6)}
    if as_json:
        print(json.dumps({"ts": iso(now), "town": town, "townhall_error": townhall_error,
                          "evidence_inconsistent": list(conflicts), "state_error": state_error,
                          "containers": rows, "outposts": outposts, "cost": cost}))
    else:
        print(f"town {town or '(any)'}: {live_count} live, {len(workers) - live_count} "
              f"not live; {cost['hourly']:.4f}/h; {cost['so_far']:.4f} so far, "
              f"{cost['removed_total']:.4f} for removed workers")
        header = ("CONTAINER", "OUTPOST", "STATUS", "HEALTH", "AGENT_ID", "AGENT_STATE", "AGE",
                  "COST")
        table = [header] + [(r["name"], r["outpost"], r["status"], r["health"] or "-",
                             r["agent_id"] or "-", r["agent_state"], f"{r['age_secs'] // 60}m",
                             f"{r['cost_so_far']:.4f}") for r in rows]
        widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
        for row in table:
            print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
        for conflict in conflicts:
            print(f"evidence inconsistent: {conflict}; nothing is drained or restarted until "
                  "townhall's answers agree")
        if state_error:
            print(f"state: {state_error}")
        for r in rows:
            if r["marked_error"]:
                print(f"{r['name']}: marked in error at {r['marked_error']['at']} "
                      f"({r['marked_error']['reason']}); not counted as a worker. Read "
                      f"`docker logs {r['name']}`, then `docker rm -f {r['name']}`")
            if r["evidence"]:
                print(f"{r['name']}: {r['evidence']['kind']}: {r['evidence']['reason']}")
        for o in outposts:
            if not o["reachable"]:
                print(f"outpost {o['name']}: unreachable ({o['error']})")
            if o["starts_held_until"]:
                print(f"outpost {o['name']}: no new workers until {o['starts_held_until']} "
                      f"({o['hold_reason']})")
    if not any(o["reachable"] for o in outposts):
        return ExitStatus.DOCKER_UNAVAILABLE
    return ExitStatus.SUCCESS


# ================================================================================================
# Command line
# ================================================================================================
GROUPS = {
    "townhall": "townhall (the scaling signal and agent list)",
    "container": "worker containers",
    "scaling": "scaling",
    "health": "health checks",
    "outposts": "outposts (list them in the TOML file as [[outposts]])",
    "state": "state",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scaler.py",
        description="Start and retire Tinytown agent-worker containers from townhall's "
                    "/api/scaling signal. Precedence: flags > TINYTOWN_SCALER_* environment > "
                    "TOML file (--config) > defaults.",
        epilog="exit codes: 0 success, 2 bad command line, 3 bad configuration, 4 townhall "
               "unavailable (--once), 5 Docker unavailable (--once), 130 interrupted. "
               "See docs/scaler.md.")
    parser.add_argument("subcommand", nargs="?", choices=("run", "status", "config"),
                        default="run", metavar="{run,status,config}",
                        help="run: reconcile (default); status: list this town's containers; "
                             "config: print the resolved configuration")
    modes = parser.add_argument_group("modes")
    modes.add_argument("--config", metavar="PATH",
                       help=f"TOML file with the settings below [env {ENV_PREFIX}CONFIG]")
    modes.add_argument("--once", action="store_true", help="one pass, then exit (for cron)")
    modes.add_argument("--dry-run", action="store_true",
                       help="compute and print the plan; change nothing, not even the state file")
    modes.add_argument("--json", action="store_true",
                       help="print one JSON object per pass (or for status) on stdout")
    modes.add_argument("-v", "--verbose", action="store_true", help="log debug events too")
    groups = {key: parser.add_argument_group(title) for key, title in GROUPS.items()}
    defaults = Config()
    for s in SETTINGS:
        default = getattr(defaults, s.key)
        where = [f"env {s.env}"] if s.env else []
        where.append(f"TOML {s.section + '.' if s.section else ''}{s.key}")
        if isinstance(default, bool):
            where.append(f"default {str(default).lower()}")
        elif default not in (None, (), {}):
            where.append(f"default {default:g}" if isinstance(default, float) else
                         f"default {default}")
        kwargs: dict[str, Any] = dict(dest=s.key, metavar=s.metavar,
                                      help=f"{s.help} [{'; '.join(where)}]")
        if s.kind in ("list", "map"):
            kwargs["action"] = "append"
        groups[s.group].add_argument(s.option, **kwargs)
    return parser


def run_loop(scaler: Scaler, interval_secs: float, as_json: bool) -> ExitStatus:
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt  # a second signal: stop now
        log("info", "stopping", signal=signal.Signals(signum).name,
            action="finishing the current pass")
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log("info", "loop_started", interval_secs=interval_secs, url=scaler.config.url,
        outposts=",".join(o.name for o in scaler.outposts), dry_run=scaler.dry_run)
    while not stop.is_set():
        began = time.monotonic()
        try:
            emit(scaler.run_pass(time.time()), as_json, scaler.dry_run)
        except Exception as err:  # a bug or a surprise must not end the loop: log, retry
            log("error", "pass_failed", error=f"{type(err).__name__}: {err}")
        stop.wait(max(0.0, interval_secs - (time.monotonic() - began)))
    log("info", "loop_stopped")
    return ExitStatus.SUCCESS


def emit(report: Report, as_json: bool, dry_run: bool) -> None:
    now = time.time()
    if as_json:
        print(json.dumps(report.to_json(now, dry_run)), flush=True)
    elif dry_run:
        plan = report.plan
        if plan is None:
            print(f"plan: none ({report.error})", flush=True)
        else:
            print(f"plan: target={plan['target']} live={plan['live']} "
                  f"start={','.join(plan['starts']) or '-'} "
                  f"drain={len(plan['drains'])} ({plan['scale_down']['reason']}) "
                  f"restart={len(plan['restarts'])} remove={len(plan['removals'])}"
                  + (f" unplaced={plan['unplaced']} ({plan['unplaced_reason']})"
                     if plan["unplaced"] else ""), flush=True)
    if report.actions or report.error:
        log("info", "pass_done", town=report.town, actions=len(report.actions),
            exit_code=int(report.exit_status))
    else:
        log("debug", "pass_done", town=report.town, actions=0)


def main(argv: Sequence[str] | None = None) -> int:
    global _verbose
    args = build_parser().parse_args(argv)
    _verbose = args.verbose
    flags = {s.key: getattr(args, s.key) for s in SETTINGS}
    flags["config"] = args.config
    environ = dict(os.environ)
    try:
        config = load_config(flags, environ)
        if args.subcommand == "run" and not config.image:
            raise ConfigError(f"image is not set: pass --image, set {ENV_PREFIX}IMAGE or "
                              "[container] image in the config file")
    except ConfigError as err:
        print(f"scaler.py: configuration error: {err}", file=sys.stderr)
        return ExitStatus.CONFIG_ERROR
    try:
        if args.subcommand == "config":
            print(json.dumps(config_summary(config), indent=2))
            return ExitStatus.SUCCESS
        if args.subcommand == "status":
            return run_status(config, environ, args.json)
        if "REDIS_URL" not in config.env and "REDIS_URL" not in config.pass_env:
            log("warning", "no_redis_url", hint="workers get no REDIS_URL from the scaler; pass "
                "--pass-env REDIS_URL or --env REDIS_URL=... unless the image sets it")
        scaler = Scaler(config, environ, dry_run=args.dry_run)
        if not args.once:
            return run_loop(scaler, config.interval_secs, args.json)
        report = scaler.run_pass(time.time())
        emit(report, args.json, args.dry_run)
        return report.exit_status
    except KeyboardInterrupt:
        log("warning", "interrupted")
        return ExitStatus.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
