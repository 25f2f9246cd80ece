"""MCP resources, as upstream names them: four lists and three templates, each read through
the operation its REST route runs (so reading one needs ``town.read``)."""

from __future__ import annotations

import json
import re

from tinytown import ops
from tinytown.core.errors import Problem
from tinytown.core.rpc import INTERNAL_ERROR, INVALID_PARAMS, RpcError
from tinytown.mcp.tools import problem_json, protocol_error
from tinytown.ops.table import Caller
from tinytown.store import Town

RESOURCE_NOT_FOUND = -32002  # MCP's code for a resource that does not exist
MIME = "application/json"

# uri → (name, description, operation)
RESOURCES = {
    "tinytown://town/current": (
        "town",
        "The town and every agent (town.get_status).",
        "town.get_status",
    ),
    "tinytown://agents": ("agents", "Every agent (agent.list).", "agent.list"),
    "tinytown://backlog": (
        "backlog",
        "Tasks waiting for any worker (backlog.list).",
        "backlog.list",
    ),
    "tinytown://missions": ("missions", "Missions, newest first (mission.list).", "mission.list"),
}
# template → (name, description, operation, its argument)
TEMPLATES = {
    "tinytown://agents/{agent_name}": ("agent", "One agent (agent.get).", "agent.get", "agent"),
    "tinytown://tasks/{task_id}": ("task", "One task (task.get).", "task.get", "task_id"),
    "tinytown://missions/{mission_id}": (
        "mission",
        "One mission with its work items (mission.get_status).",
        "mission.get_status",
        "mission_id",
    ),
}
_TEMPLATE = re.compile(r"tinytown://(agents|tasks|missions)/([^/?#]{1,200})")
_BY_PREFIX = {uri.split("/")[2]: entry for uri, entry in TEMPLATES.items()}


def resource_list() -> list[dict]:
    return [
        {"uri": uri, "name": name, "description": text, "mimeType": MIME}
        for uri, (name, text, _) in RESOURCES.items()
    ]


def template_list() -> list[dict]:
    return [
        {"uriTemplate": uri, "name": name, "description": text, "mimeType": MIME}
        for uri, (name, text, _, _) in TEMPLATES.items()
    ]


def read_resource(town: Town, caller: Caller, uri: object) -> dict:
    """``resources/read``: the resource's JSON, or a JSON-RPC error naming what is wrong."""
    if not isinstance(uri, str):
        raise RpcError(INVALID_PARAMS, "'uri' must be a string")
    if uri in RESOURCES:
        name, args = RESOURCES[uri][2], {}
    elif found := _TEMPLATE.fullmatch(uri):
        _, _, name, arg = _BY_PREFIX[found.group(1)]
        args = {arg: found.group(2)}
    else:
        raise RpcError(RESOURCE_NOT_FOUND, f"no resource {uri[:200]!r}", {"uri": uri[:200]})
    try:
        data = ops.run(name, town, args, caller)
    except Problem as err:
        code = (
            RESOURCE_NOT_FOUND
            if err.status == 404
            else INTERNAL_ERROR
            if err.status >= 500
            else INVALID_PARAMS
        )
        raise protocol_error(err, code, {"uri": uri, **problem_json(err)}) from None
    return {"contents": [{"uri": uri, "mimeType": MIME, "text": json.dumps(data)}]}
