"""Coding-CLI presets, and which command a CLI name stands for (upstream spec §2.2). Pure.

**The security boundary.** A task or an agent names a coding CLI; it never carries a command.
The name must be a built-in preset or a ``[agent_clis.NAME]`` table of the town's
``tinytown.toml``, checked when the task is submitted (townhall answers 422 listing the names it
accepts) and again by the worker before it runs anything. So a client with ``town.write`` picks
*which* configured CLI works on its task; only whoever edits ``tinytown.toml`` decides *what*
runs. (The coding CLI itself, once running, does what coding agents do: it runs commands in the
task's workspace. Run workers where that is acceptable.)

The town's own ``default_cli`` may still be a full command line that matches a preset, as
upstream's configs have (``"codex exec … -m gpt-5.4-mini"`` → ``codex-mini``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tinytown.core.errors import ExitStatus, TinytownError

PRESETS: dict[str, str] = {
    "claude": "claude --print --dangerously-skip-permissions",
    "auggie": "auggie --print",
    "codex": "codex exec --dangerously-bypass-approvals-and-sandbox",
    "codex-mini": "codex exec --dangerously-bypass-approvals-and-sandbox -m gpt-5.4-mini "
    '-c model_reasoning_effort="medium"',
    "aider": "aider --yes --no-auto-commits --message",
    "gemini": "gemini",
    "copilot": "gh copilot",
    "cursor": "cursor",
}

# CLIs that take the prompt as a file argument instead of on stdin.
INSTRUCTION_FILE_FLAG: dict[str, str] = {"auggie": "--instruction-file"}


@dataclass(frozen=True)
class AgentCli:
    """A coding CLI: the command that reads a prompt on stdin, where it runs and its env."""

    name: str
    command: str
    workdir: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)


class UnknownCli(TinytownError):
    """A CLI name the town does not configure (a usage error where a person typed it)."""

    exit_status = ExitStatus.USAGE


def known_names(agent_clis: Mapping[str, AgentCli]) -> list[str]:
    """Every CLI name a task may give: the presets and the town's ``[agent_clis]`` tables."""
    return sorted(set(PRESETS) | set(agent_clis))


def unknown_message(ref: str, agent_clis: Mapping[str, AgentCli]) -> str:
    custom = ", ".join(sorted(agent_clis)) or "none"
    return (
        f"{ref[:80]!r} is not a coding CLI of this town; a task names one of the presets "
        f"({', '.join(sorted(PRESETS))}) or a [agent_clis.NAME] table of tinytown.toml ({custom}), "
        "never a command"
    )


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


def default_cli(ref: str, agent_clis: Mapping[str, AgentCli]) -> AgentCli:
    """The town's ``default_cli``: a name, or a command line that matches a preset (upstream's
    legacy form, run as written). Raises :class:`UnknownCli`."""
    ref = ref.strip()
    if ref in agent_clis or ref in PRESETS:
        return named_cli(ref, agent_clis)
    inferred = preset_name_for(ref)
    if inferred is None:
        raise UnknownCli(unknown_message(ref, agent_clis))
    if inferred in agent_clis:
        return agent_clis[inferred]
    return AgentCli(name=inferred, command=ref)


def named_cli(ref: str, agent_clis: Mapping[str, AgentCli]) -> AgentCli:
    """The CLI a task or agent names: exactly a preset or a ``[agent_clis]`` table (those win).
    Raises :class:`UnknownCli` for anything else, a command line included."""
    if ref in agent_clis:
        return agent_clis[ref]
    if ref in PRESETS:
        return AgentCli(name=ref, command=PRESETS[ref])
    raise UnknownCli(unknown_message(ref, agent_clis))


def resolve_cli(ref: str | None, default: str, agent_clis: Mapping[str, AgentCli]) -> AgentCli:
    """The CLI to run for a task's ``cli`` (None or empty: the town's ``default``)."""
    if not ref:
        return default_cli(default, agent_clis)
    return named_cli(ref, agent_clis)
