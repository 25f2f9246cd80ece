"""Coding-CLI presets and how a CLI reference resolves to a command (upstream spec §2.2). Pure."""

from __future__ import annotations

from typing import Mapping

from .config import AgentCli, Config

PRESETS: dict[str, str] = {
    "claude": "claude --print --dangerously-skip-permissions",
    "auggie": "auggie --print",
    "codex": "codex exec --dangerously-bypass-approvals-and-sandbox",
    "codex-mini": 'codex exec --dangerously-bypass-approvals-and-sandbox -m gpt-5.4-mini -c model_reasoning_effort="medium"',
    "aider": "aider --yes --no-auto-commits --message",
    "gemini": "gemini",
    "copilot": "gh copilot",
    "cursor": "cursor",
}

# CLIs that take the prompt as a file argument instead of on stdin.
INSTRUCTION_FILE_FLAG: dict[str, str] = {"auggie": "--instruction-file"}


def preset_name_for(command: str) -> str | None:
    """The preset a full command line corresponds to, inferred as upstream does."""
    command = command.strip()
    for name, cmd in PRESETS.items():
        if cmd == command:
            return name
    first = command.split()[0] if command.split() else ""
    if command.startswith("gh copilot"):
        return "copilot"
    if first == "codex":
        return "codex-mini" if "gpt-5.4-mini" in command else "codex"
    if first in ("claude", "auggie", "aider", "gemini", "cursor"):
        return first
    return None


def resolve_cli(ref: str | None, config: Config) -> AgentCli:
    """The CLI to run for a reference: a custom ``[agent_clis.NAME]``, a preset, or a raw command.

    Order: the town's own table (its ``command``, ``workdir`` and ``env`` apply) → built-in
    preset → preset inferred from a full command line → the string used as the command.
    An empty reference means the town's ``default_cli``.
    """
    ref = (ref or config.default_cli or "claude").strip()
    custom: Mapping[str, AgentCli] = config.agent_clis
    if ref in custom:
        return custom[ref]
    if ref in PRESETS:
        return AgentCli(name=ref, command=PRESETS[ref])
    inferred = preset_name_for(ref)
    if inferred and inferred in custom:
        return custom[inferred]
    return AgentCli(name=inferred or ref.split()[0], command=ref)
