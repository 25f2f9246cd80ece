"""Addresses as people see them: URLs with their password replaced by ``****``, and whether a
host is this machine's loopback. Pure string functions."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import quote, unquote, urlsplit, urlunsplit

REDACTED = "****"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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


def address_only(url: str) -> str:
    """``scheme://host[:port]/…``: a URL whose path or query may be its secret (an ntfy topic, a
    Slack or webhook token) as it may be logged or shown; user and password are dropped too."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "?", parts.port
    except ValueError:
        return "?/…"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}/…"


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
        for secret in sorted(
            {password, unquote(password), quote(unquote(password), safe="")}, key=len, reverse=True
        ):
            text = text.replace(secret, REDACTED)
    return text


_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_URL_CHARS = re.compile(r"[A-Za-z0-9\-._~:/\[\]@!$&'()*+,;=%]+")  # RFC 3986, no ? # \\ < > | "


def _host_ok(host: str) -> bool:
    """An IP literal, or a DNS name of ASCII labels (an international one in punycode)."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    return len(host) <= 253 and all(_LABEL.fullmatch(label) for label in labels)


def public_base_url(value: str) -> str | None:
    """``value`` as the base of links to townhall's pages (``https://town.example.com`` or
    ``https://example.com/town``), without a trailing ``/``; None when it is not one: an
    ``http``/``https`` URL of ASCII URL characters, with a host name (punycode for an
    international one) or an IP, and no user, password, query or fragment. The links go into
    pings sent to phones and chat: nothing in them may read differently there (``\\``,
    which browsers take for ``/``; ``<>|"``, Slack's link markup; whitespace or invisible
    characters)."""
    if not value or not _URL_CHARS.fullmatch(value):
        return None
    try:
        parts = urlsplit(value)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:  # a bad port or IPv6 literal
        return None
    if (
        parts.scheme.lower() not in ("http", "https")
        or not parts.hostname
        or not _host_ok(parts.hostname)
        or not port_ok
        or "@" in parts.netloc
        or parts.netloc.endswith(":")
    ):
        return None
    return value.rstrip("/")
