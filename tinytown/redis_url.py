"""Which Redis a town uses, and how its URL is shown to people.

Precedence (upstream §2.4): ``REDIS_URL`` → ``[redis].url`` → the town's unix socket →
``redis[s]://host:port`` built from ``[redis]``. Pure functions: no I/O here.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from .config import Config

REDACTED = "****"


@dataclass(frozen=True)
class RedisTarget:
    """Where to connect, and whether Tinytown may start the server itself."""

    url: str
    managed: bool  # True: a server Tinytown starts when nothing answers (socket or loopback TCP)
    socket_path: str | None = None  # set for the unix-socket mode

    @property
    def display(self) -> str:
        return redact_url(self.url)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``****``; the username is kept."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _redact_fallback(url)
    query = re.sub(r"(?i)(password=)[^&]*", rf"\1{REDACTED}", parts.query)
    if parts.password is None:
        return url if query == parts.query else url.replace(parts.query, query)
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:{REDACTED}@{host}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _redact_fallback(url: str) -> str:
    return re.sub(r"(://[^:/@]*:)[^@]*@", rf"\1{REDACTED}@", url)


def redact_text(text: str, url: str) -> str:
    """Scrub every appearance of the URL's password (raw or percent-encoded) from ``text``."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    text = text.replace(url, redact_url(url))
    if password:
        for secret in sorted({password, unquote(password), quote(unquote(password), safe="")}, key=len, reverse=True):
            text = text.replace(secret, REDACTED)
    return text
