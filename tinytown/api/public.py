"""Public routes (no auth): probes, metrics, the scaling signal and the API description."""

from __future__ import annotations

import time
from importlib import resources

import redis
from flask import Blueprint, Response, current_app

from tinytown.api import metrics
from tinytown.api.problems import problem, redis_detail
from tinytown.api.signals import dispatcher_status, scaling
from tinytown.connection.target import resolve_target
from tinytown.core import defaults
from tinytown.core.urls import redact_text

public = Blueprint("public", __name__)
SPEC_RESOURCE = "townhall-v1.yaml"


def _town():
    return current_app.config["TOWN"]


@public.get("/health")
@public.get("/healthz")
@public.get("/livez")
def health():
    """Liveness: the process answers. Never touches Redis; uptime counts from process start."""
    uptime = int(time.monotonic() - current_app.config["STARTED_MONOTONIC"])
    return {"status": "ok", "uptime_secs": uptime}


@public.get("/ready")
@public.get("/readyz")
def ready():
    """Readiness (upstream §10.1): Redis answers PING; a stalled dispatcher is reported, not 503."""
    town = _town()
    try:
        latency = town.ping_ms()
    except (redis.RedisError, OSError) as err:
        detail = redact_text(str(err), resolve_target(town.config).url)
        body = {
            "status": "not_ready",
            "redis": "disconnected",
            "dispatcher": "unknown",
            "town": town.config.name,
            "detail": f"Redis ping failed: {detail}",
        }
        return body, 503, {"Retry-After": str(defaults.TOWNHALL_RETRY_AFTER_SECS)}
    try:
        dispatcher = dispatcher_status(town)
    except redis.RedisError:
        dispatcher = "unknown"
    return {
        "status": "ready",
        "redis": "connected",
        "redis_latency_ms": round(latency, 3),
        "dispatcher": dispatcher,
        "town": town.config.name,
    }


@public.get("/metrics")
def metrics_route():
    status, body = metrics.scrape(_town())
    return Response(body, status=status, content_type=metrics.CONTENT_TYPE)


@public.get("/api/scaling")
def scaling_route():
    try:
        return scaling(_town())
    except redis.RedisError as err:
        return problem(
            503,
            f"cannot compute the scaling signal: {redis_detail(err)}",
            headers={"Retry-After": str(defaults.TOWNHALL_RETRY_AFTER_SECS)},
        )


def spec_text() -> str:
    """The OpenAPI document shipped inside the package (a copy of docs/openapi/townhall-v1.yaml)."""
    return resources.files("tinytown.api").joinpath(SPEC_RESOURCE).read_text(encoding="utf-8")


@public.get("/openapi.yaml")
def openapi():
    return Response(spec_text(), content_type="application/yaml; charset=utf-8")
