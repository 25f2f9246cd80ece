"""Public routes (no auth): liveness probes."""

from __future__ import annotations

import time

from flask import Blueprint, current_app

public = Blueprint("public", __name__)


@public.get("/health")
@public.get("/healthz")
@public.get("/livez")
def health():
    """Liveness: the process answers. Never touches Redis."""
    uptime = int(time.monotonic() - current_app.config["STARTED_MONOTONIC"])
    return {"status": "ok", "uptime_secs": uptime}
