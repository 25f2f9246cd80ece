"""The heartbeat: the worker's thread that tells Redis it lives, and hears what its controls say.

Its cadence follows the work. While a task runs, one round trip every ``heartbeat_interval_secs``
writes ``last_heartbeat``, keeps the task's docket entry fresh (so no other worker reclaims it)
and reads the task's state: a task cancelled or deleted has its CLI stopped (the thread sets
``cancelled_task``; the task's run, watching it, stops the CLI). While idle, it beats every
``idle_heartbeat_secs`` (30 s by default) instead. Each beat's window is 3 of its own interval,
so a working worker that dies is seen within 15 s and an idle one within 90 s: an idle worker
holds no task, so only the counts wait longer, and an idle worker costs Redis about 25 commands
a minute instead of ~290. A worker that takes a task or ends one beats at the new cadence within
one working interval; taking one also shortens its window at once (``WorkerStore.cli_started``).
A task that starts and ends between two looks of this thread counts too (``tasks_taken``
changed): else the working window set as its CLI started would run out before the next idle beat,
and an idle, healthy worker would be judged dead.

Each beat also reads the agent's state, its stop flag and whether its lists hold messages. When
they say something the worker has not acted on (the stop flag, a stop state, a pause or resume,
the record gone, messages arriving on empty lists), the thread asks the main loop for a full
control check (``controls_due``) and ends an idle read
(:func:`tinytown.worker.controls.end_idle_read`): no periodic control check costs Redis anything
while nothing changes. Each heartbeat Redis
acknowledged touches the health file. A failed heartbeat is logged once until one lands.

A signal handler sends no Redis command, so a signal wakes this thread, which beats at once and
then ends an idle worker's blocking read for the main loop.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

import redis

from tinytown.config import AgentConfig
from tinytown.core.states import AGENT, AGENT_STOP_STATES, TASK, TASK_RUNNING
from tinytown.store.docket import Docket, Entry
from tinytown.store.worker import BeatReply, WorkerStore
from tinytown.worker.controls import end_idle_read
from tinytown.worker.health_file import HealthFile

# A beat due within this of the next look is made at this look (the thread wakes every working
# interval; an idle interval is a multiple of it, and timers run a little late).
CADENCE_SLACK_SECS = 0.5


class WorkerState(Protocol):
    """What the heartbeat reads and sets on the worker (``agent_worker.Worker``)."""

    agent_cfg: AgentConfig
    store: WorkerStore
    docket: Docket
    health_file: HealthFile
    stopping: str  # read: why the worker is draining ("" while it is not)
    paused: bool  # read: whether the worker believes its agent paused
    held: Entry | None  # read: the entry whose task is running
    tasks_taken: int  # read: how many tasks it has taken (each may have changed its window)
    agent_id: str
    cancelled_task: str  # set: the running task was cancelled or deleted
    task_lost: str  # set (with cancelled_task): its entry went to another run
    wake: threading.Event  # set by a signal handler: beat now (and end an idle read)
    controls_due: threading.Event  # set: a beat saw something; end_idle_read looks at it too
    exiting: threading.Event  # set when the worker ends: so does the heartbeat

    def log(self, event: str, **fields) -> None: ...


class Heartbeat:
    def __init__(self, worker: WorkerState):
        self.worker = worker
        cfg = worker.agent_cfg
        self.working_secs, self.idle_secs = cfg.heartbeat_interval_secs, cfg.idle_heartbeat_secs
        self.last_beat = time.monotonic()  # registering was a beat, at the working interval
        self.last_working = True  # … whose window is the shorter: the first look beats again
        self.had_messages = False  # whether the last beat found messages waiting
        self.taken_at_beat = 0  # the worker's tasks_taken as of the last beat

    def run(self) -> None:
        """The thread: looks every working interval (no Redis command unless a beat is due),
        or at once when woken."""
        w, failing = self.worker, False
        while not w.exiting.is_set():
            woken = w.wake.wait(self.working_secs)
            w.wake.clear()
            if w.exiting.is_set():
                return
            held, taken = w.held, w.tasks_taken
            if not (woken or self.due(held is not None, taken, time.monotonic())):
                continue
            try:
                if w.stopping:
                    end_idle_read(w)
                self.beat(held)
                self.taken_at_beat = taken
                if failing:
                    w.log("heartbeat_resumed")
                failing = False
            except redis.RedisError as err:
                if not failing:
                    w.log("heartbeat_failed", detail=str(err))
                failing = True

    def due(self, working: bool, taken: int, t: float) -> bool:
        """A beat is due when the work started or ended since the last one, or a task came and
        went in between (``taken``: the worker's ``tasks_taken``; either way its window
        changed), or its own interval has passed."""
        interval = self.working_secs if working else self.idle_secs
        return (
            working != self.last_working
            or taken != self.taken_at_beat
            or t - self.last_beat >= interval - CADENCE_SLACK_SECS
        )

    def beat(self, held: Entry | None) -> None:
        """One round trip at the cadence of the work: ``last_heartbeat`` and what the controls
        say; while a task runs, also keep its entry fresh and look whether it was cancelled."""
        w = self.worker
        working = held is not None
        reply = w.store.beat(w.docket, held, self.working_secs if working else self.idle_secs)
        self.last_beat, self.last_working = time.monotonic(), working
        w.health_file.beat()  # container-side evidence for a Docker healthcheck
        if self.controls_changed(reply) and not w.controls_due.is_set():
            w.controls_due.set()  # the main loop checks them on its next turn
            end_idle_read(w)
        if held is None:
            return
        if not reply.still_held and w.held is held:  # (not the worker's own ack racing the beat)
            # Taken over (this worker was judged dead) or sent back to the queue: another run
            # has it, and this one's final write would be refused; its CLI stops now.
            mine = reply.task_state == TASK_RUNNING and reply.task_owner == w.agent_id
            w.log("entry_lost", task=held.task_id, entry=held.entry_id, cli_stopped=not mine)
            if not mine:
                w.task_lost = w.cancelled_task = held.task_id
        if reply.task_state is None or reply.task_state == TASK["cancel"].target:
            w.cancelled_task = held.task_id  # cancelled, or deleted

    def controls_changed(self, reply: BeatReply) -> bool:
        """Whether the beat saw what the worker has not acted on: the record gone, the stop
        flag, a stop state, a pause or a resume, or messages on lists that were empty."""
        w, state = self.worker, reply.state
        arrived = reply.has_messages and not self.had_messages
        self.had_messages = reply.has_messages
        if state is None or reply.stop_requested or state in AGENT_STOP_STATES:
            return True
        return (state == AGENT["pause"].target) != w.paused or arrived
