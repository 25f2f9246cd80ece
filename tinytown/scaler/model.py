"""The configuration a pass reads, as plain records: ``Config`` and the ``Outpost`` engines it
lists. Their keys, flags and help are :mod:`tinytown.scaler.settings`; reading and checking
values is :mod:`tinytown.scaler.config`; the defaults are :mod:`tinytown.scaler.defaults`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tinytown.scaler.defaults import (
    BREAKER_BACKOFF_MAX_SECS,
    BREAKER_BACKOFF_SECS,
    CRASH_LOOP_AFTER_EXITS,
    DOCKER_TIMEOUT_SECS,
    HEALTHCHECK,
    HEARTBEAT_INTERVAL_SECS,
    HTTP_TIMEOUT_SECS,
    INTERVAL_SECS,
    KEEP_EXITED_PER_OUTPOST,
    LOCAL_OUTPOST,
    MAX_RESTARTS_PER_CONTAINER,
    MAX_WORKERS,
    MIN_WORKERS,
    QUICK_EXIT_SECS,
    RESTART_AFTER_FAILURES,
    RESTART_TIMEOUT_SECS,
    SCALE_DOWN_AFTER_PASSES,
    SCALE_DOWN_COOLDOWN_SECS,
    SIGNAL_WAIT_SECS,
    START_GRACE_SECS,
    TOWNHALL_URL,
    UNHEALTHY_AFTER_SECS,
    WORKSPACE_MOUNT,
    WORKSPACE_VOLUME,
)


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
    signal_wait_secs: int = SIGNAL_WAIT_SECS
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
