"""Notifications: when a health restart fails, a container runs out of restarts or an outpost
starts crash-looping, the event (one JSON object) goes to ``notify_command`` on stdin and/or is
POSTed to ``notify_webhook``. Best effort: a failure is logged, never raised.

An unhealthy worker (a failed restart, or out of restarts) with an agent id is also reported to
townhall (``POST /v1/agents/{id}/unhealthy``), which appends ``agent_unhealthy`` to the town's
events: townhall's ``[[notify]]`` targets are where pings are configured (docs/notifications.md).
The hooks here still run, for when townhall cannot be reached.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from typing import Any

import requests

from tinytown.scaler.defaults import NOTIFY_TIMEOUT_SECS
from tinytown.scaler.errors import TownhallError
from tinytown.scaler.log import log
from tinytown.scaler.model import Config
from tinytown.scaler.townhall import Townhall

# The scaler's events that say a worker is unhealthy (townhall hears of these).
WORKER_EVENTS = ("worker_restart_failed", "worker_restarts_exhausted")
REPORT_REASON_MAX_CHARS = 500


def unhealthy_reason(event: dict[str, Any]) -> str:
    """One line for townhall: the verdict, and what happened to the restart."""
    reason = str(event.get("reason") or "unhealthy")
    if event.get("error"):
        reason += f"; restart failed: {event['error']}"
    elif event["event"] == "worker_restarts_exhausted":
        reason += f"; out of restarts ({event.get('restarts', 0)} made)"
    return " ".join(reason.split())[:REPORT_REASON_MAX_CHARS]


def report_to_townhall(config: Config, event: dict[str, Any]) -> None:
    """Report an unhealthy worker to townhall; a failure is logged, never raised."""
    if event.get("event") not in WORKER_EVENTS or not event.get("agent_id"):
        return
    townhall = Townhall(config)
    try:
        reason, outpost = unhealthy_reason(event), event.get("outpost")
        event_id = townhall.report_unhealthy(
            event["agent_id"], reason, outpost, event.get("container_id")
        )
    except TownhallError as err:
        log("warning", "report_unhealthy_failed", agent_id=event["agent_id"], error=str(err))
        return
    finally:
        townhall.session.close()
    log("info", "reported_unhealthy", agent_id=event["agent_id"], event_id=event_id)


def notify(config: Config, event: dict[str, Any]) -> None:
    """Report a worker to townhall and run the notification hook(s); failures are logged,
    never raised."""
    report_to_townhall(config, event)
    payload = json.dumps(event)
    if config.notify_command:
        env = {
            **os.environ,
            "TINYTOWN_EVENT": event["event"],
            "TINYTOWN_TOWN": event.get("town") or "",
            "TINYTOWN_OUTPOST": event.get("outpost") or "",
            "TINYTOWN_CONTAINER_ID": event.get("container_id") or "",
            "TINYTOWN_AGENT_ID": event.get("agent_id") or "",
        }
        try:
            # the operator's configured hook, split into arguments (no shell); the event goes
            # on stdin and in the environment, never into the command line
            done = subprocess.run(  # nosec B603
                shlex.split(config.notify_command),
                input=payload,
                text=True,
                env=env,
                timeout=NOTIFY_TIMEOUT_SECS,
                capture_output=True,
            )
            if done.returncode != 0:
                log(
                    "warning",
                    "notify_command_failed",
                    exit_code=done.returncode,
                    stderr=done.stderr[-300:],
                )
        except (OSError, subprocess.SubprocessError) as err:
            log("warning", "notify_command_failed", error=str(err))
    if config.notify_webhook:
        try:
            response = requests.post(
                config.notify_webhook,
                data=payload,
                headers={"Content-Type": "application/json"},
                timeout=NOTIFY_TIMEOUT_SECS,
            )
            if response.status_code >= 300:
                log("warning", "notify_webhook_failed", status=response.status_code)
        except requests.RequestException as err:
            log("warning", "notify_webhook_failed", error=str(err))
