"""Connecting to the town's Redis: start the embedded server if it is ours, then verify it.

Every connection is checked once: PING answers, the credentials are accepted and the server is
Redis (or Valkey) 7.0 or newer. Failures name the endpoint with its password redacted.
"""

from __future__ import annotations

import re

import redis

from tinytown.config import Config
from tinytown.connection.embedded import EmbeddedServer
from tinytown.connection.target import RedisTarget, client_options, resolve_target
from tinytown.core import defaults
from tinytown.core.errors import RedisUnavailable
from tinytown.core.urls import redact_text

_AUTH_MARKERS = ("WRONGPASS", "NOAUTH", "invalid username-password", "invalid password")


def parse_version(text: str) -> tuple[int, ...]:
    """``"7.2.4"`` → ``(7, 2, 4)``; anything unparseable → ``()``."""
    match = re.match(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?", text or "")
    return tuple(int(g) for g in match.groups() if g is not None) if match else ()


def version_supported(version: tuple[int, ...]) -> bool:
    return len(version) >= 1 and tuple(version[:2]) >= defaults.REDIS_MIN_VERSION


def make_client(config: Config, target: RedisTarget | None = None) -> redis.Redis:
    """A redis-py client for the town, unverified and without starting anything."""
    target = target or resolve_target(config)
    return redis.Redis.from_url(target.url, **client_options(config, target))


def verify(client: redis.Redis, target: RedisTarget) -> str:
    """PING and version check. Returns the server version; raises RedisUnavailable with the fix."""
    shown = target.display
    try:
        client.ping()
        info = client.info("server")
    except redis.AuthenticationError as err:
        raise RedisUnavailable(_auth_message(shown, err, target)) from None
    except redis.ResponseError as err:
        if any(m.lower() in str(err).lower() for m in _AUTH_MARKERS):
            raise RedisUnavailable(_auth_message(shown, err, target)) from None
        raise RedisUnavailable(
            f"Redis at {shown} answered with an error: {redact_text(str(err), target.url)}"
        ) from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as err:
        if any(m.lower() in str(err).lower() for m in _AUTH_MARKERS):
            raise RedisUnavailable(_auth_message(shown, err, target)) from None
        raise RedisUnavailable(
            f"cannot reach Redis at {shown}: {redact_text(str(err), target.url)}; "
            "check REDIS_URL or [redis] in tinytown.toml"
        ) from None
    version_text = str(info.get("redis_version", ""))
    version = parse_version(version_text)
    if not version_supported(version):
        raise RedisUnavailable(
            f"Redis at {shown} is version {version_text or 'unknown'}; Tinytown needs Redis or "
            "Valkey 7.0 or newer (for XAUTOCLAIM and consumer-group lag)"
        )
    return version_text


def _auth_message(shown: str, err: Exception, target: RedisTarget) -> str:
    text = str(err)
    if "WRONGPASS" in text or "invalid username-password" in text or "invalid password" in text:
        reason = "WRONGPASS"  # redis-py strips the error code from the message
    elif "NOAUTH" in text or "Authentication required" in text:
        reason = "NOAUTH"
    else:
        reason = "authentication failed"
    return (
        f"Redis at {shown} refused the credentials ({reason}): "
        f"{redact_text(str(err), target.url)}; check the password in REDIS_URL, "
        "[redis].password or TINYTOWN_REDIS_PASSWORD"
    )


def connect(config: Config, *, start_server: bool = True) -> redis.Redis:
    """A verified client for the town, starting the embedded server first when it is ours.

    ``start_server=False`` never starts one (for status commands that only look).
    """
    target = resolve_target(config)
    if target.managed and start_server:
        EmbeddedServer(config).ensure_running()
    client = make_client(config, target)
    verify(client, target)
    return client
