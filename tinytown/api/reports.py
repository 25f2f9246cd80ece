"""Reports from outside the town's Redis (scope ``agent.manage``): the scaler says a worker is
unhealthy, and the town's feed gets an ``agent_unhealthy`` event — which townhall's notifier
turns into the ``worker_unhealthy`` ping of every ``[[notify]]`` target that wants it."""

from __future__ import annotations

from flask import Blueprint

from tinytown.api.access import protect
from tinytown.api.common import town
from tinytown.api.validation import field, json_body, required_text
from tinytown.core import events as ev
from tinytown.core import inputs
from tinytown.core.clock import now, to_rfc3339
from tinytown.ops.refs import agent_id_for

REASON_MAX_CHARS = 500  # one line of why; the scaler's log holds the rest
PLACE_MAX_CHARS = 200  # an outpost name or a container id

reports = Blueprint("reports", __name__)
protect(reports, "agent.manage")


def _place(value: str, name: str) -> str:
    return inputs.text(value.strip(), name, max_chars=PLACE_MAX_CHARS, multiline=False)


@reports.post("/v1/agents/<agent>/unhealthy")
def agent_unhealthy(agent: str):
    """``{"reason", "outpost"?, "container_id"?}`` → 202 ``{"event_id", "agent_id"}``."""
    body = json_body()
    reason = required_text(body, "reason", multiline=False)
    reason = inputs.text(reason.strip(), "reason", max_chars=REASON_MAX_CHARS, multiline=False)
    outpost = field(body, "outpost", str, rule=_place)
    container = field(body, "container_id", str, rule=_place)
    resolved, record = agent_id_for(town(), inputs.reference(agent, "agent"))
    where = f" on outpost {outpost}" if outpost else ""
    in_container = f" (container {container[:12]})" if container else ""
    doc = ev.event(
        ev.AGENT_UNHEALTHY,
        f"Worker {record.name if record else resolved} unhealthy{where}{in_container}: {reason}",
        to_rfc3339(now()),
        agent_id=resolved,
        reason=reason,
    )
    return {"event_id": town().events.append(doc), "agent_id": resolved}, 202
