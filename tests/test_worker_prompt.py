"""The prompt builder is pure: task, messages and context in, markdown out."""

from __future__ import annotations

from tinytown.core.messages import build_message
from tinytown.core.prompt import build_prompt
from tinytown.core.records import Task


def prompt(**kwargs):
    task = kwargs.pop("task", Task(id="t-1", description="Fix the flaky test", attempts=1))
    return build_prompt(
        task, agent_name="alice", town_name="town", townhall_url="http://127.0.0.1:8080", **kwargs
    )


def test_the_prompt_starts_with_the_task_and_says_how_to_report():
    text = prompt()
    assert text.startswith("# Task t-1\n\nFix the flaky test\n\n")
    assert 'tt task complete t-1 --result "<one-line summary>"' in text
    assert "POST http://127.0.0.1:8080/v1/tasks/t-1/complete" in text
    assert "First attempt" in text


def test_pending_messages_are_listed_but_shutdown_is_not():
    msgs = [
        build_message("sup", "alice", "also bump the version", "task"),
        build_message("sup", "alice", "", "shutdown"),
    ]
    text = prompt(messages=msgs)
    assert "## Messages for you" in text and "[task] from sup: also bump the version" in text
    assert "shutdown" not in text


def test_a_retry_and_a_workspace_are_mentioned():
    task = Task(id="t-2", description="x", attempts=2)
    text = prompt(task=task, workdir="/ws/repo", branch="tt/abcd1234")
    assert "Attempt 2 of this task." in text
    assert "Work in `/ws/repo` on git branch `tt/abcd1234`." in text
