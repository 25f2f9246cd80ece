"""Public routes (no auth): probes, metrics, the scaling signal and the API description."""

from __future__ import annotations

import time
from importlib import resources

import redis
from flask import Blueprint, Response, current_app, request

from tinytown.api import longpoll, metrics
from tinytown.api.problems import problem, redis_detail
from tinytown.api.signals import SignalCache, dispatcher_status
from tinytown.api.validation import query_int
from tinytown.connection.target import resolve_target
from tinytown.core import defaults
from tinytown.core.urls import redact_text

public = Blueprint("public", __name__)
longpoll.share_waiters(public)
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
    """The scaling signal. ``wait`` (seconds, at most ``SCALING_WAIT_MAX_SECS``) with ``since``
    (the ``version`` last seen): answer as soon as the signal's version differs from ``since``,
    woken by the event that changed it (the process's event pump), or with the unchanged signal
    when the wait ends. Without ``wait`` (KEDA, an upstream client), answer at once."""
    wait_secs = query_int("wait", 0, 0, defaults.SCALING_WAIT_MAX_SECS)
    since = request.args.get("since")
    cache: SignalCache = current_app.config["SIGNALS"]
    try:
        # An answer given at once counts every write made before the request (confirm: one
        # command); a wait is woken by the pump, which brings any write it has not seen yet.
        doc, seq = cache.current(confirm=not wait_secs)
        if not wait_secs:
            return doc
        if since != doc["version"]:
            doc, seq = cache.current(confirm=True)
            if since != doc["version"]:
                return doc
        if cache.pump is None:  # an app without background duties cannot wait for events
            return doc, 200, {longpoll.WAIT_HEADER: "unsupported"}
        seen = seq

        def changed(wait_ms: int) -> dict | None:
            """The signal once its version differs from ``since``, waiting on the pump."""
            nonlocal seen
            if wait_ms > 0:
                seen = cache.pump.wait(seen, wait_ms / 1000)
            now_doc, seen = cache.current()
            return now_doc if now_doc["version"] != since else None

        found, cut_short = longpoll.wait(changed, wait_secs)
        if found is not None:
            return found
        doc, _ = cache.current()  # unchanged: answered after the wait (or at once, and why)
        return doc, 200, {longpoll.WAIT_HEADER: cut_short} if cut_short else {}
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
