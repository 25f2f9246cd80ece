"""Running one claimed task: its git workspace, its coding CLI, and how the run ended.

The worker's main loop (``agent_worker.py``) hands each task it claimed to :meth:`TaskRunner.run`
and gets back the :class:`~tinytown.worker.outcome.Outcome` and the task's workspace, from which
it writes the task's final state. In between:

- a task that cannot run here as stored (:meth:`TaskRunner.cli_for`) is rejected at once;
- a task with a ``repo`` gets its git workspace (:mod:`tinytown.worker.workspace`);
- the CLI starts as ``sh -c COMMAND`` in a process group of its own
  (:mod:`tinytown.worker.cli_process`), its output going to the task's log file
  (:mod:`tinytown.worker.tasklog`); the leash takes hold of it, one round trip stores its task
  token and records ``started_at``, the agent ``working`` and the inbox messages the prompt
  took, then the prompt is written to its stdin (a thread only for what the pipe cannot take);
- the runner waits for the CLI (on a pidfd: no thread) and stops its group on the task timeout,
  a drain timeout or a cancel (set by the worker's other threads), and after its exit stops what
  it left running;
- once the CLI has run ``TASK_OUTPUT_FLUSH_SECS``, a thread sends its output from the log file to
  the task's Redis stream (:mod:`tinytown.worker.output_stream`), its last part before the final
  state is written, and the stream is marked finished once the task is in a final state;
- the attempt's end (its workspace committed, its final state, the round's end) is
  :class:`~tinytown.worker.attempt_end.AttemptEnd`'s.

The way from a delivery to ``Popen`` is the submit→start latency (``docs/benchmarks.md``): for a
task without a repository nothing on it can wait — no Redis round trip, no file creation, no
log line; the prompt, the log line and the round trip all come once the CLI runs.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from tinytown.config import AgentConfig, Config
from tinytown.core import defaults, inputs
from tinytown.core.clis import INSTRUCTION_FILE_FLAG, AgentCli, UnknownCli
from tinytown.core.clock import now, to_rfc3339
from tinytown.core.errors import TinytownError
from tinytown.core.prompt import build_prompt
from tinytown.core.records import Task
from tinytown.core.states import AGENT
from tinytown.store import Town
from tinytown.store.docket import Entry
from tinytown.store.task_tokens import new_secret, new_token
from tinytown.store.worker import WorkerStore
from tinytown.worker import cli_process, orphan_cli, workspace
from tinytown.worker.attempt_end import AttemptEnd
from tinytown.worker.outcome import Inbox, Outcome
from tinytown.worker.output_stream import OutputStream
from tinytown.worker.tasklog import TaskLogs
from tinytown.worker.workspace import Workspace


class WorkerState(Protocol):
    """What a task's run reads and sets on the worker (``agent_worker.Worker``)."""

    config: Config
    agent_cfg: AgentConfig
    name: str
    agent_id: str
    host: str
    town: Town
    store: WorkerStore
    logs: TaskLogs
    leash: orphan_cli.WorkerLeash
    base_env: dict[str, str]  # what every task's CLI gets besides its task id and attempt
    with_redis: Callable[..., object]  # a tinytown.worker.retry.RedisRetry
    stopping: str  # read: why the worker is draining ("" while it is not)
    cancelled_task: str  # read: set by the heartbeat or control thread on a cancel
    task_lost: str  # read: set with cancelled_task when the task's entry went to another run
    proc: subprocess.Popen | None  # set: the running CLI, whose group a second signal kills
    cost_per_hour: float  # its outpost's rate: what a second of a task's CLI costs × 3600

    def log(self, event: str, **fields) -> None: ...

    def set_state(self, move: str, **fields) -> None: ...


class TaskRunner(AttemptEnd):
    def __init__(self, worker: WorkerState):
        self.worker = worker
        self.output: OutputStream | None = None  # the running (or last) attempt's output stream
        self.finishing: OutputStream | None = None  # an output to mark finished (final state)
        self.token: str | None = None  # the ended attempt's, revoked with its final write
        self.round_ended: tuple[str, str] | None = None  # the agent's move, if ended with it
        self.secret: str | None = None  # the next task token's secret, made ahead
        self.cli_env: dict[str, dict[str, str]] = {}  # per CLI: the env every task of it gets
        self.env_base: dict[str, str] | None = None  # the worker's base_env cli_env was made of

    def run(self, task: Task, entry: Entry, inbox: Inbox) -> tuple[Outcome, Workspace | None]:
        """Prepare the workspace (if the task has a repo) and run the coding CLI in it."""
        w = self.worker
        ws, self.token, self.finishing, self.output = None, None, None, None
        self.round_ended = None
        cli, problem = self.cli_for(task)
        if cli is None:
            w.log("task_rejected", task=task.id, attempt=task.attempts, reason=problem)
            return Outcome(error=problem, rejected=True), None
        if task.repo:
            self.log_task_started(task, entry)
            w.set_state("work", current_task=task.id, last_active_at=to_rfc3339(now()))
            try:
                root = w.config.path(w.agent_cfg.workspace_dir)
                ws = workspace.open_workspace(root, task, w.config.root)
                w.log(
                    "workspace_ready",
                    task=task.id,
                    path=ws.path,
                    branch=ws.branch,
                    continued=ws.continued,
                )
                branch = {"branch": ws.branch}
                record = w.town.tasks.transition
                w.with_redis(
                    "record_branch",
                    record,
                    task.id,
                    "record",
                    assignee=w.agent_id,
                    set_fields=branch,
                )
            except TinytownError as err:
                return Outcome(error=f"workspace: {err}"), None
        return self.run_cli(task, entry, inbox, ws, cli), ws

    def cli_for(self, task: Task) -> tuple[AgentCli | None, str]:
        """The CLI to run ``task`` with, or None and why the task cannot run here: a CLI this
        town does not configure (the config changed, or it was stored before the rule), one whose
        program is not on this worker's PATH, or a repository or branch that breaks the rules
        townhall applies at submit. Such a task fails at once with the reason; it never stops
        the worker."""
        try:
            cli = self.worker.config.cli(task.cli)
            if task.repo:
                inputs.repo(task.repo, "repo")
            if task.base_branch:
                inputs.branch(task.base_branch, "base_branch")
        except (UnknownCli, inputs.InputError) as err:
            return None, f"the task as stored cannot run: {inputs.printable(str(err))}"
        path = cli.env.get("PATH", self.worker.base_env.get("PATH"))
        if program := cli_process.missing_program(cli.command, path):
            return None, cli_process.not_installed(cli.name, program)
        return cli, ""

    def log_task_started(self, task: Task, entry: Entry) -> None:
        """``task_started``: before the workspace of a task with a repository is prepared, else
        right after the CLI starts (a log write kept off the way to its start)."""
        self.worker.log(
            "task_started",
            task=task.id,
            attempt=task.attempts,
            source="agent" if entry.directed else "docket",
            reclaimed_from=entry.reclaimed_from,
        )

    def prepare_next_log(self) -> None:
        """The next task's log file and token secret, made while this one's CLI starts (the
        worker's loop makes the file before each read too, a no-op once it is ready)."""
        self.worker.logs.prepare(self.log_header(1))
        self.secret = self.secret or new_secret()

    def log_header(self, attempt: int) -> str:
        """The first line of an attempt's output in the task's log file."""
        return f"=== attempt {attempt} by {self.worker.name} ({self.worker.agent_id})\n"

    def prompt_bytes(self, task: Task, inbox: Inbox, cwd: Path, ws: Workspace | None) -> bytes:
        """The prompt as UTF-8. Text that cannot be encoded (a lone surrogate in a message stored
        before townhall refused them) is replaced with U+FFFD and logged, never fatal."""
        w = self.worker
        text = build_prompt(
            task,
            agent_name=w.name,
            town_name=w.config.name,
            townhall_url=w.base_env["TINYTOWN_URL"],
            messages=inbox.messages,
            workdir=str(cwd),
            branch=ws.branch if ws else "",
        )
        clean = inputs.printable(text)
        if clean != text:
            detail = "text that is not valid Unicode was replaced with U+FFFD"
            self.worker.log("prompt_text_replaced", task=task.id, detail=detail)
        return clean.encode()

    def run_cli(
        self, task: Task, entry: Entry, inbox: Inbox, ws: Workspace | None, cli: AgentCli
    ) -> Outcome:
        """Run ``cli`` as its own process group, prompt on stdin, output to the task's log file.

        Only what the process needs in order to exist comes before it; the prompt (on stdin) is
        made and written after, and the task's ``started_at``, the agent's ``working`` state and
        the inbox clean-up go in one round trip right after the process exists.
        """
        w = self.worker
        cwd = ws.path if ws else w.config.root
        if cli.workdir:
            cwd = Path(cli.workdir) if Path(cli.workdir).is_absolute() else cwd / cli.workdir
        command, prompt_path = cli.command, None
        if cli.name in INSTRUCTION_FILE_FLAG:  # e.g. auggie: the prompt in a file, not on stdin
            prompt_path = w.logs.folder / f"{task.id}.prompt.md"
            prompt_path.write_bytes(self.prompt_bytes(task, inbox, cwd, ws))
            command = f"{command} {INSTRUCTION_FILE_FLAG[cli.name]} {shlex.quote(str(prompt_path))}"
        # reports this attempt over REST; its hash is stored below. Its secret was made ahead.
        token, self.secret = new_token(task.id, self.secret), None
        if self.env_base is not w.base_env:  # (registered again: another agent id)
            self.cli_env, self.env_base = {}, w.base_env
        if (env := self.cli_env.get(cli.name)) is None:  # (the config is fixed: once per CLI)
            env = self.cli_env[cli.name] = {**w.base_env, **cli.env}
        # One dict per CLI, its task's three values set in place (Popen copies it at the start).
        env["TINYTOWN_TASK_ID"] = task.id
        env["TINYTOWN_TASK_ATTEMPT"] = str(task.attempts)
        env["TINYTOWN_TASK_TOKEN"] = token
        cancelled = w.cancelled_task == task.id
        if w.stopping or cancelled:  # told to leave, or cancelled, while the workspace was made
            if ws is None:
                self.log_task_started(task, entry)
            if cancelled:
                return Outcome(cancelled=True)
            return Outcome(left_unfinished=True, never_started=True)
        try:
            out = w.logs.open(task.id, task.attempts, self.log_header(task.attempts))
        except OSError as err:  # e.g. a full disk
            return Outcome(error=f"could not open the task log in {w.logs.folder}: {err}")
        leash = None
        try:
            try:
                started_at = to_rfc3339(now())  # the task's started_at: just before the CLI starts
                # Running the configured coding CLI is the worker's job: the command line comes
                # from tinytown.toml ([agent_clis]), written by the operator; the task's text
                # goes on stdin or in a file, never into the command line.
                proc = w.proc = subprocess.Popen(  # nosec B603 B607
                    ["sh", "-c", command],
                    executable=cli_process.shell(env),
                    cwd=cwd,
                    env=env,
                    stdin=subprocess.DEVNULL if prompt_path else subprocess.PIPE,
                    stdout=out.fd,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as err:
                return Outcome(error=f"could not start the coding CLI {cli.name!r} in {cwd}: {err}")
            finally:
                if (err := out.name()) is not None:  # named at close instead; by name from now on
                    w.log("task_log_unnamed", task=task.id, detail=str(err))
                    w.logs.close()
                if ws is None:
                    self.log_task_started(task, entry)
            leash = w.leash.attach(proc.pid, task.id)
            # Valid before the CLI reads its prompt; expires if this worker dies before revoking.
            tokens = w.store.tokens
            ttl_secs = w.agent_cfg.task_timeout_secs + defaults.TASK_TOKEN_GRACE_SECS
            issue = (token, ttl_secs)
            if not w.with_redis("cli_started", self.cli_started, task, started_at, inbox, issue):
                w.task_lost = w.cancelled_task = task.id  # (stopped at once, below)
            elif not prompt_path:  # on stdin, written once the process exists
                try:
                    data = self.prompt_bytes(task, inbox, cwd, ws)
                except BaseException:  # a bug: do not leave the CLI waiting on its stdin
                    cli_process.stop_group(proc)
                    raise
                cli_process.give_prompt(proc.stdin, data)
            w.log(
                "cli_started",
                task=task.id,
                started_at=started_at,
                cli=cli.name,
                pid=proc.pid,
                cwd=cwd,
                log=out.path,
                leash_pid=leash.proc.pid if leash else None,
            )
            self.output = OutputStream(
                w.town.output, task.id, out.fd, out.start, self.log_header(task.attempts), w.log
            )
            began = time.monotonic()
            outcome = self.wait_for_cli(task, proc)
            outcome.run_secs = time.monotonic() - began
            if outcome.left_unfinished:  # no final write follows: revoked now
                w.with_redis("task_token_revoke", tokens.revoke, task.id, token)
            else:
                self.token = token
            if not outcome.stopped and cli_process.group_alive(proc):
                # It left processes running (a background server, say): nothing of a task
                # outlives it, and its leash is about to let go.
                w.log("cli_leftovers_stopped", task=task.id, pgid=proc.pid)
                cli_process.stop_group(proc)
            w.proc = None
            if leash is not None:
                w.leash.release()
            outcome.tail = out.tail()
            # its last output sent before (with) the final state's write
            self.output.stop(defer=not outcome.left_unfinished)
        finally:  # (not released after an error: this worker is ending; the leash stops the CLI)
            out.close()
            if prompt_path:
                prompt_path.unlink(missing_ok=True)
        w.log(
            "cli_exited",
            task=task.id,
            exit_code=outcome.exit_code,
            timed_out=outcome.timed_out,
            handed_back=outcome.left_unfinished,
        )
        return outcome

    def cli_started(
        self, task: Task, started_at: str, inbox: Inbox, token: tuple[str, int]
    ) -> bool:
        """One round trip once the CLI runs: its task token (``(token, ttl secs)``) stored,
        ``started_at``, agent ``working``, messages taken. False if the task is no longer this
        agent's running one (taken while this worker could not run: it must not run here)."""
        w = self.worker
        status, old, recorded = w.store.cli_started(
            task.id,
            started_at,
            pgid=w.proc.pid,
            host=w.host,
            taken=inbox.raw,
            token=token,
            meanwhile=self.prepare_next_log,  # while Redis works: the next task's log file
        )
        if status == "ok" and old != AGENT["work"].target:
            w.log("agent_state", state=AGENT["work"].target, previous=old, reason="task")
        return recorded

    def wait_for_cli(self, task: Task, proc: subprocess.Popen) -> Outcome:
        """Wait for the CLI; stop its process group on the task timeout, a drain timeout or a
        cancel. A drain that begins meanwhile makes the agent ``draining``."""
        deadline = time.monotonic() + self.worker.agent_cfg.task_timeout_secs
        exit_watch = cli_process.ExitWatch(proc)  # wakes us the moment the CLI exits
        try:
            return self._wait(task, proc, exit_watch, deadline)
        finally:
            exit_watch.close()

    def _wait(self, task: Task, proc, exit_watch, deadline: float) -> Outcome:
        w, drain_deadline = self.worker, None
        while True:
            if exit_watch.wait(defaults.CLI_POLL_SECS):
                return Outcome(exit_code=proc.wait())
            if self.output is not None:  # it runs a while: its output goes out as it comes
                self.output.start()
            if w.cancelled_task == task.id:
                why = "task_taken_over" if w.task_lost == task.id else "task_cancelled"
                w.log("cli_stopping", task=task.id, pid=proc.pid, reason=why)
                return Outcome(exit_code=cli_process.stop_group(proc), cancelled=True)
            t = time.monotonic()
            if w.stopping and drain_deadline is None:
                drain_deadline = t + w.agent_cfg.drain_timeout_secs
                w.set_state("drain_task")
                drain_secs = w.agent_cfg.drain_timeout_secs
                w.log("draining", task=task.id, reason=w.stopping, drain_timeout_secs=drain_secs)
            if t >= deadline or (drain_deadline is not None and t >= drain_deadline):
                timed_out = t >= deadline
                reason = "task_timeout" if timed_out else "drain_timeout"
                w.log("cli_stopping", task=task.id, pid=proc.pid, reason=reason)
                code = cli_process.stop_group(proc)
                return Outcome(exit_code=code, timed_out=timed_out, left_unfinished=not timed_out)

    def stop_orphan_cli(self, holder: str, task_id: str) -> None:
        """Stop the CLI a dead holder left running on this host (``tinytown.worker.orphan_cli``)."""
        w = self.worker
        host, pgid = w.with_redis("orphan_lookup", w.store.cli_of, holder)
        if host != w.host or not (pgid or "").isdigit():
            return
        self._stop_group(int(pgid), holder, task_id)

    def stop_earlier_runs(self, task_id: str) -> None:
        """Before a retry: stop any earlier run of the task still going on this host (a frozen
        worker judged dead, whose task recovery gave back to the backlog)."""
        for pgid, holder in orphan_cli.earlier_runs(task_id).items():
            self._stop_group(pgid, holder, task_id)

    def _stop_group(self, pgid: int, holder: str, task_id: str) -> None:
        pids = orphan_cli.stop(pgid, holder, task_id, grace_secs=defaults.CLI_STOP_GRACE_SECS)
        if pids:
            pids = ",".join(map(str, pids))
            self.worker.log("orphan_cli_stopped", task=task_id, holder=holder, pgid=pgid, pids=pids)
