"""An HTTP call whose answer is read within a deadline and a size, whatever the server does.

requests' ``timeout`` bounds each socket read, not the call: a server that drips one byte a
second, or sends a body without end, holds a call (and the scaler's pass) for ever and fills
memory. Here every call has

- **one deadline** for all of it, headers and body: a watchdog shuts the connection's socket
  down when it passes, which ends any read blocked on it;
- **a size**: the body is read in pieces and refused past ``max_bytes``; a compressed body is
  not asked for (``Accept-Encoding: identity``) and refused if sent anyway (a small gzip body
  can unpack to gigabytes);
- **no redirects**: a 3xx is an answer like any other status (the caller names it), never a
  reason to call another host;
- **JSON parsed safely**: nesting deep enough to exhaust the parser is not JSON either.

The socket a call sends on is noted by the connection classes the session's pools are given
(:class:`Watched`), so the watchdog can find it. Connecting is bounded by ``timeout`` alone.
"""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from tinytown.scaler.errors import short_reason

READ_CHUNK_BYTES = 64 * 1024
_noting = threading.local()  # the sockets the current thread's call sent on


class AnswerError(Exception):
    """The call failed, ran past its deadline, or its answer was too large or compressed.
    ``kind``: ``unreachable`` (no answer: connecting or reading failed), ``tls`` (the server's
    certificate was not trusted), ``deadline`` or ``answer`` (too large, compressed)."""

    def __init__(self, message: str, kind: str = "answer"):
        super().__init__(message)
        self.kind = kind


class _Noted:
    def request(self, *args, **kwargs):
        """Note the socket the request went out on: the answer is read from it, even after
        ``http.client`` hands it to the response (``Connection: close``) and forgets it."""
        result = super().request(*args, **kwargs)
        noted = getattr(_noting, "sockets", None)
        if noted is not None and self.sock is not None:
            noted.append(self.sock)
        return result


class _HTTP(_Noted, HTTPConnection):
    pass


class _HTTPS(_Noted, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTP


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPS


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class Watched(HTTPAdapter):
    """An adapter whose connections note themselves for the call's watchdog."""

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, *args, **kwargs):
        manager = super().proxy_manager_for(*args, **kwargs)
        manager.pool_classes_by_scheme = dict(_POOLS)
        return manager


def watched_session() -> requests.Session:
    session = requests.Session()
    for prefix in ("http://", "https://"):
        session.mount(prefix, Watched())
    session.headers["Accept-Encoding"] = "identity"
    return session


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON; raises ValueError when it is not (nesting too deep included)."""
        try:
            return json.loads(self.body)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None


def _cut(sockets: list, fired: threading.Event) -> None:
    fired.set()  # (first: the call's thread, woken by the cut, must see why)
    for sock in sockets:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def call(
    session: requests.Session,
    method: str,
    url: str,
    *,
    deadline_secs: float,
    max_bytes: int,
    timeout: float,
    **kwargs: Any,
) -> Answer:
    """``method url`` on ``session`` (made by :func:`watched_session`), its whole answer within
    ``deadline_secs`` and ``max_bytes``; ``timeout`` bounds connecting and each read. Raises
    AnswerError saying what went wrong."""
    _noting.sockets = sockets = []
    fired = threading.Event()
    watchdog = threading.Timer(deadline_secs, _cut, (sockets, fired))
    watchdog.daemon = True
    watchdog.start()
    response = None
    try:
        response = session.request(
            method, url, stream=True, allow_redirects=False, timeout=timeout, **kwargs
        )
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise AnswerError(f"answered with a {encoding!r} body, which was not asked for")
        body = bytearray()
        for chunk in response.raw.stream(READ_CHUNK_BYTES, decode_content=False):
            body += chunk
            if len(body) > max_bytes:
                raise AnswerError(f"answered with a body over {max_bytes} bytes")
        if fired.is_set():
            raise AnswerError(f"took over {deadline_secs:g} s to answer", "deadline")
        return Answer(response.status_code, bytes(body))
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError, ValueError) as err:
        if fired.is_set():
            raise AnswerError(f"took over {deadline_secs:g} s to answer", "deadline") from None
        kind = "tls" if isinstance(err, requests.exceptions.SSLError) else "unreachable"
        raise AnswerError(f"failed ({short_reason(err)})", kind) from None
    finally:
        watchdog.cancel()
        _noting.sockets = None
        if response is not None:
            response.close()
