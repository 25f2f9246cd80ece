"""``tinytown.toml``: the upstream schema, validated, with environment overrides.

A town is a directory. Its configuration is ``<town>/tinytown.toml``; with no file every default
applies and the town is named after the directory (the zero-setup path). Every invalid value
fails at start with a message that names the key, the value and the expected form.

Environment overrides (they win over the file):

- ``REDIS_URL`` — an explicit Redis URL; Tinytown then never starts a server.
- ``TINYTOWN_REDIS_PASSWORD`` — password for a TCP Redis built from ``[redis]`` host and port,
  or for a ``REDIS_URL`` that carries none.
- ``TINYTOWN_TOWN_NAME`` — the town name when the file sets none.
- ``TINYTOWN_REST_BIND`` / ``TINYTOWN_REST_PORT`` — townhall's bind address and port.
- ``TINYTOWN_PUBLIC_URL`` — the address people reach townhall at (``[townhall] public_url``).
- ``TINYTOWN_AGENT_CLI`` — the default coding CLI (``default_cli``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinytown.config.missions import MissionsConfig, missions_config
from tinytown.config.notify import NotifyTarget, notify_targets
from tinytown.config.table import SCOPES as SCOPES
from tinytown.config.table import Table
from tinytown.core import defaults, inputs
from tinytown.core.clis import AgentCli, UnknownCli, default_cli, resolve_cli
from tinytown.core.errors import ConfigError
from tinytown.core.urls import public_base_url, redact_url

AUTH_MODES = ("none", "api_key", "oidc")
TOWN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class RedisConfig:
    url: str | None = None
    use_socket: bool = True
    socket_path: str = defaults.REDIS_SOCKET_PATH
    host: str = defaults.REDIS_HOST
    port: int = defaults.REDIS_PORT
    persist: bool = False
    aof_path: str = defaults.REDIS_AOF_PATH
    username: str | None = None
    password: str | None = None
    tls_enabled: bool = False
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca_cert: str | None = None
    bind: str = defaults.REDIS_BIND


@dataclass(frozen=True)
class ApiKey:
    """One named API key: its Argon2id hash and scopes (empty scopes = admin)."""

    name: str
    hash: str
    scopes: tuple[str, ...] = ()


@dataclass(frozen=True)
class AuthConfig:
    mode: str = "none"
    api_key_hash: str | None = None
    api_key_scopes: tuple[str, ...] = ()
    keys: tuple[ApiKey, ...] = ()
    issuer: str | None = None
    audience: str | None = None
    jwks_url: str | None = None
    required_scopes: tuple[str, ...] = ()
    clock_skew_seconds: int = defaults.OIDC_CLOCK_SKEW_SECS


@dataclass(frozen=True)
class TlsConfig:
    enabled: bool = False
    cert_file: str | None = None
    key_file: str | None = None


@dataclass(frozen=True)
class MtlsConfig:
    enabled: bool = False
    required: bool = False
    ca_file: str | None = None


@dataclass(frozen=True)
class TownhallConfig:
    bind: str = defaults.TOWNHALL_BIND
    rest_port: int = defaults.TOWNHALL_PORT
    request_timeout_ms: int = defaults.TOWNHALL_REQUEST_TIMEOUT_MS
    workers: int = defaults.TOWNHALL_WORKERS
    max_body_bytes: int = defaults.TOWNHALL_MAX_BODY_BYTES
    request_read_timeout_secs: int = defaults.TOWNHALL_REQUEST_READ_TIMEOUT_SECS
    # where people reach townhall (behind a proxy, its outside address): pings link to the
    # status pages under it and the A2A card names it; None = no links, the card uses the
    # request's own address
    public_url: str | None = None
    auth: AuthConfig = field(default_factory=AuthConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    mtls: MtlsConfig = field(default_factory=MtlsConfig)


@dataclass(frozen=True)
class AgentConfig:
    idle_timeout_secs: int = defaults.IDLE_TIMEOUT_SECS
    heartbeat_interval_secs: int = defaults.HEARTBEAT_INTERVAL_SECS
    # while idle (no task held): default IDLE_HEARTBEAT_FACTOR × heartbeat_interval_secs
    idle_heartbeat_secs: int = defaults.HEARTBEAT_INTERVAL_SECS * defaults.IDLE_HEARTBEAT_FACTOR
    claim_timeout_secs: int = defaults.CLAIM_TIMEOUT_SECS
    max_attempts: int = defaults.MAX_ATTEMPTS
    task_timeout_secs: int = defaults.TASK_TIMEOUT_SECS
    drain_timeout_secs: int = defaults.DRAIN_TIMEOUT_SECS
    workspace_dir: str = ".tt/workspace"
    retention_secs: int = defaults.AGENT_RETENTION_SECS  # stopped agents kept; 0 = forever


@dataclass(frozen=True)
class Config:
    root: Path
    name: str
    default_cli: str = defaults.DEFAULT_CLI
    conductor_cli: str | None = None
    max_agents: int = defaults.MAX_AGENTS
    use_central_redis: bool = False
    use_streams: bool = True
    redis: RedisConfig = field(default_factory=RedisConfig)
    townhall: TownhallConfig = field(default_factory=TownhallConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    agent_clis: Mapping[str, AgentCli] = field(default_factory=dict)
    notify: tuple[NotifyTarget, ...] = ()
    missions: MissionsConfig = field(default_factory=MissionsConfig)
    file: Path | None = None  # the tinytown.toml read, if any

    @property
    def runtime_dir(self) -> Path:
        return self.root / defaults.RUNTIME_DIRNAME

    def cli(self, ref: str | None = None) -> AgentCli:
        """The coding CLI a task's ``cli`` names (None: ``default_cli``); raises UnknownCli."""
        return resolve_cli(ref, self.default_cli, self.agent_clis)

    def path(self, relative: str) -> Path:
        """A path from the config, made absolute against the town root."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else self.root / p


def _port(table: Table, key: str, default: int) -> int:
    return table.int_range(key, default, 1, 65535)


# --- sections ---------------------------------------------------------------------------------


def _redis(t: Table) -> RedisConfig:
    cfg = RedisConfig(
        url=t.opt_str("url"),
        use_socket=t.get("use_socket", True, bool),
        socket_path=t.get("socket_path", defaults.REDIS_SOCKET_PATH, str),
        host=t.get("host", defaults.REDIS_HOST, str),
        port=_port(t, "port", defaults.REDIS_PORT),
        persist=t.get("persist", False, bool),
        aof_path=t.get("aof_path", defaults.REDIS_AOF_PATH, str),
        username=t.opt_str("username"),
        password=t.opt_str("password"),
        tls_enabled=t.get("tls_enabled", False, bool),
        tls_cert=t.opt_str("tls_cert"),
        tls_key=t.opt_str("tls_key"),
        tls_ca_cert=t.opt_str("tls_ca_cert"),
        bind=t.get("bind", defaults.REDIS_BIND, str),
    )
    if cfg.url and not cfg.url.startswith(("redis://", "rediss://", "unix://")):
        raise t._fail("url", cfg.url, "a URL starting with redis://, rediss:// or unix://")
    t.check_unknown()
    return cfg


def _api_keys(t: Table) -> tuple[ApiKey, ...]:
    t.seen.add("keys")
    raw = t.data.get("keys", [])
    if not isinstance(raw, list):
        raise t._fail("keys", raw, "an array of tables [[townhall.auth.keys]]")
    keys = []
    for i, item in enumerate(raw):
        kt = Table(item, f"{t.section}.keys[{i}]", t.source)
        key = ApiKey(
            name=kt.get("name", "", str), hash=kt.get("hash", "", str), scopes=kt.scopes("scopes")
        )
        if not key.name:
            raise kt._fail("name", kt.data.get("name"), "a non-empty key name")
        if not key.hash.startswith("$argon2id$"):
            raise kt._fail("hash", key.hash, "an Argon2id PHC string from `tt auth gen-key`")
        kt.check_unknown()
        keys.append(key)
    names = [k.name for k in keys]
    if len(names) != len(set(names)):
        raise t._fail("keys", names, "unique key names")
    return tuple(keys)


def _auth(t: Table) -> AuthConfig:
    cfg = AuthConfig(
        mode=t.choice("mode", "none", AUTH_MODES),
        api_key_hash=t.opt_str("api_key_hash"),
        api_key_scopes=t.scopes("api_key_scopes"),
        keys=_api_keys(t),
        issuer=t.opt_str("issuer"),
        audience=t.opt_str("audience"),
        jwks_url=t.opt_str("jwks_url"),
        required_scopes=t.scopes("required_scopes"),
        clock_skew_seconds=t.int_range("clock_skew_seconds", defaults.OIDC_CLOCK_SKEW_SECS, 0),
    )
    if cfg.api_key_hash and not cfg.api_key_hash.startswith("$argon2id$"):
        raise t._fail(
            "api_key_hash", cfg.api_key_hash, "an Argon2id PHC string from `tt auth gen-key`"
        )
    if cfg.mode == "api_key" and not (cfg.api_key_hash or cfg.keys):
        raise ConfigError(
            f'{t.source}: [{t.section}] mode = "api_key" but no key is configured, so every '
            "request would be refused; run `tt auth add-key NAME` in the town directory"
        )
    if cfg.mode == "oidc":
        for key in ("issuer", "audience", "jwks_url"):
            if not getattr(cfg, key):
                raise t._fail(key, None, 'a value (required when mode = "oidc")')
    t.check_unknown()
    return cfg


def _townhall(t: Table, env: Mapping[str, str]) -> TownhallConfig:
    tls_t, mtls_t = t.table("tls"), t.table("mtls")
    tls = TlsConfig(
        tls_t.get("enabled", False, bool), tls_t.opt_str("cert_file"), tls_t.opt_str("key_file")
    )
    mtls = MtlsConfig(
        mtls_t.get("enabled", False, bool),
        mtls_t.get("required", False, bool),
        mtls_t.opt_str("ca_file"),
    )
    tls_t.check_unknown()
    mtls_t.check_unknown()
    cfg = TownhallConfig(
        bind=t.get("bind", defaults.TOWNHALL_BIND, str),
        rest_port=_port(t, "rest_port", defaults.TOWNHALL_PORT),
        request_timeout_ms=t.int_range(
            "request_timeout_ms", defaults.TOWNHALL_REQUEST_TIMEOUT_MS, 1
        ),
        workers=t.int_range("workers", defaults.TOWNHALL_WORKERS, 1, 64),
        max_body_bytes=t.int_range("max_body_bytes", defaults.TOWNHALL_MAX_BODY_BYTES, 1),
        request_read_timeout_secs=t.int_range(
            "request_read_timeout_secs", defaults.TOWNHALL_REQUEST_READ_TIMEOUT_SECS, 1, 3600
        ),
        public_url=_public_url(t.get("public_url", None, str, _PUBLIC_URL_FORM), "public_url", t),
        auth=_auth(t.table("auth")),
        tls=tls,
        mtls=mtls,
    )
    t.check_unknown()
    overrides: dict[str, Any] = {}
    if env.get("TINYTOWN_PUBLIC_URL"):
        overrides["public_url"] = _public_url(env["TINYTOWN_PUBLIC_URL"], "TINYTOWN_PUBLIC_URL")
    if env.get("TINYTOWN_REST_BIND"):
        overrides["bind"] = env["TINYTOWN_REST_BIND"]
    if env.get("TINYTOWN_REST_PORT"):
        overrides["rest_port"] = _env_int(env, "TINYTOWN_REST_PORT", 1, 65535)
    return dataclasses.replace(cfg, **overrides)


_PUBLIC_URL_FORM = (
    "the http:// or https:// address people reach townhall at, e.g. "
    '"https://town.example.com": ASCII (punycode for an international domain), a host name '
    'or IP, no user, password, query, fragment, spaces or \\ < > | "'
)


def _public_url(value: str | None, name: str, t: Table | None = None) -> str | None:
    if value is None:
        return None
    base = public_base_url(value)
    if base is None:  # (shown with any password it holds as ****)
        if t is not None:
            raise t._fail(name, redact_url(value), _PUBLIC_URL_FORM)
        raise ConfigError(
            f"environment: {name}={redact_url(value)!r} is invalid; expected {_PUBLIC_URL_FORM}"
        )
    return base


def _agent(t: Table) -> AgentConfig:
    heartbeat = t.int_range("heartbeat_interval_secs", defaults.HEARTBEAT_INTERVAL_SECS, 1)
    cfg = AgentConfig(
        idle_timeout_secs=t.int_range("idle_timeout_secs", defaults.IDLE_TIMEOUT_SECS, 0),
        heartbeat_interval_secs=heartbeat,
        idle_heartbeat_secs=t.int_range(
            "idle_heartbeat_secs", heartbeat * defaults.IDLE_HEARTBEAT_FACTOR, 1
        ),
        claim_timeout_secs=t.int_range("claim_timeout_secs", defaults.CLAIM_TIMEOUT_SECS, 1),
        max_attempts=t.int_range("max_attempts", defaults.MAX_ATTEMPTS, 1),
        task_timeout_secs=t.int_range("task_timeout_secs", defaults.TASK_TIMEOUT_SECS, 1),
        drain_timeout_secs=t.int_range("drain_timeout_secs", defaults.DRAIN_TIMEOUT_SECS, 0),
        workspace_dir=t.get("workspace_dir", ".tt/workspace", str),
        retention_secs=t.int_range("retention_secs", defaults.AGENT_RETENTION_SECS, 0),
    )
    if cfg.claim_timeout_secs <= cfg.heartbeat_interval_secs:
        raise t._fail(
            "claim_timeout_secs",
            cfg.claim_timeout_secs,
            f"more than heartbeat_interval_secs ({cfg.heartbeat_interval_secs}), "
            "or live work is reclaimed",
        )
    if cfg.idle_heartbeat_secs < cfg.heartbeat_interval_secs:
        raise t._fail(
            "idle_heartbeat_secs",
            cfg.idle_heartbeat_secs,
            f"at least heartbeat_interval_secs ({cfg.heartbeat_interval_secs})",
        )
    t.check_unknown()
    return cfg


def _agent_clis(t: Table) -> dict[str, AgentCli]:
    clis = {}
    for name in list(t.data):
        try:
            inputs.name(name, name)
        except inputs.InputError:
            raise t._fail(name, t.data[name], f"a table whose name is {inputs.NAME_RULE}") from None
        ct = t.table(name)
        command = ct.get("command", "", str)
        if not command.strip():
            raise ct._fail("command", ct.data.get("command"), "a non-empty command line")
        env = ct.get("env", {}, dict, 'a table of NAME = "value" strings')
        if any(not isinstance(v, str) for v in env.values()):
            raise ct._fail("env", env, 'a table of NAME = "value" strings')
        ct.get("name", name, str)  # upstream writes the name again; accepted, ignored
        clis[name] = AgentCli(
            name=name, command=command, workdir=ct.opt_str("workdir"), env=dict(env)
        )
        ct.check_unknown()
    return clis


def _either(from_file: Any, from_env: str | None) -> Any:
    """The environment's value when it sets one, else the file's."""
    return from_env or from_file


def _env_int(env: Mapping[str, str], key: str, low: int, high: int) -> int:
    try:
        value = int(env[key])
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise ConfigError(
            f"environment: {key}={env[key]!r} is invalid; expected an integer from {low} to {high}"
        )
    return value


# --- loading ----------------------------------------------------------------------------------


def town_dir(
    explicit: str | os.PathLike | None = None, env: Mapping[str, str] | None = None
) -> Path:
    """The town directory: ``--town``, else ``TINYTOWN_TOWN_DIR``, else the current directory."""
    env = os.environ if env is None else env
    chosen = explicit or env.get("TINYTOWN_TOWN_DIR") or "."
    return Path(chosen).expanduser().resolve()


def is_town(root: Path) -> bool:
    """A town directory holds ``tinytown.toml`` (``tt init``), or ``.tt/``: a town ran there
    without one (townhall or a worker on defaults, which every tt command then reaches too)."""
    return (root / defaults.CONFIG_FILENAME).is_file() or (root / defaults.RUNTIME_DIRNAME).is_dir()


def default_town_name(root: Path) -> str:
    """The directory name, with characters unsafe in Redis key names replaced by ``-``."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", root.name).strip("-.") or "town"
    return name[:100]


def load_config(
    root: str | os.PathLike | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Read ``<root>/tinytown.toml`` (defaults when absent) and apply environment overrides.

    Raises :class:`ConfigError` naming the key, value and expected form on any invalid value.
    """
    env = os.environ if env is None else env
    root = town_dir(root, env)
    path = root / defaults.CONFIG_FILENAME
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: not valid TOML: {err}") from None
        except OSError as err:
            raise ConfigError(f"{path}: cannot read: {err.strerror}") from None
    source = str(path) if path.exists() else "defaults"
    top = Table(data, "", source)

    name = top.get("name", None, str) or env.get("TINYTOWN_TOWN_NAME") or default_town_name(root)
    if not TOWN_NAME_RE.match(name):
        raise top._fail(
            "name", name, "1-100 characters from A-Z a-z 0-9 . _ - (it namespaces Redis keys)"
        )
    redis_cfg = _redis(top.table("redis"))
    if env.get("REDIS_URL", "").strip():
        url = env["REDIS_URL"].strip()
        if not url.startswith(("redis://", "rediss://", "unix://")):
            from tinytown.core.urls import redact_url

            raise ConfigError(
                f"environment: REDIS_URL={redact_url(url)!r} is invalid; "
                "expected a URL starting with redis://, rediss:// or unix://"
            )
        redis_cfg = dataclasses.replace(redis_cfg, url=url)
    if env.get("TINYTOWN_REDIS_PASSWORD"):
        redis_cfg = dataclasses.replace(redis_cfg, password=env["TINYTOWN_REDIS_PASSWORD"])

    cfg = Config(
        root=root,
        name=name,
        # (the file's key read first: read, it is known even when the environment wins)
        default_cli=_either(
            top.get("default_cli", defaults.DEFAULT_CLI, str), env.get("TINYTOWN_AGENT_CLI")
        ),
        conductor_cli=top.opt_str("conductor_cli"),
        max_agents=top.int_range("max_agents", defaults.MAX_AGENTS, 0),
        use_central_redis=top.get("use_central_redis", False, bool),
        use_streams=top.get("use_streams", True, bool),
        redis=redis_cfg,
        townhall=_townhall(top.table("townhall"), env),
        agent=_agent(top.table("agent")),
        agent_clis=_agent_clis(top.table("agent_clis")),
        notify=notify_targets(top, env),
        missions=missions_config(top.table("missions")),
        file=path if path.exists() else None,
    )
    top.check_unknown()
    try:
        default_cli(cfg.default_cli, cfg.agent_clis)
    except UnknownCli as err:
        where = (
            "environment: TINYTOWN_AGENT_CLI"
            if env.get("TINYTOWN_AGENT_CLI")
            else f"{source}: default_cli"
        )
        raise ConfigError(
            f"{where}: {err}; add a [agent_clis.NAME] table with its command"
        ) from None
    return cfg
