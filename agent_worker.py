#!/usr/bin/env python3
"""One Tinytown agent worker: take a task the moment it arrives, run a coding CLI on it, leave when idle.

    python agent_worker.py [--town DIR] [--redis-retry-secs N]

DELIVERY IS AT-LEAST-ONCE: A TASK MAY RUN MORE THAN ONCE. No task is lost — a docket entry is
acknowledged only after the task's final state is written, and entries held by a worker that
died are taken over by another once they have been idle for ``claim_timeout_secs`` and the
holder's heartbeat is stale. The price is that a task whose worker died (or was stopped past its
drain timeout) runs again from the start, on the same git branch when it has a repository. Write
tasks so that running them twice is harmless. Each run counts as an attempt; past
``max_attempts`` the task is marked failed with the reason and stays listed, never dropped.

The lifecycle, as agent states in Redis (functions below follow it top to bottom)::

    Starting ──▶ Idle ⇄ Working ──▶ Draining ──▶ Stopped

- Starting: register, or adopt the record named by ``TINYTOWN_AGENT_ID``; name from
  ``TINYTOWN_AGENT_NAME``, else the host name.
- Idle: one blocking ``XREADGROUP`` over the shared docket and the agent's own stream, with the
  claim sent right behind it: Redis takes the task (a guarded Lua transition: ``running``,
  attempts + 1) and reads the inbox the moment an entry arrives, in the same round trip. A
  heartbeat thread writes ``last_heartbeat`` every ``heartbeat_interval_secs``, in every state.
- Working: the coding CLI runs with the prompt on stdin, in the task's git workspace if it has
  a ``repo``. ``started_at`` is the moment just before the CLI starts.
  Exit 0 → completed (unless the CLI reported through ``tt task complete``/REST itself);
  non-zero or ``task_timeout_secs`` → retried, then failed.
- Draining → Stopped: after ``idle_timeout_secs`` with nothing to do (0 disables), on SIGTERM or
  SIGINT, on a ``shutdown`` inbox message (``tt send --kind shutdown``), or when the agent is
  stopped through REST (``POST /v1/agents/{agent}/kill``; an idle worker is nudged and leaves at
  once, a working one after its task).
  A running task gets ``drain_timeout_secs`` to finish; after that the CLI is stopped, work in
  progress is committed and pushed (tasks with a repository) and the entry is left for reclaim.
  A second signal exits at once.

Exit codes (``tinytown.core.errors.ExitStatus``):

    0    clean: idle timeout, drained after a signal, shutdown message, stop request
    1    an unexpected error (a bug; logged with its traceback); a held task is left for reclaim
    3    bad configuration (tinytown.toml, environment, agent id or name)
    4    Redis unreachable after --redis-retry-secs of retries (a restart within that is survived)
    (On 1 and 4 a CLI still running is stopped by its leash: see below.)
    130  a second SIGTERM/SIGINT: stopped at once, a held task is left for reclaim

Besides the main loop, three threads: the heartbeat (every ``heartbeat_interval_secs``, also
while the CLI runs), the control listener (``tinytown.store.control``: a cancel or REST stop acts at
once) and, per task, one waiting for the CLI to exit. The worker also keeps a leash
(``tinytown.worker.orphan_cli.Leash``), one small watchdog process that stops the running CLI's process
group if this worker dies, however it dies.

The coding CLI sees ``TINYTOWN_AGENT_ID``, ``TINYTOWN_AGENT_NAME``, ``TINYTOWN_TASK_ID``,
``TINYTOWN_TASK_ATTEMPT``, ``TINYTOWN_URL`` and ``TINYTOWN_TOWN_DIR``, plus its preset's ``env``.
Its output goes to ``.tt/logs/tasks/<task id>.log``; the last 4 KiB become the task's result.
Logs: one ``key=value`` line per event on stderr, each with the agent id (and task id).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import redis

from tinytown.store import control
from tinytown.core import defaults, messages
from tinytown.worker import health_file, orphan_cli, workspace
from tinytown.core import inputs
from tinytown.core.clis import INSTRUCTION_FILE_FLAG, UnknownCli
from tinytown.config import Config, load_config
from tinytown.store.docket import Claim, Delivery, Docket, Entry
from tinytown.core.states import AGENT, AGENT_STOP_STATES, TASK, TASK_RUNNING
from tinytown.core.errors import ConfigError, ExitStatus, RedisUnavailable, TinytownError
from tinytown.core.prompt import build_prompt
from tinytown.core.records import Task
from tinytown.core.clock import now, to_rfc3339
from tinytown.recovery import recover_silent_workers, return_held_entries
from tinytown.store import Town
from tinytown.store.agents import Beat
from tinytown.store.worker import WorkerStore
from tinytown.worker.tasklog import TaskLogs

_QUOTE_CHARS = ' ="\n'


class RedisGone(Exception):
    """Redis stayed unreachable for longer than the retry budget."""


@dataclass
class Inbox:
    """The messages read with the claim: ``(list key, raw message)`` pairs, urgent ones first."""

    raw: list[tuple[str, str]]

    @property
    def messages(self) -> list[dict]:
        return [messages.decode(m) for _, m in self.raw]


@dataclass
class Outcome:
    """How one CLI run ended."""

    exit_code: int | None = None
    timed_out: bool = False
    handed_back: bool = False  # stopped by a drain timeout: the entry is left for reclaim
    cancelled: bool = False  # the task was cancelled (tt/REST) while it ran: its CLI was stopped
    error: str = ""  # the CLI could not be started, or its workspace could not be prepared
    rejected: bool = False  # the task as stored cannot run here (see Worker.unrunnable): failed, not retried
    tail: str = ""

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and not (self.timed_out or self.handed_back or self.cancelled or self.error)

    def reason(self, config: Config) -> str:
        if self.error:
            return self.error
        if self.cancelled:
            return "cancelled while it ran; its process group was stopped"
        if self.timed_out:
            return f"timed out after {config.agent.task_timeout_secs} s (task_timeout_secs); its process group was stopped"
        return f"the coding CLI exited with code {self.exit_code}"


def log(event: str, **fields) -> None:
    """One structured line per event: ``ts=… event=… key=value …`` (values with spaces quoted)."""
    parts = [f"ts={to_rfc3339(now())}", f"event={event}"]
    for key, value in fields.items():
        if value is None or value == "":
            continue
        text = str(value)
        plain = text and not any(c in text for c in _QUOTE_CHARS)
        parts.append(f"{key}={text if plain else json.dumps(text)}")
    # One write(2) per line: safe inside a signal handler, and threads never interleave lines.
    os.write(sys.stderr.fileno(), (" ".join(parts) + "\n").encode("utf-8", errors="replace"))


class Worker:
    def __init__(self, config: Config, *, redis_retry_secs: float = defaults.REDIS_RETRY_SECS):
        self.config = config
        self.agent_cfg = config.agent
        self.redis_retry_secs = redis_retry_secs
        self.host = socket.gethostname()
        self.name = os.environ.get("TINYTOWN_AGENT_NAME") or self.host
        self.agent_id = os.environ.get("TINYTOWN_AGENT_ID", "").strip().lower() or None
        self.town: Town | None = None
        self.docket: Docket | None = None
        self.stopping: str = ""  # why the worker is draining ("" while it is not)
        self.paused = False  # set by an operator (tt/REST interrupt): take no new work
        self.signals = 0
        self.idle_since = time.monotonic()
        self.held: Entry | None = None  # the entry whose task is running; kept fresh by heartbeats
        self.cancelled_task = ""  # set by the heartbeat thread when the running task is cancelled
        self.proc: subprocess.Popen | None = None
        self.logs = TaskLogs(config.path(defaults.TASK_LOG_DIR))
        self.leash: orphan_cli.Leash | None = None  # stops the running CLI if this worker dies
        self.wake = threading.Event()
        self.finished = threading.Event()
        self.last_controls = self.last_sweep = self.last_forget = 0.0
        self.controls_due = threading.Event()  # set by a stop nudge or a signal: check the controls now
        self.health_file = health_file.HealthFile.from_env(self.agent_cfg.heartbeat_interval_secs, on_error=lambda **f: self.log("health_file_failed", **f))

    def log(self, event: str, **fields) -> None:
        log(event, agent=self.agent_id, name=self.name, **fields)

    # == lifecycle ==============================================================================

    def run(self) -> int:
        """Start, serve until told or idle, stop. Returns the process exit code."""
        try:
            self.connect()
            self.register()
            self.install_signal_handlers()
            threading.Thread(target=self.heartbeat_loop, name="heartbeat", daemon=True).start()
            threading.Thread(target=self.control_loop, name="control", daemon=True).start()
            reason = self.serve()
            self.stop(reason)
            self.log("exit", reason=reason, code=0)
            return int(ExitStatus.SUCCESS)
        except RedisGone as err:
            self.stop_cli_on_exit()
            self.log("exit", reason="redis_unreachable", code=int(ExitStatus.REDIS_UNAVAILABLE), detail=str(err))
            return int(ExitStatus.REDIS_UNAVAILABLE)
        except TinytownError as err:  # a reserved name or a bad TINYTOWN_AGENT_ID
            self.log("exit", reason="bad_config", code=int(ExitStatus.CONFIG_ERROR), detail=str(err))
            return int(ExitStatus.CONFIG_ERROR)
        except Exception as err:  # a bug: say so in one line, then the traceback; a held entry stays for reclaim
            self.stop_cli_on_exit()
            self.log("exit", reason="unexpected_error", code=int(ExitStatus.FAILURE), detail=repr(err),
                     task=self.held.task_id if self.held else None)  # fmt: skip
            traceback.print_exc()
            return int(ExitStatus.FAILURE)
        finally:
            self.logs.close()
            if self.leash is not None:
                self.leash.close()  # (a CLI still running, after an error, is stopped by it)
            self.finished.set()
            self.wake.set()

    def stop_cli_on_exit(self) -> None:
        """Leaving on an error with a CLI running: SIGTERM its group now (the leash, if there is
        one, would too, and follows up with SIGKILL); its task stays held for reclaim."""
        if self.proc is not None and self.proc.poll() is None:
            _kill_group(self.proc, signal.SIGTERM)

    # -- Starting ---------------------------------------------------------------------------

    def connect(self) -> None:
        """Connect (starting the town's own Redis if it is ours), retrying with backoff."""
        self.town = self.with_redis("connect", self._connect_once)

    def _connect_once(self) -> Town:
        try:
            return Town.connect(self.config)
        except RedisUnavailable as err:  # refused credentials or a too-old server: retrying may help (restart)
            raise redis.ConnectionError(str(err)) from None

    def register(self) -> None:
        cli = self.config.cli().name
        agent = self.with_redis("register", self.town.agents.register, self.name, cli, agent_id=self.agent_id)
        self.agent_id = agent.id
        if self.docket is None:  # (registering again after the record vanished keeps the reader)
            self.docket = self.town.docket(agent.id)
        self.store = WorkerStore(self.town, agent.id, self.agent_cfg.heartbeat_interval_secs)
        self.with_redis("ensure_groups", self.docket.ensure_groups)
        self.inbox_keys = (self.town.keys.urgent(agent.id), self.town.keys.inbox(agent.id))  # urgent first
        # Computed once: what every task's CLI gets besides its task id and attempt.
        self.base_env = {**os.environ, "TINYTOWN_AGENT_ID": agent.id, "TINYTOWN_AGENT_NAME": self.name,
                         "TINYTOWN_URL": self.townhall_url(), "TINYTOWN_TOWN_DIR": str(self.config.root)}  # fmt: skip
        self.log("agent_state", state="starting", cli=cli, town=self.config.name, adopted=bool(os.environ.get("TINYTOWN_AGENT_ID")))

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)

    def on_signal(self, signum: int, _frame) -> None:
        self.signals += 1
        name = signal.Signals(signum).name
        if self.signals > 1:  # second signal: out now; a held entry stays for reclaim
            if self.proc is not None and self.proc.poll() is None:
                _kill_group(self.proc, signal.SIGKILL)
            log("exit", agent=self.agent_id, name=self.name, reason="second_signal", signal=name,
                code=int(ExitStatus.INTERRUPTED), task=self.held.task_id if self.held else None)  # fmt: skip
            os._exit(int(ExitStatus.INTERRUPTED))
        self.stopping = self.stopping or f"signal_{name.lower()}"
        log("drain_requested", agent=self.agent_id, name=self.name, signal=name)
        self.wake.set()  # the heartbeat thread unblocks the read (no Redis calls in a handler)
        self.controls_due.set()  # and a paused worker stops waiting

    # -- Idle ⇄ Working ---------------------------------------------------------------------

    def serve(self) -> str:
        """Take tasks until a stop reason comes up; returns that reason."""
        self.with_redis("resume", self.resume_held_entries)
        self.start_leash()
        self.set_state("ready")
        while True:
            reason = self.stopping or self.due_checks()
            if reason:
                return reason
            if self.paused:  # until the next control check, or sooner when a signal or nudge asks
                self.controls_due.wait(self.agent_cfg.heartbeat_interval_secs)
                continue
            self.logs.prepare(self.log_header(1))  # the next task's log file, made while idle
            delivery = self.next_delivery()
            if delivery is not None and delivery.refused:  # stopped or paused from outside: look now
                self.log("delivery_refused", agent_state=delivery.refused)
                self.last_controls = 0.0
                continue
            for entry, why in delivery.skipped if delivery else ():
                self.log("entry_skipped", task=entry.task_id, entry=entry.entry_id, reason=why)
            if delivery is not None and delivery.entry is not None:
                if self.stopping:  # the signal raced the read
                    self.give_back(delivery)
                else:
                    self.work_on(delivery.entry, delivery.claim)
                continue
            if self.agent_cfg.idle_timeout_secs and time.monotonic() - self.idle_since >= self.agent_cfg.idle_timeout_secs:
                self.log("idle_timeout", idle_secs=self.agent_cfg.idle_timeout_secs)
                return "idle_timeout"

    def due_checks(self) -> str:
        """Every heartbeat interval, between reads: control messages, then dead workers' entries."""
        t = time.monotonic()
        interval = self.agent_cfg.heartbeat_interval_secs
        if self.controls_due.is_set() or t - self.last_controls >= interval:
            self.controls_due.clear()
            self.last_controls = t
            reason = self.with_redis("controls", self.check_controls)
            if reason:
                return reason
        if t - self.last_sweep >= interval and not self.paused:
            self.last_sweep = t
            entry = self.with_redis("reclaim", self.docket.reclaim_one)
            if entry is not None:
                self.log("entry_reclaimed", task=entry.task_id, entry=entry.entry_id, holder=entry.reclaimed_from)
                self.last_sweep = 0.0  # look for more right after this one
                self.work_on(entry)
        if t - self.last_forget >= self.agent_cfg.claim_timeout_secs:
            self.last_forget = t
            returned = self.with_redis("recover", recover_silent_workers, self.town)
            if returned:
                self.log("directed_tasks_returned", count=returned)
            for consumer in self.with_redis("forget", self.docket.forget_dead_consumers):
                self.log("consumer_removed", consumer=consumer)
        return ""

    def check_controls(self) -> str:
        """Stop flag, external state changes (kill, close, pause) and ``shutdown`` messages."""
        controls = self.store.controls()
        state = controls.state
        if controls.stop_requested:
            self.store.clear_stop()
            return "stop_requested"
        if state is None:  # the record was deleted (or Redis came back empty): register again
            self.log("agent_record_missing")
            self.register()
            self.set_state("ready")
        elif state in AGENT_STOP_STATES:
            return "stop_requested"
        was_paused, self.paused = self.paused, state == "paused"
        if self.paused and not was_paused:
            self.log("agent_paused")
        if was_paused and not self.paused:
            self.log("agent_resumed", state=state)
            self.idle_since = time.monotonic()
        for list_key, raw in controls.messages:
            if messages.decode(raw).get("type") == "shutdown":
                self.town.inbox.remove(list_key, raw)
                return "shutdown_message"
        return ""

    def next_delivery(self) -> Delivery | None:
        """Block on the docket until an entry arrives (its task taken with the read), the
        heartbeat interval passes, or a signal."""
        block_secs = self.agent_cfg.heartbeat_interval_secs
        if self.agent_cfg.idle_timeout_secs:
            left = self.agent_cfg.idle_timeout_secs - (time.monotonic() - self.idle_since)
            block_secs = max(0.001, min(block_secs, left))
        try:
            return self.docket.read(int(block_secs * 1000))
        except (redis.ConnectionError, redis.TimeoutError) as err:  # held entries, if any, are resumed
            self.wait_for_redis("read", err)
            self.with_redis("resume", self.resume_held_entries, lost_reply=True)
        except redis.ResponseError as err:
            # NOGROUP: Redis came back empty; UNBLOCKED: a stream was deleted under the read.
            if "NOGROUP" not in str(err) and "UNBLOCKED" not in str(err):
                raise
            self.log("docket_group_missing", detail=str(err))
            self.with_redis("ensure_groups", self.docket.ensure_groups)
            self.last_controls = 0.0  # and check the agent record at once
        return None

    def resume_held_entries(self, *, lost_reply: bool = False) -> None:
        """Entries this agent id received and never acknowledged.

        At start they are a previous run's (a restart): their tasks are taken again as a new
        attempt. After a connection error (``lost_reply``), one is the read's whose reply was
        lost after its claim was made: that task never ran, so it runs now as the same attempt.
        """
        for entry in self.docket.held_by_me():
            if self.held is not None and entry.entry_id == self.held.entry_id:
                continue
            claim = None
            if lost_reply:
                task = self.town.tasks.find(entry.task_id)
                if task is not None and task.state == TASK_RUNNING and task.assigned_to == self.agent_id:
                    claim = Claim(task)
            self.log("entry_resumed", task=entry.task_id, entry=entry.entry_id, lost_reply=lost_reply or None)
            self.work_on(entry, claim)

    # -- Working ----------------------------------------------------------------------------

    def work_on(self, entry: Entry, claim: Claim | None = None) -> None:
        """Take the entry's task (unless the read took it), run the CLI on it, write the final
        state, then acknowledge."""
        # A held or taken-over entry whose holder's CLI may still run here (not a lost reply's).
        orphan_holder = entry.reclaimed_from if claim is None else ""
        claim = claim or self.take(entry)
        task = claim.task
        if task is None:
            self.with_redis("ack", self.docket.ack, entry)
            self.log("entry_skipped", task=entry.task_id, entry=entry.entry_id, reason=claim.reason)
            return
        self.held = entry
        if orphan_holder:  # its holder died: a CLI it left running here must stop first
            self.stop_orphan_cli(orphan_holder, task.id)
        # The inbox was read with the claim; the messages leave it once the CLI has them.
        inbox = Inbox([(key, raw) for key, raws in zip(self.inbox_keys, claim.peeked) for raw in raws])
        if any(m.get("type") == "shutdown" for m in inbox.messages):
            self.stopping = self.stopping or "shutdown_message"
        outcome, ws = self.run_task(task, entry, inbox)
        if outcome.handed_back:
            self.hand_back(task, ws)
            return
        fields = self.close_workspace(task, ws, outcome)
        self.finish(entry, task, outcome, fields)

    def take(self, entry: Entry) -> Claim:
        """The atomic claim; after a lost reply, the task record says whether it happened."""
        try:
            return self.docket.claim(entry)
        except (redis.ConnectionError, redis.TimeoutError) as err:
            self.wait_for_redis("claim", err)
            task = self.with_redis("claim_check", self.town.tasks.find, entry.task_id)
            if task is not None and task.state == TASK_RUNNING and task.assigned_to == self.agent_id:
                return Claim(task)
            return self.with_redis("claim", self.docket.claim, entry)

    def stop_orphan_cli(self, holder: str, task_id: str) -> None:
        """Stop the CLI a dead holder left running on this host (``tinytown.worker.orphan_cli``)."""
        host, pgid = self.with_redis("orphan_lookup", self.store.cli_of, holder)
        if host != self.host or not (pgid or "").isdigit():
            return
        pids = orphan_cli.stop(int(pgid), holder, task_id, grace_secs=defaults.CLI_STOP_GRACE_SECS)
        if pids:
            self.log("orphan_cli_stopped", task=task_id, holder=holder, pgid=pgid, pids=",".join(map(str, pids)))

    def give_back(self, delivery: Delivery) -> None:
        """A task the read took just as the worker was told to stop: back to the backlog at once,
        the attempt not counted, the entry acknowledged."""
        task = delivery.claim.task
        self.with_redis("give_back", self.town.tasks.requeue, task.id, move="give_back", assignee=self.agent_id,
                        attempts=task.attempts - 1)  # fmt: skip
        self.with_redis("ack", self.docket.ack, delivery.entry)
        self.log("task_given_back", task=task.id, entry=delivery.entry.entry_id, reason=self.stopping)

    def log_task_started(self, task: Task, entry: Entry) -> None:
        """``task_started``: before the workspace of a task with a repository is prepared, else
        right after the CLI starts (a log write kept off the way to its start)."""
        self.log("task_started", task=task.id, attempt=task.attempts, source="agent" if entry.directed else "docket",
                 reclaimed_from=entry.reclaimed_from)  # fmt: skip

    def run_task(self, task: Task, entry: Entry, inbox: Inbox) -> tuple[Outcome, workspace.Workspace | None]:
        """Prepare the workspace (if the task has a repo) and run the coding CLI in it."""
        ws = None
        if problem := self.unrunnable(task):
            self.log("task_rejected", task=task.id, attempt=task.attempts, reason=problem)
            return Outcome(error=problem, rejected=True), None
        if task.repo:
            self.log_task_started(task, entry)
            self.set_state("work", current_task=task.id,
                           last_active_at=to_rfc3339(now()))  # fmt: skip
            try:
                ws = workspace.open_workspace(self.config.path(self.agent_cfg.workspace_dir), task, self.config.root)
                self.log("workspace_ready", task=task.id, path=ws.path, branch=ws.branch, continued=ws.continued)
                self.with_redis("record_branch", self.town.tasks.transition, task.id, "record",
                                assignee=self.agent_id, set_fields={"branch": ws.branch})  # fmt: skip
            except TinytownError as err:
                return Outcome(error=f"workspace: {err}"), None
        return self.run_cli(task, entry, inbox, ws), ws

    def unrunnable(self, task: Task) -> str:
        """Why a task as stored cannot run here ("" if it can): a CLI this town does not configure
        (the config changed, or it was stored before the rule), or a repository or branch that
        breaks the rules townhall applies at submit. Such a task fails at once with the reason;
        it never stops the worker."""
        try:
            self.config.cli(task.cli)
            if task.repo:
                inputs.repo(task.repo, "repo")
            if task.base_branch:
                inputs.branch(task.base_branch, "base_branch")
        except (UnknownCli, inputs.InputError) as err:
            return f"the task as stored cannot run: {inputs.printable(str(err))}"
        return ""

    def prompt_bytes(self, make_prompt, task: Task) -> bytes:
        """The prompt as UTF-8. Text that cannot be encoded (a lone surrogate in a message stored
        before townhall refused them) is replaced with U+FFFD and logged, never fatal."""
        text = make_prompt()
        clean = inputs.printable(text)
        if clean != text:
            self.log("prompt_text_replaced", task=task.id, detail="text that is not valid Unicode was replaced with U+FFFD")
        return clean.encode()

    def run_cli(self, task: Task, entry: Entry, inbox: Inbox, ws: workspace.Workspace | None) -> Outcome:
        """Run the CLI as its own process group, prompt on stdin, output to the task's log file.

        Only what the process needs in order to exist comes before it; the prompt (on stdin) is
        written after, and the task's ``started_at``, the agent's ``working`` state and the inbox
        clean-up go in one round trip right after the process exists.
        """
        cli = self.config.cli(task.cli)
        cwd = ws.path if ws else self.config.root
        if cli.workdir:
            cwd = Path(cli.workdir) if Path(cli.workdir).is_absolute() else cwd / cli.workdir
        make_prompt = functools.partial(
            build_prompt, task, agent_name=self.name, town_name=self.config.name,
            townhall_url=self.base_env["TINYTOWN_URL"], messages=inbox.messages, workdir=str(cwd),
            branch=ws.branch if ws else "",
        )  # fmt: skip
        command, prompt_path = cli.command, None
        if cli.name in INSTRUCTION_FILE_FLAG:  # e.g. auggie: the prompt in a file, not on stdin
            prompt_path = self.logs.folder / f"{task.id}.prompt.md"
            prompt_path.write_bytes(self.prompt_bytes(make_prompt, task))
            command = f"{command} {INSTRUCTION_FILE_FLAG[cli.name]} {shlex.quote(str(prompt_path))}"
        env = {**self.base_env, **cli.env, "TINYTOWN_TASK_ID": task.id, "TINYTOWN_TASK_ATTEMPT": str(task.attempts)}
        cancelled = self.cancelled_task == task.id
        if self.stopping or cancelled:  # told to leave, or cancelled, while the workspace was prepared
            if ws is None:
                self.log_task_started(task, entry)
            return Outcome(cancelled=True) if cancelled else Outcome(handed_back=True)
        try:
            out = self.logs.open(task.id, task.attempts, self.log_header(task.attempts))
        except OSError as err:  # e.g. a full disk
            return Outcome(error=f"could not open the task log in {self.logs.folder}: {err}")
        leash = None
        try:
            try:
                started_at = to_rfc3339(now())  # the task's started_at: just before the CLI starts
                self.proc = subprocess.Popen(["sh", "-c", command], cwd=cwd, env=env,
                                             stdin=subprocess.DEVNULL if prompt_path else subprocess.PIPE,
                                             stdout=out.fd, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
            except OSError as err:
                return Outcome(error=f"could not start the coding CLI {cli.name!r} in {cwd}: {err}")
            finally:
                if (err := out.name()) is not None:  # named at close instead; open logs by name from now on
                    self.log("task_log_unnamed", task=task.id, detail=str(err))
                    self.logs.close()
                if ws is None:
                    self.log_task_started(task, entry)
            leash = self.leash_cli(task)
            if not prompt_path:  # on stdin, written once the process exists
                try:
                    data = self.prompt_bytes(make_prompt, task)
                except BaseException:  # a bug: do not leave the CLI waiting on its stdin
                    _stop_group(self.proc)
                    raise
                threading.Thread(target=_feed, args=(self.proc.stdin, data), name="prompt", daemon=True).start()
            self.with_redis("cli_started", self.cli_started, task, started_at, inbox)
            self.log("cli_started", task=task.id, started_at=started_at, cli=cli.name, pid=self.proc.pid,
                     cwd=cwd, log=out.path, leash_pid=leash.proc.pid if leash else None)  # fmt: skip
            outcome = self.wait_for_cli(task)
            if not (outcome.timed_out or outcome.handed_back or outcome.cancelled):  # (else stopped already)
                self.stop_leftovers(task)
            self.proc = None
            if leash is not None:
                with contextlib.suppress(OSError):  # a leash that died is replaced at the next start
                    leash.release()
            outcome.tail = out.tail()
        finally:  # (not released after an error: this worker is ending, and the leash stops the CLI)
            out.close()
            if prompt_path:
                prompt_path.unlink(missing_ok=True)
        self.log("cli_exited", task=task.id, exit_code=outcome.exit_code, timed_out=outcome.timed_out,
                 handed_back=outcome.handed_back)  # fmt: skip
        return outcome

    def start_leash(self, task_id: str | None = None) -> orphan_cli.Leash | None:
        """The worker's one leash (``tinytown.worker.orphan_cli``), started once, off any task's path;
        None, logged, if it cannot be."""
        if self.leash is None:
            try:
                self.leash = orphan_cli.Leash(grace_secs=defaults.CLI_STOP_GRACE_SECS)
            except OSError as err:
                self.log("cli_leash_failed", task=task_id, detail=str(err))
        return self.leash

    def leash_cli(self, task: Task) -> orphan_cli.Leash | None:
        """Put the leash on the CLI just started: it stops the CLI's group if this worker dies
        while it runs. A leash that died is replaced once; None, logged, if that fails too."""
        for attempt in (1, 2):
            leash = self.start_leash(task.id)
            if leash is None:
                return None
            try:
                leash.attach(self.proc.pid)
                return leash
            except OSError as err:  # it died (EPIPE)
                leash.close()
                self.leash = None
                self.log("cli_leash_replaced" if attempt == 1 else "cli_leash_failed", task=task.id, detail=str(err))
        return None

    def stop_leftovers(self, task: Task) -> None:
        """Stop what the CLI left running in its process group when it exited (a background
        server, say): nothing of a task outlives it, and its leash is about to let go."""
        try:
            os.killpg(self.proc.pid, 0)
        except (ProcessLookupError, PermissionError):
            return
        self.log("cli_leftovers_stopped", task=task.id, pgid=self.proc.pid)
        _stop_group(self.proc)

    def log_header(self, attempt: int) -> str:
        """The first line of an attempt's output in the task's log file."""
        return f"=== attempt {attempt} by {self.name} ({self.agent_id})\n"

    def cli_started(self, task: Task, started_at: str, inbox: Inbox) -> None:
        """One round trip once the CLI runs: ``started_at``, agent ``working``, messages taken."""
        status, old = self.store.cli_started(task.id, started_at, pgid=self.proc.pid, host=self.host, taken=inbox.raw)
        if status == "ok" and old != AGENT["work"].target:
            self.log("agent_state", state=AGENT["work"].target, previous=old, reason="task")

    def wait_for_cli(self, task: Task) -> Outcome:
        """Wait for the CLI; stop its process group on the task timeout or a drain timeout."""
        deadline = time.monotonic() + self.agent_cfg.task_timeout_secs
        drain_deadline = None
        exited = threading.Event()  # a blocking wait in a thread wakes us the moment the CLI exits
        threading.Thread(target=lambda p=self.proc: (p.wait(), exited.set()), name="cli-wait", daemon=True).start()
        while True:
            if exited.wait(defaults.CLI_POLL_SECS):
                return Outcome(exit_code=self.proc.wait())
            if self.cancelled_task == task.id:
                self.log("cli_stopping", task=task.id, pid=self.proc.pid, reason="task_cancelled")
                return Outcome(exit_code=_stop_group(self.proc), cancelled=True)
            t = time.monotonic()
            if self.stopping and drain_deadline is None:
                drain_deadline = t + self.agent_cfg.drain_timeout_secs
                self.set_state("drain_task")
                self.log("draining", task=task.id, reason=self.stopping, drain_timeout_secs=self.agent_cfg.drain_timeout_secs)
            if t >= deadline or (drain_deadline is not None and t >= drain_deadline):
                timed_out = t >= deadline
                self.log("cli_stopping", task=task.id, pid=self.proc.pid, reason="task_timeout" if timed_out else "drain_timeout")
                code = _stop_group(self.proc)
                return Outcome(exit_code=code, timed_out=timed_out, handed_back=not timed_out)

    def close_workspace(self, task: Task, ws: workspace.Workspace | None, outcome: Outcome) -> dict[str, str]:
        """Commit what the CLI left (push when asked); the fields to record on the task."""
        if ws is None:
            return {}
        try:
            head = workspace.finish(ws, task, agent_name=self.name, push=task.push)
            self.log("workspace_committed", task=task.id, branch=ws.branch, commit=head, pushed=task.push)
            return {"branch": ws.branch, "commit": head}
        except TinytownError as err:
            outcome.error = outcome.error or f"workspace: {err}"
            self.log("workspace_failed", task=task.id, detail=str(err))
            return {"branch": ws.branch}
        finally:
            ws.close()

    def finish(self, entry: Entry, task: Task, outcome: Outcome, fields: dict[str, str]) -> None:
        """Write the task's final state for this attempt, then (only then) acknowledge the entry."""
        tasks, me = self.town.tasks, self.agent_id
        stamp = {"completed_at": to_rfc3339(now()), **fields}
        if outcome.succeeded:
            result = self.with_redis("complete", tasks.transition, task.id, "complete", expect=TASK_RUNNING,
                                     assignee=me, set_fields={"result": outcome.tail, **stamp})  # fmt: skip
            final = "completed"
        elif outcome.rejected or task.attempts >= self.agent_cfg.max_attempts:
            reason = outcome.error if outcome.rejected else (
                f"failed after {task.attempts} attempts (max_attempts = {self.agent_cfg.max_attempts}); "
                f"last attempt: {outcome.reason(self.config)}")  # fmt: skip
            result = self.with_redis("fail", tasks.transition, task.id, "fail", expect=TASK_RUNNING,
                                     assignee=me, set_fields={"result": f"{reason}\n{outcome.tail}".rstrip(), **stamp})  # fmt: skip
            final = "failed"
        else:
            result = self.with_redis("requeue", tasks.requeue, task.id, expect=TASK_RUNNING, assignee=me,
                                     to_agent=me if entry.directed else None)  # fmt: skip
            final = "retry"
        if not result.ok:  # the CLI reported through tt/REST, or the task was cancelled or taken over
            current = self.with_redis("reread", tasks.find, task.id)
            final = f"kept:{current.state if current else 'missing'}"
            if fields and current is not None and current.assigned_to == me:
                self.with_redis("record_commit", tasks.transition, task.id, "annotate", expect=current.state,
                                assignee=me, set_fields=fields)
        self.with_redis("ack", self.docket.ack, entry)
        self.held = None
        completed = final == "completed" or final == "kept:completed"
        self.after_task(completed)
        self.log("task_finished", task=task.id, attempt=task.attempts, outcome=final,
                 reason=None if outcome.succeeded else outcome.reason(self.config), **fields)  # fmt: skip

    def hand_back(self, task: Task, ws: workspace.Workspace | None) -> None:
        """Drain timeout: push work in progress, then hand the task back.

        A shared-docket entry stays held, for another worker to take over once it has been idle
        ``claim_timeout_secs``. An entry on this agent's own stream has no other reader, so its
        task goes back to the backlog at once (or is failed past ``max_attempts``).
        """
        if ws is not None:
            try:
                head = workspace.finish(ws, task, agent_name=self.name, push=True, wip=True)
                self.with_redis("record_wip", self.town.tasks.transition, task.id, "record",
                                assignee=self.agent_id, set_fields={"branch": ws.branch, "commit": head})  # fmt: skip
                self.log("wip_pushed", task=task.id, branch=ws.branch, commit=head)
            except TinytownError as err:
                self.log("wip_push_failed", task=task.id, detail=str(err))
            finally:
                ws.close()
        entry, to = self.held, "reclaim"
        if entry is not None and entry.directed:
            self.with_redis("hand_back", return_held_entries, self.town, entry.stream, self.agent_id)
            to = "backlog"
        self.log("task_handed_back", task=task.id, entry=entry.entry_id if entry else None,
                 attempt=task.attempts, reason="drain_timeout", to=to)  # fmt: skip
        self.held = None  # stop refreshing it: a shared entry becomes reclaimable after claim_timeout_secs

    def after_task(self, completed: bool) -> None:
        self.with_redis("counters", self.store.count_round, completed=completed)
        self.set_state("rest", delete=("current_task", "cli_pgid"), last_active_at=to_rfc3339(now()))
        self.idle_since = time.monotonic()

    # -- Draining → Stopped -----------------------------------------------------------------

    def stop(self, reason: str) -> None:
        """Idle → Draining → Stopped. A task handed back keeps ``current_task`` for ``tt recover``."""
        self.set_state("drain", reason=reason)
        self.set_state("stop", reason=reason, beat=True)
        self.finished.set()

    # == around the lifecycle ===================================================================

    def set_state(self, move: str, *, delete=(), reason: str | None = None, beat: bool = False, **fields: str) -> None:
        """Make an agent move of the state table (so a pause or kill from outside is not
        overwritten: the move names the states it leaves from); ``beat``: with a heartbeat."""
        state = AGENT[move].target
        result = self.with_redis(f"state_{state}", self.town.agents.update, self.agent_id, move, set_fields=fields,
                                 delete_fields=delete, beat=Beat(self.agent_cfg.heartbeat_interval_secs) if beat else None)  # fmt: skip
        if result.ok and result.old_state != state:
            self.log("agent_state", state=state, previous=result.old_state, reason=reason)

    def heartbeat_loop(self) -> None:
        """Every interval: ``last_heartbeat``, and keep the held entry fresh so it is not reclaimed."""
        failing = False
        while not self.finished.is_set():
            self.wake.wait(self.agent_cfg.heartbeat_interval_secs)
            self.wake.clear()
            if self.finished.is_set():
                return
            try:
                if self.stopping:
                    self.end_idle_read()
                self.beat(self.held)
                if failing:
                    self.log("heartbeat_resumed")
                failing = False
            except redis.RedisError as err:
                if not failing:
                    self.log("heartbeat_failed", detail=str(err))
                failing = True

    def control_loop(self) -> None:
        """Nudges on the agent's control channel (``tinytown.store.control``): act on them at once
        instead of at the next heartbeat, which still catches what a nudge missed."""
        listener, failing = None, False
        while not self.finished.is_set():
            try:
                if listener is None:
                    listener = self.store.listener()
                nudge = listener.next(timeout=defaults.CONTROL_POLL_SECS)
            except redis.RedisError as err:  # Redis away, or no channel access: try again later
                if not failing:
                    self.log("control_unavailable", detail=str(err))
                failing = True
                if listener is not None:
                    listener.close()
                listener = None
                self.finished.wait(defaults.CONTROL_POLL_SECS)
                continue
            failing = False
            if nudge is not None:
                self.on_nudge(*nudge)
        if listener is not None:
            listener.close()

    def on_nudge(self, kind: str, task_id: str) -> None:
        """``cancel`` of the running task: stop its CLI now; ``stop``: check the controls now."""
        held = self.held
        if kind == control.CANCEL and held is not None and held.task_id == task_id:
            self.cancelled_task = task_id  # wait_for_cli stops the CLI
        elif kind == control.STOP:
            self.controls_due.set()  # the main loop checks the controls on its next turn
            self.end_idle_read()

    def end_idle_read(self) -> None:
        """Make an idle worker's blocking read return now (CLIENT UNBLOCK), so the main loop acts
        on a signal or a stop nudge (both set ``controls_due``). The read may not have begun yet,
        and then there is nothing to unblock: keep trying, briefly, until the main loop has moved
        on (it took the request, took a task, or ended)."""
        for _ in range(defaults.CONTROL_UNBLOCK_TRIES):
            if not self.controls_due.is_set() or self.held is not None or self.finished.is_set():
                return
            with contextlib.suppress(redis.RedisError):
                if self.docket.end_read():
                    return
            time.sleep(defaults.CONTROL_UNBLOCK_PAUSE_SECS)

    def beat(self, held: Entry | None) -> None:
        """One round trip: ``last_heartbeat``; while a task runs, also keep its entry fresh and
        look whether it was cancelled."""
        found = self.store.beat(self.docket, held)
        self.health_file.beat()  # container-side evidence (TINYTOWN_HEALTH_FILE) for a Docker healthcheck
        if found is None:
            return
        still_held, task_state = found
        if not still_held:
            self.log("entry_lost", task=held.task_id, entry=held.entry_id)
        if task_state is None or task_state == TASK["cancel"].target:  # cancelled, or deleted
            self.cancelled_task = held.task_id  # wait_for_cli stops the CLI

    def with_redis(self, step: str, fn, *args, **kwargs):
        """Call ``fn``; while Redis is unreachable, retry with backoff until the retry budget ends.

        Draining without Redis waits no longer than ``drain_timeout_secs``. Raises RedisGone.
        """
        since, delay = None, defaults.REDIS_BACKOFF_FIRST_SECS
        while True:
            try:
                result = fn(*args, **kwargs)
            except (redis.ConnectionError, redis.TimeoutError) as err:
                if since is None:
                    since = time.monotonic()
                    self.log("redis_unavailable", step=step, detail=str(err), retry_secs=self.redis_retry_secs)
                budget = min(self.redis_retry_secs, self.agent_cfg.drain_timeout_secs) if self.stopping else self.redis_retry_secs
                if time.monotonic() - since >= budget:
                    raise RedisGone(f"no answer from Redis for {budget:.0f} s (last error: {err})") from None
                time.sleep(delay)
                delay = min(delay * 2, defaults.REDIS_BACKOFF_MAX_SECS)
                continue
            if since is not None:
                self.log("redis_reconnected", step=step, after_secs=round(time.monotonic() - since, 2))
            return result

    def wait_for_redis(self, step: str, err: Exception) -> None:
        """After ``err`` broke a call that must not simply be repeated: wait until PING answers."""
        self.log("redis_error", step=step, detail=str(err))
        self.with_redis(step, self.store.ping)

    def townhall_url(self) -> str:
        if os.environ.get("TINYTOWN_URL"):
            return os.environ["TINYTOWN_URL"]
        th = self.config.townhall
        host = "127.0.0.1" if th.bind in ("0.0.0.0", "::", "") else th.bind
        scheme = "https" if th.tls.enabled else "http"
        return f"{scheme}://{host}:{th.rest_port}"


def _kill_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stop_group(proc: subprocess.Popen) -> int | None:
    """SIGTERM the CLI's whole process group; SIGKILL what is left of it after the grace period.

    The group outlives ``sh`` (its leader), so wait for every member, not only the leader.
    """
    _kill_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + defaults.CLI_STOP_GRACE_SECS
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader so it does not count as a member
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    _kill_group(proc, signal.SIGKILL)
    return proc.wait()


def _feed(stdin, prompt: bytes) -> None:
    """Write the prompt to the CLI's stdin and close it (a CLI that never reads it is fine)."""
    try:
        stdin.write(prompt)
        stdin.close()
    except (BrokenPipeError, ValueError, OSError):
        pass


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="agent_worker.py",
        description="Run one Tinytown agent worker (at-least-once delivery; see the module docstring).",
        epilog="exit codes: 0 clean (idle exit included), 1 unexpected error, 3 bad configuration, 4 Redis unreachable "
        "after retries, 130 second signal",
    )  # fmt: skip
    parser.add_argument("--town", metavar="DIR", help="town directory (default: $TINYTOWN_TOWN_DIR, else .)")
    parser.add_argument("--redis-retry-secs", type=float, default=defaults.REDIS_RETRY_SECS, metavar="N",
                        help="exit with code 4 after Redis is unreachable this long (default: %(default)s)")  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load_config(args.town)
    except ConfigError as err:
        log("exit", reason="bad_config", code=int(ExitStatus.CONFIG_ERROR), detail=str(err))
        return int(ExitStatus.CONFIG_ERROR)
    return Worker(config, redis_retry_secs=args.redis_retry_secs).run()


if __name__ == "__main__":
    sys.exit(main())
