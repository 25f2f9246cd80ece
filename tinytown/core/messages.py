"""Agent inbox messages (upstream spec §4.4): the JSON documents, built, summarised and read
back. Pure; the lists they live on are :mod:`tinytown.store.inbox`. A ``shutdown`` message makes
a worker drain and exit."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from tinytown.core.records import new_id

SEND_KINDS = ("task", "query", "info", "ack", "shutdown")
ACTIONABLE_TYPES = ("task", "query", "task_assign", "status_request", "ping", "shutdown", "custom")


def _json_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _ack_type(text: str) -> dict:
    lowered = text.strip().lower()
    if lowered.startswith("rejected:"):
        return {"type": "rejected", "reason": text.split(":", 1)[1].strip()}
    if lowered.startswith("received"):
        return {"type": "received"}
    if lowered.startswith("approved"):
        return {"type": "approved"}
    if "thanks" in lowered or "thank you" in lowered:
        return {"type": "thanks"}
    return {"type": "acknowledged"}


def build_message(sender: str, to: str, text: str, kind: str = "task") -> dict:
    """A message document; ``kind`` maps as upstream (unknown kinds become ``task``)."""
    body: dict
    if kind == "query":
        body = {"type": "query", "question": text}
    elif kind == "info":
        body = {"type": "informational", "summary": text}
    elif kind == "ack":
        body = {"type": "confirmation", "ack_type": _ack_type(text)}
    elif kind == "shutdown":
        body = {"type": "shutdown"}
    else:
        body = {"type": "task", "description": text}
    return {
        "id": new_id(),
        "from": sender,
        "to": to,
        **body,
        "priority": "normal",
        "created_at": _json_now(),
        "correlation_id": None,
    }


def summarize(message: dict) -> tuple[str, str]:
    """``(type label, one-line summary)`` as townhall's inbox route shows them."""
    kind = message.get("type", "custom")
    if kind == "task_assign":
        return kind, f"task assignment {message.get('task_id', '')}"
    if kind == "task":
        return kind, str(message.get("description", ""))
    if kind == "query":
        return kind, str(message.get("question", ""))
    if kind == "informational":
        return "info", str(message.get("summary", ""))
    if kind == "confirmation":
        ack = message.get("ack_type") or {}
        return kind, str(ack.get("type", "acknowledged")) + (
            f": {ack['reason']}" if ack.get("reason") else ""
        )
    if kind == "task_done":
        return kind, f"done {message.get('task_id', '')}: {message.get('result', '')}"
    if kind == "task_failed":
        return kind, f"failed {message.get('task_id', '')}: {message.get('error', '')}"
    if kind == "custom":
        return f"custom:{message.get('kind', '')}", json.dumps(message.get("payload"))
    return kind, kind.replace("_", " ")


def decode(raw: str) -> dict:
    """A stored message; an undecodable entry is kept visible as an informational one."""
    try:
        msg = json.loads(raw)
        if isinstance(msg, dict):
            return msg
    except ValueError:
        pass
    return {"id": "", "type": "informational", "summary": raw}
