"""Authentication, scope checks and the audit log, wired into Flask.

Each protected blueprint calls :func:`protect` with its scope; the check runs before the view,
so a caller without credentials gets 401 and one without the scope 403 — before any body is
read or any record is looked up. Every mutating request to ``/v1`` and every denial (a read
included) leaves one audit line (JSON on the ``tinytown.audit`` logger) naming the principal;
under gunicorn those lines go to stderr (:mod:`.logs`).
"""

from __future__ import annotations

import logging
import uuid

from flask import Blueprint, Flask, Response, current_app, g, has_request_context, request

from tinytown.api.auth import INSUFFICIENT, Authenticator, AuthError, Principal
from tinytown.api.problems import problem
from tinytown.core.logfmt import audit_line, audit_result

audit_log = logging.getLogger("tinytown.audit")
MUTATING = ("POST", "PUT", "PATCH", "DELETE")


def _denied(err: AuthError) -> Response:
    headers = {"WWW-Authenticate": 'Bearer realm="townhall"'} if err.status == 401 else {}
    return problem(err.status, err.detail, headers=headers, error=err.error)


def identify() -> Principal:
    """The request's principal (also kept in ``g.principal`` for the audit line); raises
    :class:`AuthError` 401 for no or bad credentials."""
    authenticator: Authenticator = current_app.config["AUTHENTICATOR"]
    try:
        principal = authenticator.authenticate(
            request.headers.get("Authorization"),
            request.headers.get("X-API-Key"),
            (request.method, request.path),
        )
    except AuthError as err:
        if err.principal is not None:  # identified but refused: audit under who it was
            g.principal = err.principal
        raise
    g.principal = principal
    return principal


def protect(bp: Blueprint, scope: str) -> None:
    """Require ``scope`` for every route of ``bp``."""
    bp.required_scope = scope  # read by the auth-matrix test and the OpenAPI check

    @bp.before_request
    def _check():
        try:
            principal = identify()
        except AuthError as err:
            return _denied(err)
        if not principal.allows(scope):
            return _denied(AuthError(403, INSUFFICIENT, f"this route needs the {scope!r} scope"))
        return None


def audited(method: str, path: str, status: int) -> bool:
    """Every mutating request to ``/v1`` (whatever its outcome) and every denial, on any route."""
    return (method in MUTATING and path.startswith("/v1/")) or status in (401, 403)


def audit(principal: str, method: str, path: str, status: int, **extra) -> None:
    """One audit line: who (``principal``, or "anonymous"), what, and how it ended. ``extra``
    names more (e.g. the MCP ``tool`` or A2A ``rpc`` a POST carried)."""
    audit_log.info(
        audit_line(
            request_id=str(uuid.uuid4()),
            principal=principal,
            method=method,
            path=path,
            status=status,
            result=audit_result(status),
            remote=request.remote_addr if has_request_context() else None,
            **extra,
        )
    )


def install_audit(app: Flask) -> None:
    @app.after_request
    def _audit(resp: Response) -> Response:
        status = resp.status_code
        if audited(request.method, request.path, status) and not g.get("audited"):
            principal = getattr(g, "principal", None)
            audit(principal.id if principal else "anonymous", request.method, request.path, status)
        return resp
