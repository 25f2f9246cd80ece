"""What can be configured: the table of settings (``SETTINGS``) from which the command line, the
``TINYTOWN_SCALER_*`` environment variables, the TOML keys and ``--help`` are all made, filling
the ``Config`` a pass reads and the ``Outpost`` records it lists (:mod:`tinytown.scaler.model`).

Reading and checking values is :mod:`tinytown.scaler.config`; the defaults are
:mod:`tinytown.scaler.defaults`.
"""

from __future__ import annotations

from dataclasses import dataclass

from tinytown.scaler.defaults import (
    IMAGE_HEALTHCHECK,
    NO_WORKSPACE_VOLUME,
    STATE_FILE,
)

ENV_PREFIX = "TINYTOWN_SCALER_"


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
    maximum: float | None = None  # None: values.NUMBER_MAX
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
    Setting(
        "api_key",
        "str",
        "townhall",
        "API key with scope town.read, and agent.manage to report unhealthy workers (prefer "
        "--api-key-file)",
        metavar="KEY",
    ),
    Setting("api_key_file", "str", "townhall", "file holding the API key", metavar="PATH"),
    Setting(
        "townhall_ca_file",
        "str",
        "townhall",
        "CA bundle to verify townhall's TLS certificate",
        metavar="PATH",
    ),
    Setting(
        "town",
        "str",
        "townhall",
        "expected town name; a townhall serving another town is "
        "refused (default: the signal's town)",
        metavar="NAME",
    ),
    Setting(
        "image",
        "str",
        "container",
        "worker image, already on each outpost (never pulled)",
        section="container",
        metavar="IMAGE",
    ),
    Setting(
        "command",
        "str",
        "container",
        "override the image's command (split like a shell)",
        section="container",
        metavar="CMD",
    ),
    Setting(
        "network",
        "str",
        "container",
        "Docker network for workers",
        section="container",
        metavar="NAME",
    ),
    Setting(
        "volumes",
        "list",
        "container",
        "extra mount SOURCE:/path[:ro], repeatable (env: comma-separated)",
        section="container",
        metavar="SPEC",
        flag="--volume",
    ),
    Setting(
        "workspace",
        "str",
        "container",
        "where workers mount the workspace volume; must contain the worker's [agent] workspace_dir",
        section="container",
        metavar="PATH",
    ),
    Setting(
        "workspace_volume",
        "str",
        "container",
        "named volume every worker of the town "
        "shares on an outpost, created by the scaler and never removed; {town} is replaced, "
        f"'{NO_WORKSPACE_VOLUME}' mounts none",
        section="container",
        metavar="NAME",
    ),
    Setting(
        "healthcheck",
        "str",
        "container",
        "Docker healthcheck command given to each worker "
        "(split like a shell; it reads the worker's health file); "
        f"'{IMAGE_HEALTHCHECK}' gives none, so the image's own applies",
        section="container",
        metavar="CMD",
    ),
    Setting(
        "env",
        "map",
        "container",
        "set KEY=VALUE in workers, repeatable (TOML: [container.env])",
        section="container",
        metavar="KEY=VALUE",
        from_env=False,
    ),
    Setting(
        "pass_env",
        "list",
        "container",
        "pass this variable from the scaler's environment, e.g. REDIS_URL, repeatable",
        section="container",
        metavar="NAME",
    ),
    Setting("min_workers", "int", "scaling", "fewest workers kept running", minimum=0, metavar="N"),
    Setting(
        "max_workers", "int", "scaling", "most workers across all outposts", minimum=0, metavar="N"
    ),
    Setting(
        "interval_secs",
        "float",
        "scaling",
        "seconds between passes in the loop",
        minimum=0.1,
        metavar="SECS",
    ),
    Setting(
        "signal_wait_secs",
        "int",
        "scaling",
        "with no worker running, long-poll townhall's signal this long between passes (passing "
        "the moment it changes); 0: poll every interval_secs",
        minimum=0,
    ),
    Setting(
        "scale_down_cooldown_secs",
        "float",
        "scaling",
        "no drain until this long after the last start",
        minimum=0,
        metavar="SECS",
    ),
    Setting(
        "scale_down_after_passes",
        "int",
        "scaling",
        "a surplus must persist this many passes before a drain",
        minimum=1,
        metavar="N",
    ),
    Setting(
        "keep_exited",
        "int",
        "scaling",
        "exited workers kept per outpost for their logs",
        minimum=0,
        metavar="N",
    ),
    Setting(
        "cost_cap_hourly",
        "float",
        "scaling",
        "no start that would take the hourly cost of live workers above this (default: no cap)",
        minimum=0,
        metavar="AMOUNT",
    ),
    Setting(
        "unhealthy_after_secs",
        "float",
        "health",
        "a heartbeat older than this is a failure "
        "(when townhall does not say whether the agent is alive)",
        minimum=1,
        metavar="SECS",
    ),
    Setting(
        "heartbeat_interval_secs",
        "float",
        "health",
        "the workers' [agent] heartbeat_interval_secs: their Docker healthcheck runs this often",
        minimum=1,
        metavar="SECS",
    ),
    Setting(
        "trust_townhall_alone",
        "bool",
        "health",
        "restart or drain a container that has no "
        "Docker healthcheck (started by an older scaler) on townhall's word alone",
        metavar="BOOL",
    ),
    Setting(
        "restart_after_failures",
        "int",
        "health",
        "consecutive failures before a restart",
        minimum=1,
        metavar="N",
    ),
    Setting(
        "max_restarts",
        "int",
        "health",
        "health restarts per container before it is marked and notified instead",
        minimum=0,
        metavar="N",
    ),
    Setting(
        "start_grace_secs",
        "float",
        "health",
        "containers younger than this (or restarted since) are not judged",
        minimum=0,
        metavar="SECS",
    ),
    Setting(
        "restart_timeout_secs",
        "float",
        "health",
        "docker restart waits this long after SIGTERM before SIGKILL",
        minimum=0,
        metavar="SECS",
    ),
    Setting(
        "crash_loop_after_exits",
        "int",
        "health",
        "quick non-zero exits in a row that hold "
        "starts on an outpost for the breaker backoff (0: never)",
        minimum=0,
        metavar="N",
    ),
    Setting(
        "quick_exit_secs",
        "float",
        "health",
        "a non-zero exit this soon after the start counts toward a crash loop",
        minimum=0,
        metavar="SECS",
    ),
    Setting(
        "notify_command",
        "str",
        "health",
        "run on a failed restart or a crash loop; event JSON on stdin",
        metavar="CMD",
    ),
    Setting("notify_webhook", "str", "health", "POST the event JSON to this URL", metavar="URL"),
    Setting(
        "breaker_backoff_secs",
        "float",
        "outposts",
        "skip a failed outpost this long, doubling per failure",
        minimum=0,
        metavar="SECS",
    ),
    Setting(
        "breaker_backoff_max_secs",
        "float",
        "outposts",
        "longest breaker backoff",
        minimum=0,
        metavar="SECS",
    ),
    Setting(
        "docker_timeout_secs",
        "float",
        "outposts",
        "timeout of each Docker API call",
        minimum=1,
        metavar="SECS",
    ),
    Setting(
        "http_timeout_secs",
        "float",
        "townhall",
        "timeout of each townhall request",
        minimum=0.1,
        metavar="SECS",
    ),
    Setting(
        "state_file",
        "str",
        "state",
        "JSON state: cooldowns, breakers, health counters; "
        "one per town (default: $XDG_STATE_HOME/" + STATE_FILE.format(town="<town>") + ")",
        metavar="PATH",
    ),
)
SETTINGS_BY_KEY = {s.key: s for s in SETTINGS}
