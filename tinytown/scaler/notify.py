"""Notifications: when a health restart fails, a container runs out of restarts or an outpost
starts crash-looping, the event (one JSON object) goes to ``notify_command`` on stdin and/or is
POSTed to ``notify_webhook``. Best effort: a failure is logged, never raised.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from typing import Any

import requests

from tinytown.scaler.defaults import NOTIFY_TIMEOUT_SECS
from tinytown.scaler.log import log
from tinytown.scaler.settings import Config


def notify(config: Config, event: dict[str, Any]) -> None:
    """Run the notification hook(s); failures are logged, never raised."""
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
            done = subprocess.run(
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
