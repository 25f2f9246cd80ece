"""Reading the configuration: flags > ``TINYTOWN_SCALER_*`` environment > TOML file > defaults.

Every value is checked on the way in (:func:`~tinytown.scaler.values.coerce` for its type and
range, :func:`validate` for what spans keys); an invalid one raises ConfigError naming the key,
the value, where it came from and the expected form, e.g. ``invalid max_workers='lots' (from
--max-workers): expected a whole number from 0 to 1000000``. What can be set is the table in
:mod:`tinytown.scaler.settings`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tinytown.core.urls import address_only, redact_url
from tinytown.scaler.defaults import MAX_WORKERS, NO_WORKSPACE_VOLUME
from tinytown.scaler.errors import ConfigError
from tinytown.scaler.model import Config
from tinytown.scaler.outpost_config import parse_outposts
from tinytown.scaler.settings import ENV_PREFIX, SETTINGS, SETTINGS_BY_KEY
from tinytown.scaler.values import coerce, invalid
from tinytown.scaler.wire import NAME_RE

RESERVED_ENV = frozenset({"TINYTOWN_AGENT_ID", "TINYTOWN_AGENT_NAME"})
SECRET_NAME_RE = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL", re.IGNORECASE)
VOLUME_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]+$")  # Docker's rule
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as err:
        raise ConfigError(
            f"cannot read config file {path}: {err.strerror}; check --config or {ENV_PREFIX}CONFIG"
        ) from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from None


def flatten_toml(doc: dict[str, Any], path: str) -> tuple[dict[str, Any], list[Any]]:
    """Settings found in the file (keyed like Config) and its raw ``[[outposts]]`` tables."""
    known_top = {s.key for s in SETTINGS if not s.section} | {"outposts", "container"}
    known_container = {s.key for s in SETTINGS if s.section == "container"}
    for key in doc:
        if key not in known_top:
            raise ConfigError(
                f"unknown key {key!r} in {path}; known keys: {', '.join(sorted(known_top))}"
            )
    container = doc.get("container", {})
    if not isinstance(container, dict):
        raise invalid("container", container, path, "a [container] table")
    for key in container:
        if key not in known_container:
            raise ConfigError(
                f"unknown key 'container.{key}' in {path}; known keys: "
                f"{', '.join(sorted(known_container))}"
            )
    values = {k: v for k, v in doc.items() if k not in ("outposts", "container")}
    values.update(container)
    outposts = doc.get("outposts", [])
    if not isinstance(outposts, list):
        raise invalid("outposts", outposts, path, "[[outposts]] tables")
    return values, outposts


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
    layers.append(
        (
            "the command line",
            {k: v for k, v in flags.items() if k in SETTINGS_BY_KEY and v not in (None, [])},
        )
    )

    resolved: dict[str, Any] = {}
    origin: dict[str, str] = {}  # where each value came from, for messages
    rank: dict[str, int] = {}  # which layer it came from: 0 file, 1 environment, 2 command line
    for layer, (source, values) in enumerate(layers):
        for key, raw in values.items():
            setting = SETTINGS_BY_KEY[key]
            where = (
                setting.env
                if source == "the environment"
                else (setting.option if source == "the command line" else source)
            )
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
            raise ConfigError(
                f"both api_key and api_key_file are set ({origin['api_key']} and "
                f"{origin['api_key_file']}); set only one"
            )
        resolved.pop("api_key_file" if rank["api_key"] > rank["api_key_file"] else "api_key")
    if "api_key_file" in resolved:
        path = os.path.expanduser(resolved["api_key_file"])
        try:
            resolved["api_key"] = Path(path).read_text().strip()
        except OSError as err:
            raise ConfigError(
                f"cannot read api_key_file={path!r} (from {origin['api_key_file']}): {err.strerror}"
            ) from None
        if not resolved["api_key"]:
            raise ConfigError(f"api_key_file={path!r} is empty; it should hold the API key")

    for key in ("volumes", "pass_env"):
        if key in resolved:
            resolved[key] = tuple(resolved[key])
    max_workers = resolved.get("max_workers", MAX_WORKERS)
    config = Config(
        **resolved, outposts=parse_outposts(raw_outposts, str(config_path), max_workers)
    )
    validate(config, origin)
    return config


def validate(config: Config, origin: Mapping[str, str]) -> None:
    """Checks that span keys or need more than a type; raises ConfigError naming the key."""

    def where(key: str) -> str:
        return origin.get(key, "the defaults")

    if not _http_url(config.url):
        shown = redact_url(config.url)
        raise invalid("url", shown, where("url"), "http://host:port or https://host:port")
    if (
        config.api_key is not None
        and not config.api_key.isprintable()
        or " " in (config.api_key or "")
    ):
        raise ConfigError(
            f"invalid api_key (from {where('api_key')}): expected one line with no spaces or "
            "control characters (the file's first line, a comment after it?); not shown here"
        )
    if config.min_workers > config.max_workers:
        raise invalid(
            "min_workers",
            config.min_workers,
            where("min_workers"),
            f"at most max_workers ({config.max_workers})",
        )
    if config.breaker_backoff_max_secs < config.breaker_backoff_secs:
        raise invalid(
            "breaker_backoff_max_secs",
            config.breaker_backoff_max_secs,
            where("breaker_backoff_max_secs"),
            "at least breaker_backoff_secs",
        )
    if config.town is not None and not NAME_RE.match(config.town):
        raise invalid("town", config.town, where("town"), "a town name (letters, digits, ._-)")
    if config.notify_webhook and not re.match(r"^https?://", config.notify_webhook):
        raise invalid(
            "notify_webhook",
            config.notify_webhook,
            where("notify_webhook"),
            "an http:// or https:// URL",
        )
    for spec in config.volumes:
        parts = spec.split(":")
        if (
            len(parts) not in (2, 3)
            or not parts[0]
            or not parts[1].startswith("/")
            or (len(parts) == 3 and parts[2] not in ("ro", "rw"))
        ):
            raise invalid("volumes", spec, where("volumes"), "SOURCE:/container/path[:ro|rw]")
    if not config.workspace.startswith("/"):
        raise invalid("workspace", config.workspace, where("workspace"), "an absolute path")
    if config.workspace_volume != NO_WORKSPACE_VOLUME:
        try:
            sample = config.workspace_volume.format(town="t")
        except (KeyError, IndexError, ValueError):
            sample = ""
        if not VOLUME_NAME_RE.match(sample):
            raise invalid(
                "workspace_volume",
                config.workspace_volume,
                where("workspace_volume"),
                f"a volume name (letters, digits, _.-; {{town}} allowed) or "
                f"'{NO_WORKSPACE_VOLUME}'",
            )
        clash = [
            spec
            for spec in config.volumes
            if spec.split(":")[1].rstrip("/") == config.workspace.rstrip("/")
        ]
        if clash:
            raise invalid(
                "volumes",
                clash[0],
                where("volumes"),
                f"no mount at {config.workspace}"
                f", where the workspace volume goes: change workspace, or set "
                f"workspace_volume = '{NO_WORKSPACE_VOLUME}'",
            )
    for key, names in (("env", config.env), ("pass_env", config.pass_env)):
        for name in names:
            if not ENV_NAME_RE.match(name):
                raise invalid(key, name, where(key), "a variable name like REDIS_URL")
            if name in RESERVED_ENV:
                raise invalid(
                    key,
                    name,
                    where(key),
                    "no TINYTOWN_AGENT_ID or "
                    "TINYTOWN_AGENT_NAME: the scaler sets those per container",
                )
    for name in ("townhall_ca_file",):
        value = getattr(config, name)
        if value is not None and not os.path.isfile(os.path.expanduser(value)):
            raise invalid(name, value, where(name), "the path of an existing file")
    for key in ("command", "healthcheck"):
        value = getattr(config, key)
        try:
            words = shlex.split(value) if value is not None else None
        except ValueError as err:
            raise invalid(key, value, where(key), f"shell words ({err})") from None
        if words == []:
            raise invalid(key, value, where(key), "a command")


def _http_url(url: str) -> bool:
    """An http(s) URL with a host, a valid port and no whitespace."""
    if any(c.isspace() for c in url):
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a bad one)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def redact_value(name: str, value: str) -> str:
    """Hide secrets: values of secret-looking names, and passwords inside URLs."""
    if SECRET_NAME_RE.search(name):
        return "****"
    return re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1****@", value)


def config_summary(config: Config) -> dict[str, Any]:
    """The resolved configuration as plain data for ``config``, secrets hidden."""
    data = dataclasses.asdict(config)
    data["api_key"] = "****" if config.api_key else None
    data["url"] = redact_url(config.url)
    if config.notify_webhook:  # (its path or query is often the secret: Slack, ntfy topics)
        data["notify_webhook"] = address_only(config.notify_webhook)
    data["env"] = {k: redact_value(k, v) for k, v in config.env.items()}
    return data
