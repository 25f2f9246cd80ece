"""What the route modules share: the town, and running an operation for a view."""

from __future__ import annotations

from flask import current_app

from tinytown import ops
from tinytown.store import Town


def town() -> Town:
    return current_app.config["TOWN"]


def run(name: str, body: dict | None = None, /, **values) -> tuple[dict, int]:
    """Run operation ``name`` with a request's ``body`` and its path and query ``values`` (which
    win over the body's). The caller's scope was checked by the view's blueprint."""
    op = ops.find(name)
    return ops.run(name, town(), {**(body or {}), **values}), op.status
