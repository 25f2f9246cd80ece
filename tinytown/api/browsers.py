"""What a web page in a browser may ask of townhall.

A browser sends requests for whatever page it shows. A page on any site can POST to
``http://127.0.0.1:8080`` without asking first (a CORS "simple" request: a form, ``text/plain``
or no body at all), and a page whose host name its owner points at 127.0.0.1 after it loaded
(DNS rebinding) is even on the same origin as townhall, so it may read the answers too.

Keys stop both: a browser never adds a bearer key by itself, and the status page's cookie
(``SameSite=Lax``) opens only its read-only pages, whose forms refuse a foreign ``Origin``
(:mod:`tinytown.api.page`). A town without auth (``[townhall.auth] mode = "none"``, which
townhall allows only on a loopback or unix-socket bind) has no key, so there every request must

- name this machine in its ``Host`` header (``localhost``, ``127.0.0.0/8``, ``::1``, any port):
  a rebound name is refused;
- carry no ``Origin``, or townhall's own: browsers send ``Origin`` with every cross-origin
  request and with every POST; ``curl``, the SDKs and the workers send none.

``/mcp`` refuses a foreign ``Origin`` with auth too (the MCP transport's rule).

A refusal is 403 before anything else is looked at, as a problem document, or as a JSON-RPC
error on ``/mcp`` and ``/a2a``, with one audit line.
"""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, g, request

from tinytown.api import jsonrpc
from tinytown.api.access import audit
from tinytown.api.auth import INSUFFICIENT
from tinytown.api.problems import problem
from tinytown.core.inputs import printable
from tinytown.core.rpc import INVALID_REQUEST, RpcError
from tinytown.core.urls import is_loopback

JSON_RPC = ("mcp", "a2a")  # the blueprints that answer in JSON-RPC


@lru_cache(maxsize=256)  # (a handful of Host values reach a town; this runs on every request)
def local_host(host: str) -> bool:
    """Whether a ``Host`` header (``name[:port]``, ``[v6][:port]``) names this machine."""
    try:
        name = urlsplit(f"//{host}").hostname
    except ValueError:  # e.g. an unclosed "["
        return False
    return name is not None and is_loopback(name)


def same_origin(origin: str, host: str) -> bool:
    """Whether an ``Origin`` header is the origin the request was sent to (its ``Host``)."""
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()


def refusal(host: str, origin: str | None, *, open_town: bool) -> str | None:
    """Why a request must be refused (None: it may go on). ``open_town``: auth mode none."""
    if open_town and not local_host(host):
        return (
            f"this townhall has no auth and answers only requests addressed to this machine "
            f"(Host: localhost, 127.0.0.1 or [::1]), not {host[:100]!r}; to serve other names, "
            'configure [townhall.auth] mode = "api_key"'
        )
    if origin is not None and not same_origin(origin, host):
        return f"a web page from origin {origin[:100]!r} may not call this server"
    return None


def install(app: Flask) -> None:
    """Check every request before anything else runs (the first ``before_request``)."""

    @app.before_request
    def _check_browser():
        open_town = current_app.config["AUTHENTICATOR"].mode == "none"
        origin = request.headers.get("Origin")
        if not open_town and (origin is None or request.blueprint != "mcp"):
            return None
        why = refusal(request.host, origin, open_town=open_town)
        return None if why is None else _refuse(printable(why))


def _refuse(why: str) -> Response:
    audit("anonymous", request.method, request.path, 403, reason="browser request refused")
    g.audited = True
    if request.blueprint in JSON_RPC:
        return jsonrpc.error(None, RpcError(INVALID_REQUEST, why), status=403)
    return problem(403, why, error=INSUFFICIENT)  # (upstream's constant text of a 403)
