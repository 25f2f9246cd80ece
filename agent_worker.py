#!/usr/bin/env python3
"""One Tinytown agent worker: take each task the moment it arrives, run a coding CLI on it, leave
when idle.

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
  ``TINYTOWN_AGENT_NAME``, else the host name and a short suffix (``vm-3f9a``: random, or the
  adopted id's first hex digits). A name a live agent has is refused (exit 3).
- Idle: one blocking ``XREADGROUP`` over the shared docket and the agent's own stream, with the
  claim sent right behind it: Redis takes the task (a guarded Lua transition: ``running``,
  attempts + 1) and reads the inbox the moment an entry arrives, in the same round trip. A
  heartbeat thread writes ``last_heartbeat`` every ``idle_heartbeat_secs`` while idle and every
  ``heartbeat_interval_secs`` while working, and asks for a control check when it sees a change.
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

Besides the main loop: the heartbeat and control threads (``tinytown.worker.heartbeat``), and a
leash (``tinytown.worker.orphan_cli``), a watchdog that stops the running CLI's process group if
this worker dies, however it dies. A task's run is ``tinytown.worker.task_run``.

The coding CLI sees ``TINYTOWN_AGENT_ID``, ``TINYTOWN_AGENT_NAME``, ``TINYTOWN_TASK_ID``,
``TINYTOWN_TASK_ATTEMPT``, ``TINYTOWN_TASK_TOKEN`` (reports this attempt over REST, nothing else:
``tinytown.store.task_tokens``), ``TINYTOWN_URL`` and ``TINYTOWN_TOWN_DIR``, plus its preset's
``env``.
Its output goes to ``.tt/logs/tasks/<task id>.log``; the last 4 KiB become the task's result.
Logs: one ``key=value`` line per event on stderr, each with the agent id (and task id).
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback

import redis

from tinytown.config import Config, load_config
from tinytown.config.exposure import exposure
from tinytown.connection.target import require_town_to_join
from tinytown.core import defaults
from tinytown.core.cost import outpost_from_env
from tinytown.core.errors import ConfigError, ExitStatus, RedisUnavailable, TinytownError
from tinytown.core.liveness import Beat
from tinytown.core.logfmt import emit, line
from tinytown.core.records import Task
from tinytown.core.signal_safe import SignalSafeSetter
from tinytown.core.states import AGENT, TASK_RUNNING
from tinytown.store import Town
from tinytown.store.agents import NameTaken
from tinytown.store.docket import Claim, Delivery, Docket, Entry
from tinytown.store.worker import WorkerStore
from tinytown.worker import cli_process, hand_back, health_file, orphan_cli
from tinytown.worker.controls import Controls
from tinytown.worker.dead_workers import DeadWorkers
from tinytown.worker.heartbeat import Heartbeat
from tinytown.worker.outcome import Inbox, Outcome
from tinytown.worker.retry import RedisGone, RedisRetry
from tinytown.worker.task_run import TaskRunner
from tinytown.worker.tasklog import TaskLogs


def default_agent_name(host: str, agent_id: str | None = None) -> str:
    """The name without ``TINYTOWN_AGENT_NAME``: the host name and 4 hex digits (the adopted
    id's first, else random), so workers that come and go on one host never share a name."""
    digits = defaults.AGENT_NAME_SUFFIX_HEX
    suffix = agent_id.replace("-", "")[:digits] if agent_id else secrets.token_hex(digits // 2)
    return f"{host[: defaults.AGENT_NAME_MAX_CHARS - digits - 1]}-{suffix}"


def log(event: str, **fields) -> None:
    """One ``key=value`` line per event on stderr (``tinytown.core.logfmt``), in one write."""
    emit(line(event, **fields))


class Worker:
    def __init__(self, config: Config, *, redis_retry_secs: float = defaults.REDIS_RETRY_SECS):
        self.config = config
        self.agent_cfg = config.agent
        self.host = socket.gethostname()
        self.agent_id = os.environ.get("TINYTOWN_AGENT_ID", "").strip().lower() or None
        self.name = os.environ.get("TINYTOWN_AGENT_NAME") or default_agent_name(
            self.host, self.agent_id
        )
        self.town: Town | None = None
        self.docket: Docket | None = None
        self.stopping: str = ""  # why the worker is draining ("" while it is not)
        self.paused = False  # set by an operator (tt/REST interrupt): take no new work
        self.idle_since = time.monotonic()
        self.held: Entry | None = None  # the entry whose task is running; kept fresh by heartbeats
        self.tasks_taken = 0  # (a heartbeat that missed a whole task still beats: see heartbeat)
        self.cancelled_task = ""  # set by the heartbeat thread when the running task is cancelled
        self.task_lost = ""  # … or taken over by another run (this worker was judged dead)
        self.proc: subprocess.Popen | None = None  # the running CLI (set by the task's run)
        self.logs = TaskLogs(config.path(defaults.TASK_LOG_DIR))
        # Stops the running CLI if this worker dies.
        self.leash = orphan_cli.WorkerLeash(self.log, defaults.CLI_STOP_GRACE_SECS)
        self.wake = threading.Event()  # set by a signal: the heartbeat thread ends an idle read
        self.cost_per_hour = 0.0  # its outpost's rate (TINYTOWN_COST_PER_HOUR), set at register
        self.exiting = threading.Event()  # set when the worker ends: its threads end too
        # set by a heartbeat that saw a change, a stop nudge or a signal: check the controls now
        self.controls_due = threading.Event()
        self.controls_due.set()  # and once at the start
        # what a signal handler sets both through (Event.set in a handler can deadlock)
        self.signal_relay = SignalSafeSetter(self.wake, self.controls_due)
        drain_secs = self.agent_cfg.drain_timeout_secs  # (how long to wait for Redis when leaving)
        self.with_redis = RedisRetry(redis_retry_secs, drain_secs, self.log, lambda: self.stopping)
        self.runner = TaskRunner(self)  # runs each claimed task's CLI
        self.controls = Controls(self)  # what operators tell this worker
        self.dead_workers = DeadWorkers(self.with_redis, self.log, self.agent_cfg)
        self.health_file = health_file.HealthFile.from_env(  # judged by the longer cadence
            self.agent_cfg.idle_heartbeat_secs,
            on_error=lambda **f: self.log("health_file_failed", **f),
        )

    def log(self, event: str, **fields) -> None:
        log(event, agent=self.agent_id, name=self.name, **fields)

    # == lifecycle ==============================================================================

    def run(self) -> int:
        """Start, serve until told or idle, stop. Returns the process exit code."""
        try:
            self.connect()
            self.register()
            self.controls.install_signal_handlers()
            threading.Thread(target=Heartbeat(self).run, name="heartbeat", daemon=True).start()
            threading.Thread(target=self.controls.listen, name="control", daemon=True).start()
            reason = self.serve()
            self.retire(reason)
            self.log("exit", reason=reason, code=0)
            return int(ExitStatus.SUCCESS)
        except RedisGone as err:
            self.stop_cli_on_exit()
            code = int(ExitStatus.REDIS_UNAVAILABLE)
            self.log("exit", reason="redis_unreachable", code=code, detail=str(err))
            return code
        except TinytownError as err:  # a reserved name or a bad TINYTOWN_AGENT_ID
            code = int(ExitStatus.CONFIG_ERROR)
            self.log("exit", reason="bad_config", code=code, detail=str(err))
            return code
        except Exception as err:  # a bug: one line, then the traceback; a held entry stays
            self.stop_cli_on_exit()
            code = int(ExitStatus.FAILURE)
            task = self.held.task_id if self.held else None
            self.log("exit", reason="unexpected_error", code=code, detail=repr(err), task=task)
            traceback.print_exc()
            return code
        finally:
            self.logs.close()
            self.leash.close()  # (a CLI still running, after an error, is stopped by it)
            self.exiting.set()
            self.wake.set()

    def stop_cli_on_exit(self) -> None:
        """Leaving on an error with a CLI running: SIGTERM its group now (the leash, if there is
        one, would too, and follows up with SIGKILL); its task stays held for reclaim."""
        if self.proc is not None and self.proc.poll() is None:
            cli_process.signal_group(self.proc, signal.SIGTERM)

    # -- Starting ---------------------------------------------------------------------------

    def connect(self) -> None:
        """Connect (starting the town's own Redis if it is ours), retrying with backoff."""
        self.town = self.with_redis("connect", self._connect_once)

    def _connect_once(self) -> Town:
        try:
            return Town.connect(self.config)
        except RedisUnavailable as err:  # refused credentials, a too-old server: a restart may help
            raise redis.ConnectionError(str(err)) from None

    def register(self) -> None:
        cli = self.config.cli().name
        agents = self.town.agents
        register = agents.register
        try:
            agent = self.with_redis(
                "register", register, self.name, cli, agent_id=self.agent_id, unique_name=True
            )
        except NameTaken:  # a random suffix another live worker drew too: draw again, once
            if os.environ.get("TINYTOWN_AGENT_NAME") or self.agent_id:
                raise
            self.name = default_agent_name(self.host)
            agent = self.with_redis(
                "register", register, self.name, cli, agent_id=None, unique_name=True
            )
        self.agent_id = agent.id
        outpost, self.cost_per_hour, problem = outpost_from_env(os.environ)
        if problem:
            self.log("cost_ignored", detail=problem)
        if outpost or self.cost_per_hour:
            where = {"outpost": outpost or "", "cost_per_hour": f"{self.cost_per_hour:g}"}
            self.with_redis("record_outpost", agents.update, agent.id, set_fields=where)
        if self.docket is None:  # (registering again after the record vanished keeps the reader)
            self.docket = self.town.docket(agent.id)
        self.store = WorkerStore(self.town, agent.id, self.agent_cfg.heartbeat_interval_secs)
        self.with_redis("ensure_groups", self.docket.ensure_groups)
        keys = self.town.keys
        self.inbox_keys = (keys.urgent(agent.id), keys.inbox(agent.id))  # urgent first
        # Computed once: what every task's CLI gets besides its task id and attempt.
        self.base_env = cli_process.base_env(self.config, agent.id, self.name)
        adopted = bool(os.environ.get("TINYTOWN_AGENT_ID"))
        self.log("agent_state", state="starting", cli=cli, town=self.config.name, adopted=adopted)

    # -- Idle ⇄ Working ---------------------------------------------------------------------

    def serve(self) -> str:
        """Take tasks until a stop reason comes up; returns that reason."""
        self.with_redis("resume", self.resume_held_entries)
        self.leash.start()
        self.set_state("ready")
        idle_timeout_secs = self.agent_cfg.idle_timeout_secs
        while True:
            reason = self.stopping or self.due_checks()
            if reason:
                return reason
            if self.paused:  # until a heartbeat sees it resumed, or a signal or nudge asks
                self.controls_due.wait(self.agent_cfg.idle_heartbeat_secs)
                continue
            # the next task's log file, made while idle
            self.logs.prepare(self.runner.log_header(1))
            delivery = self.next_delivery()
            if delivery is not None and delivery.refused:  # stopped or paused from outside
                self.log("delivery_refused", agent_state=delivery.refused)
                self.controls_due.set()  # look now
                continue
            for entry, why in delivery.skipped if delivery else ():
                self.log("entry_skipped", task=entry.task_id, entry=entry.entry_id, reason=why)
            if delivery is not None and delivery.entry is not None:
                if self.stopping:  # the signal raced the read
                    self.undo_claim(delivery)
                else:
                    self.work_on(delivery.entry, delivery.claim)
                continue
            if idle_timeout_secs and time.monotonic() - self.idle_since >= idle_timeout_secs:
                self.log("idle_timeout", idle_secs=idle_timeout_secs)
                return "idle_timeout"

    def due_checks(self) -> str:
        """Between reads: the controls when something asked for them (a heartbeat that saw a
        change, a nudge, a signal), then dead workers' work when it is due."""
        t = time.monotonic()
        if self.controls_due.is_set():
            self.controls_due.clear()
            reason = self.with_redis("controls", self.controls.check)
            if reason:
                return reason
        dead = self.dead_workers
        if not self.paused and (entry := dead.entry_to_take_over(t, self.docket)) is not None:
            self.work_on(entry)
        dead.recover(t, self.town, self.docket)
        return ""

    def next_delivery(self) -> Delivery | None:
        """Block on the docket until an entry arrives (its task taken with the read), dead
        workers' work is due a look (``DeadWorkers.due_in``), the idle timeout, or a signal or a
        heartbeat ends the read."""
        block_secs = self.dead_workers.due_in(time.monotonic())
        if self.agent_cfg.idle_timeout_secs:
            left = self.agent_cfg.idle_timeout_secs - (time.monotonic() - self.idle_since)
            block_secs = max(0.001, min(block_secs, left))
        try:
            return self.docket.read(int(block_secs * 1000))
        except (redis.ConnectionError, redis.TimeoutError) as err:  # held entries are resumed
            self.with_redis.wait_after_error("read", err, self.store.ping)
            self.with_redis("resume", self.resume_held_entries, lost_reply=True)
        except redis.ResponseError as err:
            # NOGROUP: Redis came back empty; UNBLOCKED: a stream was deleted under the read.
            if "NOGROUP" not in str(err) and "UNBLOCKED" not in str(err):
                raise
            self.log("docket_group_missing", detail=str(err))
            self.with_redis("ensure_groups", self.docket.ensure_groups)
            self.controls_due.set()  # and check the agent record at once
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
                if self.claimed_by_me(task):
                    claim = Claim(task)
            lost = lost_reply or None
            self.log("entry_resumed", task=entry.task_id, entry=entry.entry_id, lost_reply=lost)
            self.work_on(entry, claim)

    def claimed_by_me(self, task: Task | None) -> bool:
        """Whether ``task`` is claimed by this agent already (a claim whose reply was lost)."""
        return task is not None and task.state == TASK_RUNNING and task.assigned_to == self.agent_id

    # -- Working ----------------------------------------------------------------------------

    def work_on(self, entry: Entry, claim: Claim | None = None) -> None:
        """Claim the entry's task (unless the read did), run the CLI on it, write the final
        state, then acknowledge."""
        # A held or taken-over entry whose holder's CLI may still run here (not a lost reply's).
        orphan_holder = entry.reclaimed_from if claim is None else ""
        claim = claim or self.claim(entry)
        task = claim.task
        if task is None:
            self.with_redis("ack", self.docket.ack, entry)
            self.log("entry_skipped", task=entry.task_id, entry=entry.entry_id, reason=claim.reason)
            return
        self.held, self.tasks_taken = entry, self.tasks_taken + 1
        if orphan_holder:  # its holder died: a CLI it left running here must stop first
            self.runner.stop_orphan_cli(orphan_holder, task.id)
        elif task.attempts > 1:  # a retry: an earlier run may still go on here (frozen, say)
            self.runner.stop_earlier_runs(task.id)
        # The inbox was read with the claim; the messages leave it once the CLI has them.
        inbox = Inbox([(k, raw) for k, raws in zip(self.inbox_keys, claim.peeked) for raw in raws])
        if inbox.raw and any(m.get("type") == "shutdown" for m in inbox.messages):
            self.stopping = self.stopping or "shutdown_message"
        outcome, ws = self.runner.run(task, entry, inbox)
        if outcome.never_started:  # told to leave before its CLI started: not an attempt
            hand_back.give_back(self, task, entry, ws)
            return
        if outcome.left_unfinished:
            hand_back.leave_unfinished(self, task, ws)
            return
        fields = self.runner.commit_workspace(task, ws, outcome)
        self.finish(entry, task, outcome, fields)

    def claim(self, entry: Entry) -> Claim:
        """The atomic claim; after a lost reply, the task record says whether it happened."""
        try:
            return self.docket.claim(entry)
        except (redis.ConnectionError, redis.TimeoutError) as err:
            self.with_redis.wait_after_error("claim", err, self.store.ping)
            task = self.with_redis("claim_check", self.town.tasks.find, entry.task_id)
            if self.claimed_by_me(task):
                return Claim(task)
            return self.with_redis("claim", self.docket.claim, entry)

    def undo_claim(self, delivery: Delivery) -> None:
        """A task the read claimed just as the worker was told to stop: given back uncounted."""
        hand_back.give_back(self, delivery.claim.task, delivery.entry)

    def finish(self, entry: Entry, task: Task, outcome: Outcome, fields: dict[str, str]) -> None:
        """Write the task's final state for this attempt, then (only then) acknowledge the entry."""
        final = self.runner.write_final_state(entry, task, outcome, fields)
        self.held = None  # (its state is final: a heartbeat need not keep the entry any more)
        self.after_task(entry)
        reason = None if outcome.succeeded else outcome.reason(self.config)
        attempt = task.attempts
        self.log(
            "task_finished", task=task.id, attempt=attempt, outcome=final, reason=reason, **fields
        )

    def after_task(self, entry: Entry) -> None:
        """Once the final state is written: the entry acknowledged, the round counted, the
        agent ``idle`` (``TaskRunner.end_round``, one round trip)."""
        self.runner.end_round(entry)
        self.idle_since = time.monotonic()

    # -- Draining → Stopped -----------------------------------------------------------------

    def retire(self, reason: str) -> None:
        """Idle → Draining → Stopped. A task left unfinished keeps ``current_task`` for
        ``tt recover``."""
        self.set_state("drain", reason=reason)
        self.set_state("stop", reason=reason, beat=True)
        self.exiting.set()

    # == around the lifecycle ===================================================================

    def set_state(
        self, move: str, *, delete=(), reason: str | None = None, beat: bool = False, **fields: str
    ) -> None:
        """Make an agent move of the state table (so a pause or kill from outside is not
        overwritten: the move names the states it leaves from); ``beat``: with a heartbeat."""
        state = AGENT[move].target
        beat_now = Beat(self.agent_cfg.heartbeat_interval_secs) if beat else None
        result = self.with_redis(
            f"state_{state}",
            self.town.agents.update,
            self.agent_id,
            move,
            set_fields=fields,
            delete_fields=delete,
            beat=beat_now,
        )
        if result.ok and result.old_state != state:
            self.log("agent_state", state=state, previous=result.old_state, reason=reason)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="agent_worker.py",
        description="Run one Tinytown agent worker (at-least-once delivery; see the module "
        "docstring).",
        epilog="exit codes: 0 clean (idle exit included), 1 unexpected error, 3 bad configuration, "
        "4 Redis unreachable after retries, 130 second signal",
    )
    parser.add_argument(
        "--town", metavar="DIR", help="town directory (default: $TINYTOWN_TOWN_DIR, else .)"
    )
    parser.add_argument(
        "--redis-retry-secs",
        type=float,
        default=defaults.REDIS_RETRY_SECS,
        metavar="N",
        help="exit with code 4 after Redis is unreachable this long (default: %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load_config(args.town)
        require_town_to_join(config)
    except ConfigError as err:
        log("exit", reason="bad_config", code=int(ExitStatus.CONFIG_ERROR), detail=str(err))
        return int(ExitStatus.CONFIG_ERROR)
    if (exposed := exposure(config.file)) is not None:
        log("config_exposed", level="warning", **exposed.fields())
    return Worker(config, redis_retry_secs=args.redis_retry_secs).run()


if __name__ == "__main__":
    sys.exit(main())
