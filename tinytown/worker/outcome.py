"""What a task's run starts from and ends with: the inbox its prompt carries and the outcome of
its coding CLI, from which the worker writes the task's final state for the attempt."""

from __future__ import annotations

from dataclasses import dataclass

from tinytown.config import Config
from tinytown.core import cost, messages


@dataclass
class Inbox:
    """The messages read with the claim: ``(list key, raw message)`` pairs, urgent ones first."""

    raw: list[tuple[str, str]]

    @property
    def messages(self) -> list[dict]:
        return [messages.decode(m) for _, m in self.raw]


# What the shell's own exit codes mean: the command line never ran the CLI.
SHELL_CODES = {
    126: " (the shell found the command but could not run it: is it executable?)",
    127: " (the shell found no such command: is the CLI installed and on the worker's PATH?)",
}


@dataclass
class Outcome:
    """How one CLI run ended."""

    exit_code: int | None = None
    timed_out: bool = False
    # The worker is leaving (drain timeout, or told to before the CLI started): the task is left
    # unfinished, its entry for reclaim (``tinytown.worker.hand_back``).
    left_unfinished: bool = False
    never_started: bool = False  # … before its CLI started: not an attempt (given back uncounted)
    cancelled: bool = False  # the task was cancelled (tt/REST) while it ran: its CLI was stopped
    error: str = ""  # the CLI could not be started, or its workspace could not be prepared
    # The task as stored cannot run here (``TaskRunner.cli_for``): failed, not retried.
    rejected: bool = False
    tail: str = ""
    run_secs: float = 0.0  # how long the CLI ran (monotonic clock)

    def charge(self, task, cost_per_hour: float) -> dict[str, str]:
        """The task's fields after this attempt: its CLI's seconds and their cost, added to what
        earlier attempts took (:func:`tinytown.core.cost.charge`)."""
        return cost.charge(task.worker_secs, task.cost, self.run_secs, cost_per_hour)

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and not (self.stopped or self.error)

    @property
    def stopped(self) -> bool:
        """The worker stopped the CLI's process group (a timeout, a drain, a cancel)."""
        return self.timed_out or self.left_unfinished or self.cancelled

    def verdict(
        self, attempts: int, config: Config, max_attempts: int | None = None
    ) -> tuple[str, str]:
        """The task's final state for this attempt and its result: ``("completed", tail)``,
        ``("failed", reason and tail)`` once no attempt is left (or it was rejected), else
        ``("retry", "")``. ``max_attempts``: the task's own limit, else the worker's."""
        if self.succeeded:
            return "completed", self.tail
        max_attempts = max_attempts or config.agent.max_attempts
        if not self.rejected and attempts < max_attempts:
            return "retry", ""
        reason = (
            self.error
            if self.rejected
            else (
                f"failed after {attempts} attempts (max_attempts = {max_attempts}); "
                f"last attempt: {self.reason(config)}"
            )
        )
        return "failed", f"{reason}\n{self.tail}".rstrip()

    def reason(self, config: Config) -> str:
        if self.error:
            return self.error
        if self.cancelled:
            return "cancelled while it ran; its process group was stopped"
        if self.timed_out:
            return (
                f"timed out after {config.agent.task_timeout_secs} s (task_timeout_secs); "
                "its process group was stopped"
            )
        return f"the coding CLI exited with code {self.exit_code}" + SHELL_CODES.get(
            self.exit_code, ""
        )
