"""The prompt a worker gives its coding CLI on stdin. Pure: plain data in, markdown out."""

from __future__ import annotations

from tinytown.core.messages import summarize
from tinytown.core.records import Task

# Message types that are noise in a prompt (a worker acts on the task; these are bookkeeping).
_QUIET_TYPES = ("shutdown", "ping", "pong")


def build_prompt(
    task: Task,
    *,
    agent_name: str,
    town_name: str,
    townhall_url: str,
    messages: list[dict] = (),  # type: ignore[assignment]
    workdir: str = "",
    branch: str = "",
) -> str:
    """The task, how to report the outcome, and the agent's pending inbox messages.

    ``townhall_url`` is where the CLI reaches townhall (the worker's ``TINYTOWN_URL``: the
    town's configured bind and port unless set); the REST way to report uses the task token the
    worker puts in the CLI's environment, never the token itself (the prompt may be logged).
    """
    lines = [
        f"# Task {task.id}",
        "",
        task.description.strip() or "(no description)",
        "",
        "## Context",
        f"- You are agent `{agent_name}` in Tinytown town `{town_name}`.",
        f"- Attempt {task.attempts} of this task."
        if task.attempts > 1
        else "- First attempt of this task.",
    ]
    if workdir:
        lines.append(f"- Work in `{workdir}`" + (f" on git branch `{branch}`." if branch else "."))
    if branch:
        lines.append(
            "- Commit as you go; anything left uncommitted is committed for you when you exit."
        )
    if task.tags:
        lines.append("- Tags: " + ", ".join(task.tags))
    lines += [
        "",
        "## Reporting",
        "When you are done, report the outcome (the task id is also in $TINYTOWN_TASK_ID):",
        "",
        f'    tt task complete {task.id} --result "<one-line summary>"',
        f'    tt task fail {task.id} --reason "<why it cannot be done>"',
        "",
        f"or over HTTP: `POST {townhall_url}/v1/tasks/{task.id}/complete` with",
        '`{"result": "..."}` (or `/fail` with `{"reason": "..."}`), sending the header',
        "`Authorization: Bearer $TINYTOWN_TASK_TOKEN` (a token that reports this task only,",
        "while it runs):",
        "",
        f"    curl -sS -X POST {townhall_url}/v1/tasks/{task.id}/complete \\",
        '      -H "Authorization: Bearer $TINYTOWN_TASK_TOKEN" \\',
        """      -H 'content-type: application/json' -d '{"result": "<one-line summary>"}'""",
        "",
        "If you exit 0 without reporting, the task is marked completed with the end of your",
        "output as its result; a non-zero exit is retried.",
    ]
    shown = [m for m in messages if m.get("type") not in _QUIET_TYPES]
    if shown:
        lines += ["", "## Messages for you", ""]
        for m in shown:
            kind, summary = summarize(m)
            sender = m.get("from") or "unknown"
            lines.append(f"- [{kind}] from {sender}: {summary}")
    return "\n".join(lines) + "\n"
