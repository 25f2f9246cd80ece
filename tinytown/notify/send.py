"""One delivery attempt over HTTP, and its outcome in words that never hold the URL.

A 2xx answer delivers; anything else (another status, a timeout, a refused connection, a TLS
failure) is a failed attempt to be retried. Redirects are not followed: a redirected POST would
arrive as a GET, so a 3xx says "use the final URL". requests' own error text names the URL,
which may carry a token, so only the error's class is reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import requests

from tinytown.config.notify import NotifyTarget
from tinytown.notify.message import Notification
from tinytown.notify.targets import build_request


@dataclass(frozen=True)
class Outcome:
    """``ok`` for a 2xx answer; ``status`` when one came; ``reason`` a short safe phrase."""

    ok: bool
    status: int | None
    reason: str


def _failure(err: Exception, target: NotifyTarget) -> Outcome:
    if isinstance(err, requests.Timeout):
        return Outcome(False, None, f"timed out after {target.timeout_secs} s")
    if isinstance(err, requests.exceptions.SSLError):
        return Outcome(False, None, "TLS handshake failed (SSLError)")
    if isinstance(err, requests.ConnectionError):
        return Outcome(False, None, f"connection failed ({type(err).__name__})")
    return Outcome(False, None, f"request failed ({type(err).__name__})")


def send(
    target: NotifyTarget, notification: Notification, session: requests.Session | None = None
) -> Outcome:
    """POST ``notification`` to ``target`` once; never raises for a network or HTTP failure."""
    url, headers, body = build_request(target, notification)
    try:
        response = (session or requests).post(
            url,
            data=body,
            headers=headers,
            timeout=target.timeout_secs,
            allow_redirects=False,
            stream=True,  # the status is all that counts; the body is not read
        )
    except (requests.RequestException, ValueError) as err:
        return _failure(err, target)
    response.close()
    status = response.status_code
    if 200 <= status < 300:
        return Outcome(True, status, f"HTTP {status}")
    if 300 <= status < 400:
        return Outcome(False, status, f"HTTP {status} (a redirect; configure the final URL)")
    return Outcome(False, status, f"HTTP {status}")
