"""The agent card (``GET /.well-known/agent-card.json``): who the town is to another agent, where
it answers, how to authenticate and what it can do.

The card is A2A 1.0's (``supportedInterfaces``, proto-JSON security schemes) with 0.3's fields
beside them, as the A2A SDK serves its own: ``url``, ``protocolVersion``, ``preferredTransport``,
``security``, and each scheme's ``type`` next to its 1.0 form. A 1.0 reader ignores or converts
the 0.3 fields, a 0.3 reader the 1.0 ones, so one card serves both.
"""

from __future__ import annotations

from tinytown.a2a.skills import JSON, SKILLS, TEXT

ENDPOINT_PATH = "a2a"
LEGACY_PROTOCOL_VERSION = "0.3.0"


def agent_card(name: str, base_url: str, version: str, *, secured: bool = True) -> dict:
    """The card of town ``name`` served at ``base_url`` (e.g. ``https://town.example/``).
    ``secured``: the town asks for credentials (any auth mode but ``none``)."""
    url = base_url.rstrip("/") + "/" + ENDPOINT_PATH
    card = {
        "name": name,
        "description": (
            f"Tinytown town {name!r}: coding agents (Claude Code, Codex, Aider, …) running as "
            "workers. Give it a coding task or a mission of dependent work items; poll the task "
            "for its state and results."
        ),
        "version": version,
        "supportedInterfaces": [
            {"url": url, "protocolBinding": "JSONRPC", "protocolVersion": "1.0"},
            {"url": url, "protocolBinding": "JSONRPC", "protocolVersion": "0.3"},
        ],
        "capabilities": {"streaming": False, "pushNotifications": False},
        "defaultInputModes": [TEXT, JSON],
        "defaultOutputModes": [TEXT, JSON],
        "skills": [skill.card_entry() for skill in SKILLS.values()],
        # A2A 0.3's way of saying where and how (1.0 readers use supportedInterfaces).
        "url": url,
        "protocolVersion": LEGACY_PROTOCOL_VERSION,
        "preferredTransport": "JSONRPC",
    }
    if secured:
        card.update(_security())
    return card


def _security() -> dict:
    bearer = (
        "An API key (`tt auth add-key NAME --scopes …`) or, with [townhall.auth] mode = "
        '"oidc", an access token. Scopes: town.read for every call, town.write to send a '
        "message or cancel a task, agent.manage to cancel a mission."
    )
    header = "The same API key in the X-API-Key header (when no bearer token is sent)."
    return {
        "securitySchemes": {
            "bearer": {
                "httpAuthSecurityScheme": {"scheme": "bearer", "description": bearer},
                "type": "http",
                "scheme": "bearer",
                "description": bearer,
            },
            "apiKey": {
                "apiKeySecurityScheme": {
                    "location": "header",
                    "name": "X-API-Key",
                    "description": header,
                },
                "type": "apiKey",
                "in": "header",
                "name": "X-API-Key",
                "description": header,
            },
        },
        "securityRequirements": [
            {"schemes": {"bearer": {"list": []}}},
            {"schemes": {"apiKey": {"list": []}}},
        ],
        "security": [{"bearer": []}, {"apiKey": []}],
    }
