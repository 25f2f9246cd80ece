"""Which Redis a town uses (:func:`resolve_target`) and the redis-py options to reach it
(:func:`client_options`).

Precedence (upstream §2.4): ``REDIS_URL`` → ``[redis].url`` → the town's unix socket →
``redis[s]://host:port`` built from ``[redis]``. No I/O here but a look at the town directory
(:func:`require_town_to_join`).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from tinytown.config import Config, is_town
from tinytown.core import defaults
from tinytown.core.errors import ConfigError
from tinytown.core.urls import is_loopback, redact_url


@dataclass(frozen=True)
class RedisTarget:
    """Where to connect, and whether Tinytown may start the server itself."""

    url: str
    managed: bool  # True: a server Tinytown starts when nothing answers (socket or loopback TCP)
    socket_path: str | None = None  # set for the unix-socket mode

    @property
    def display(self) -> str:
        return redact_url(self.url)


def resolve_target(config: Config) -> RedisTarget:
    """The Redis this town uses (upstream §2.4 precedence)."""
    r = config.redis
    if r.url:
        return RedisTarget(url=r.url, managed=False)
    if r.use_socket:
        path = config.path(r.socket_path)
        return RedisTarget(url=f"unix://{path}", managed=True, socket_path=str(path))
    scheme = "rediss" if r.tls_enabled else "redis"
    auth = ""
    if r.password:
        user = quote(r.username, safe="") if r.username else ""
        auth = f"{user}:{quote(r.password, safe='')}@"
    host = f"[{r.host}]" if ":" in r.host else r.host
    return RedisTarget(url=f"{scheme}://{auth}{host}:{r.port}/0", managed=is_loopback(r.host))


def require_town_to_join(config: Config) -> None:
    """A worker joins a town: ConfigError if its directory is none (:func:`is_town`) and it
    would start a Redis of its own there, which no townhall or ``tt`` would see."""
    if not is_town(config.root) and resolve_target(config).managed:
        raise ConfigError(
            f"no town in {config.root}: no {defaults.CONFIG_FILENAME} and no "
            f"{defaults.RUNTIME_DIRNAME}/ (a town that ran there); run the worker in the town's "
            "directory (--town DIR), or set REDIS_URL to join a town's Redis"
        )


def client_options(config: Config, target: RedisTarget) -> dict[str, Any]:
    """redis-py options: timeouts, ACL user/password, and TLS files for ``rediss://``."""
    r = config.redis
    opts: dict[str, Any] = {
        "decode_responses": True,
        "socket_connect_timeout": defaults.REDIS_CONNECT_TIMEOUT_SECS,
        "socket_timeout": defaults.REDIS_SOCKET_TIMEOUT_SECS,
        "protocol": defaults.REDIS_PROTOCOL,
        # Bytes that are not UTF-8 (written by another client) read as U+FFFD instead of failing
        # the read: no stored value can crash a reader.
        "encoding_errors": "replace",
        "health_check_interval": defaults.REDIS_HEALTH_CHECK_INTERVAL_SECS,
    }
    if r.url:  # an explicit URL carries its own credentials unless the env/file adds them
        if r.password and urlsplit(target.url).password is None:
            opts["password"] = r.password
            if r.username:
                opts["username"] = r.username
    if target.url.startswith("rediss://"):
        if r.tls_ca_cert:
            opts["ssl_ca_certs"] = str(config.path(r.tls_ca_cert))
        if r.tls_cert:
            opts["ssl_certfile"] = str(config.path(r.tls_cert))
        if r.tls_key:
            opts["ssl_keyfile"] = str(config.path(r.tls_key))
        opts.setdefault("ssl_cert_reqs", ssl.CERT_REQUIRED)
    return opts
