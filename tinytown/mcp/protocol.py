"""MCP's JSON-RPC methods, answered for one caller: the handshake, tools, resources, prompts.

Stateless: every request stands alone (no session), which suits a server answering each POST
with JSON. Protocol versions are those of the ``initialize`` handshake; ``server/discover`` (the
2026 stateless era) is answered "method not found", so a client that probes falls back to the
handshake, as the SDK does.
"""

from __future__ import annotations

from collections.abc import Callable

from tinytown import __version__
from tinytown.core.rpc import INVALID_PARAMS, METHOD_NOT_FOUND, RpcError
from tinytown.mcp import prompts, resources, tools
from tinytown.ops.table import Caller
from tinytown.store import Town

VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")  # oldest to newest
LATEST = VERSIONS[-1]
SERVER_INFO = {"name": "tinytown", "title": "Tinytown townhall", "version": __version__}
INSTRUCTIONS = (
    "This is a Tinytown town: coding agents that take tasks from a queue. Queue work with "
    "backlog.add, run a plan of dependent items with mission.start, follow it with "
    "mission.get_status or task.get, and answer a stuck mission with mission.note. "
    "Start with the prompt conductor.startup_context or the resource tinytown://town/current."
)
CAPABILITIES = {
    "tools": {"listChanged": False},
    "resources": {"subscribe": False, "listChanged": False},
    "prompts": {"listChanged": False},
}


def negotiate(requested: object) -> str:
    """The version to speak: the client's if this server knows it, else the newest."""
    return requested if isinstance(requested, str) and requested in VERSIONS else LATEST


def initialize(params: dict) -> dict:
    return {
        "protocolVersion": negotiate(params.get("protocolVersion")),
        "capabilities": CAPABILITIES,
        "serverInfo": SERVER_INFO,
        "instructions": INSTRUCTIONS,
    }


class Session:
    """One request's context: the town, who asks, and what the call did (for the audit)."""

    def __init__(self, town: Town, caller: Caller):
        self.town, self.caller = town, caller
        self.outcome: tools.Outcome | None = None

    def handle(self, method: str, params: dict) -> dict:
        """The result of ``method``; raises :class:`RpcError` for a protocol error."""
        handler = self._methods().get(method)
        if handler is None:
            raise RpcError(METHOD_NOT_FOUND, f"method {method[:80]!r} is not supported here")
        return handler(params)

    def _methods(self) -> dict[str, Callable[[dict], dict]]:
        return {
            "initialize": initialize,
            "ping": lambda _: {},
            "tools/list": lambda _: {"tools": list(tools.tool_list())},
            "tools/call": self._call,
            "resources/list": lambda _: {"resources": resources.resource_list()},
            "resources/templates/list": lambda _: {"resourceTemplates": resources.template_list()},
            "resources/read": lambda p: resources.read_resource(
                self.town, self.caller, p.get("uri")
            ),
            "prompts/list": lambda _: {"prompts": list(prompts.PROMPTS)},
            "prompts/get": lambda p: prompts.get_prompt(
                self.town, self.caller, p.get("name"), p.get("arguments")
            ),
            "logging/setLevel": lambda _: {},
        }

    def _call(self, params: dict) -> dict:
        if "name" not in params:
            raise RpcError(INVALID_PARAMS, "tools/call needs the tool's 'name'")
        self.outcome = tools.call_tool(
            self.town, self.caller, params["name"], params.get("arguments")
        )
        return self.outcome.result
