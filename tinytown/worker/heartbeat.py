"""The heartbeat: the worker's thread that tells Redis it lives.

Every ``heartbeat_interval_secs``, in every state (also while the CLI runs), one round trip
writes ``last_heartbeat`` and, while a task runs, keeps its docket entry fresh (so no other
worker reclaims it) and reads the task's state: a task cancelled or deleted has its CLI stopped
(the thread sets ``cancelled_task``; the task's run, watching it, stops the CLI). Each heartbeat
Redis acknowledged touches the health file. A failed heartbeat is logged once until one lands.

A signal handler sends no Redis command, so a signal wakes this thread, which then ends an idle
worker's blocking read (:func:`tinytown.worker.controls.end_idle_read`) for the main loop.
"""

from __future__ import annotations

import threading
from typing import Protocol

import redis

from tinytown.config import AgentConfig
from tinytown.core.states import TASK
from tinytown.store.docket import Docket, Entry
from tinytown.store.worker import WorkerStore
from tinytown.worker.controls import end_idle_read
from tinytown.worker.health_file import HealthFile


class WorkerState(Protocol):
    """What the heartbeat reads and sets on the worker (``agent_worker.Worker``)."""

    agent_cfg: AgentConfig
    store: WorkerStore
    docket: Docket
    health_file: HealthFile
    stopping: str  # read: why the worker is draining ("" while it is not)
    held: Entry | None  # read: the entry whose task is running
    cancelled_task: str  # set: the running task was cancelled or deleted
    wake: threading.Event  # set by a signal handler: beat now (and end an idle read)
    controls_due: threading.Event  # set by a signal: end_idle_read looks at it
    exiting: threading.Event  # set when the worker ends: so does the heartbeat

    def log(self, event: str, **fields) -> None: ...


class Heartbeat:
    def __init__(self, worker: WorkerState):
        self.worker = worker

    def run(self) -> None:
        """The thread: a heartbeat every interval, or at once when woken."""
        w, failing = self.worker, False
        while not w.exiting.is_set():
            w.wake.wait(w.agent_cfg.heartbeat_interval_secs)
            w.wake.clear()
            if w.exiting.is_set():
                return
            try:
                if w.stopping:
                    end_idle_read(w)
                self.beat(w.held)
                if failing:
                    w.log("heartbeat_resumed")
                failing = False
            except redis.RedisError as err:
                if not failing:
                    w.log("heartbeat_failed", detail=str(err))
                failing = True

    def beat(self, held: Entry | None) -> None:
        """One round trip: ``last_heartbeat``; while a task runs, also keep its entry fresh and
        look whether it was cancelled."""
        w = self.worker
        found = w.store.beat(w.docket, held)
        w.health_file.beat()  # container-side evidence for a Docker healthcheck
        if found is None:
            return
        still_held, task_state = found
        if not still_held:
            w.log("entry_lost", task=held.task_id, entry=held.entry_id)
        if task_state is None or task_state == TASK["cancel"].target:  # cancelled, or deleted
            w.cancelled_task = held.task_id
