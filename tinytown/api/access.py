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

from flask import Blueprint, Flask, Response, current_app, g, request

from tinytown.api.auth import INSUFFICIENT, Authenticator, AuthError, audit_line
from tinytown.api.problems import problem

audit_log = logging.getLogger("tinytown.audit")
MUTATING = ("POST", "PUT", "PATCH", "DELETE")


def _denied(err: AuthError) -> Response:
    headers = {"WWW-Authenticate": 'Bearer realm="townhall"'} if err.status == 401 else {}
    return problem(err.status, err.detail, headers=headers, error=err.error)


def protect(bp: Blueprint, scope: str) -> None:
    """Require ``scope`` for every route of ``bp``."""
    bp.required_scope = scope  # read by the auth-matrix test and the OpenAPI check

    @bp.before_request
    def _check():
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
            return _denied(err)
        g.principal = principal
        if not principal.allows(scope):
            return _denied(AuthError(403, INSUFFICIENT, f"this route needs the {scope!r} scope"))
        return None


def audited(method: str, path: str, status: int) -> bool:
    """Every mutating request to ``/v1`` (whatever its outcome) and every denial, on any route."""
    return (method in MUTATING and path.startswith("/v1/")) or status in (401, 403)


def install_audit(app: Flask) -> None:
    @app.after_request
    def _audit(resp: Response) -> Response:
        status = resp.status_code
        if audited(request.method, request.path, status):
            result = "success" if status < 300 else "denied" if status in (401, 403) else "error"
            principal = getattr(g, "principal", None)
            audit_log.info(
                audit_line(
                    request_id=str(uuid.uuid4()),
                    principal=principal.id if principal else "anonymous",
                    method=request.method,
                    path=request.path,
                    status=status,
                    result=result,
                    remote=request.remote_addr,
                )
            )
        return resp
