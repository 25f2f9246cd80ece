"""Problem details (RFC 9457): every error townhall returns, and the handlers that make them.

Each body is ``application/problem+json`` with ``type``, ``title``, ``status``, ``detail`` and,
where one field of the request is at fault, ``field``. Auth failures additionally carry
upstream's constant ``error`` text, so clients of either shape keep working.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus

import redis
from flask import Flask, Response, current_app
from werkzeug.exceptions import HTTPException

from tinytown.core.errors import Problem, TinytownError
from tinytown.core.inputs import InputError
from tinytown.ops import table
from tinytown.ops.table import as_problem

PROBLEM_TYPE = "https://tinytown.dev/errors/{status}"
log = logging.getLogger("tinytown.townhall")


def problem_document(status: int, detail: str, *, field: str | None = None, **extra) -> dict:
    """The problem document itself; also written by the gunicorn worker (:mod:`.server`) for
    requests it answers before Flask sees them."""
    body = {
        "type": PROBLEM_TYPE.format(status=status),
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if field is not None:
        body["field"] = field
    body.update(extra)
    return body


def problem(
    status: int, detail: str, *, field: str | None = None, headers: dict | None = None, **extra
) -> Response:
    body = problem_document(status, detail, field=field, **extra)
    resp = Response(json.dumps(body), status=status, mimetype="application/problem+json")
    for name, value in (headers or {}).items():
        resp.headers[name] = value
    return resp


def redis_detail(err: Exception) -> str:
    """What went wrong with Redis, naming it with its password redacted."""
    return table.redis_detail(err, current_app.config["TOWN"])


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(Problem)
    def _problem(err: Problem):
        if err.status == 503:
            log.warning("event=redis_unavailable detail=%s", json.dumps(err.detail))
        return problem(err.status, err.detail, field=err.field, headers=err.headers, **err.extra)

    @app.errorhandler(HTTPException)
    def _http(err: HTTPException):
        detail = err.description or HTTPStatus(err.code or 500).phrase
        if err.code == 413:
            limit = current_app.config.get("MAX_CONTENT_LENGTH")
            detail = (
                f"request body is larger than the limit of {limit} bytes "
                "([townhall].max_body_bytes)"
            )
        elif err.code == 404:
            detail = "no such route; see /openapi.yaml for the API"
        headers = {}
        if err.code == 405 and err.valid_methods:
            headers["Allow"] = ", ".join(sorted(err.valid_methods))
            detail = f"method not allowed; this route accepts {headers['Allow']}"
        return problem(err.code or 500, detail, headers=headers)

    @app.errorhandler(InputError)
    @app.errorhandler(TinytownError)  # UnknownCli, NotFound, InvalidTransition, ...
    @app.errorhandler(redis.ConnectionError)
    @app.errorhandler(redis.TimeoutError)
    def _known(err: Exception):
        return _problem(as_problem(err, current_app.config["TOWN"]))

    @app.errorhandler(Exception)
    def _internal(err: Exception):
        if isinstance(err, HTTPException):
            return _http(err)
        log.exception("event=internal_error")
        return problem(500, "internal error; the townhall log has the details")
