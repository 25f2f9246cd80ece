"""What operators tell a worker, and how it hears it at once: its controls, nudges and signals.

The word of record is in Redis, read by the **control check** (:meth:`Controls.check`), which
the main loop runs between reads at the start, when a heartbeat saw a change in what it reads
(:mod:`tinytown.worker.heartbeat`: state, stop flag, messages arriving), and when nudged or
signalled:

- the stop flag (``POST /v1/agents/{agent}/kill``): leave (``stop_requested``);
- the agent's state as others set it: a stop state (``AGENT_STOP_STATES``: stopped, draining,
  error, cold) means leave too; ``paused`` means take no new work until resumed; a record that
  is gone (deleted, or Redis came back empty) is registered again;
- a ``shutdown`` message on the agent's inbox (``tt send --kind shutdown``): removed, and leave
  (``shutdown_message``).

**Nudges** on the agent's control channel (:mod:`tinytown.store.control`, a thread of its own:
:meth:`Controls.listen`) make the worker act at once instead of at its next check: ``cancel`` of
the running task stops its CLI, ``stop`` makes the main loop check its controls now, ending an
idle read. They are best effort: what a nudge missed, the next check or heartbeat catches.

**Signals**: SIGTERM or SIGINT drains the worker (``signal_sigterm``, ``signal_sigint``); a
second one ends it at once with exit code 130, its CLI's process group killed and a held entry
left for reclaim. A handler sends no Redis command: it wakes the heartbeat thread, which ends an
idle read (:func:`end_idle_read`), and a paused main loop.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from typing import Protocol

import redis

from tinytown.core import defaults, messages
from tinytown.core.errors import ExitStatus
from tinytown.core.signal_safe import SignalSafeSetter
from tinytown.core.states import AGENT_STOP_STATES
from tinytown.store import Town, control
from tinytown.store.docket import Docket, Entry
from tinytown.store.worker import WorkerStore
from tinytown.worker import cli_process


class WorkerState(Protocol):
    """What the control check and the listener read and set on the worker (``agent_worker``)."""

    town: Town
    store: WorkerStore
    docket: Docket
    held: Entry | None  # read: the entry whose task is running
    proc: subprocess.Popen | None  # read: the running CLI, whose group a second signal kills
    stopping: str  # set by a signal: why the worker is draining
    paused: bool  # set: an operator paused the agent; the main loop takes no new work
    idle_since: float  # set: the idle timeout starts again when the agent is resumed
    cancelled_task: str  # set: the running task was cancelled; its run stops the CLI
    controls_due: threading.Event  # set by a signal or a stop nudge: check the controls now
    signal_relay: SignalSafeSetter  # sets wake and controls_due for a signal handler
    wake: threading.Event  # set by a signal: the heartbeat thread ends an idle read
    exiting: threading.Event  # set when the worker ends: so does the listener

    def log(self, event: str, **fields) -> None: ...

    def register(self) -> None: ...

    def set_state(self, move: str, **fields) -> None: ...


class IdleRead(Protocol):
    """What :func:`end_idle_read` looks at (the worker, seen from its other threads)."""

    docket: Docket
    held: Entry | None
    controls_due: threading.Event
    exiting: threading.Event


class Controls:
    def __init__(self, worker: WorkerState):
        self.worker = worker
        self.signals = 0  # SIGTERM and SIGINT received

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)

    def on_signal(self, signum: int, _frame) -> None:
        w = self.worker
        self.signals += 1
        name = signal.Signals(signum).name
        if self.signals > 1:  # second signal: out now; a held entry stays for reclaim
            if w.proc is not None and w.proc.poll() is None:
                cli_process.signal_group(w.proc, signal.SIGKILL)
            code, task = int(ExitStatus.INTERRUPTED), w.held.task_id if w.held else None
            w.log("exit", reason="second_signal", signal=name, code=code, task=task)
            os._exit(code)
        w.stopping = w.stopping or f"signal_{name.lower()}"
        w.log("drain_requested", signal=name)
        # the heartbeat thread unblocks the read (no Redis calls in a handler) and a paused
        # worker stops waiting: wake and controls_due, set through a pipe (signal_safe)
        w.signal_relay.set()

    def check(self) -> str:
        """Stop flag, external state changes (kill, close, pause) and ``shutdown`` messages; the
        reason to leave, or ""."""
        w = self.worker
        controls = w.store.controls()
        state = controls.state
        if controls.stop_requested:
            w.store.clear_stop()
            return "stop_requested"
        if state is None:  # the record was deleted (or Redis came back empty): register again
            w.log("agent_record_missing")
            w.register()
            w.set_state("ready")
        elif state in AGENT_STOP_STATES:
            return "stop_requested"
        was_paused, w.paused = w.paused, state == "paused"
        if w.paused and not was_paused:
            w.log("agent_paused")
        if was_paused and not w.paused:
            w.log("agent_resumed", state=state)
            w.idle_since = time.monotonic()
        for list_key, raw in controls.messages:
            if messages.decode(raw).get("type") == "shutdown":
                w.town.inbox.remove(list_key, raw)
                return "shutdown_message"
        return ""

    def listen(self) -> None:
        """The control thread: nudges on the agent's channel, acted on at once; after losing the
        channel, listen again (one ``control_unavailable`` line until it is back)."""
        w, listener, failing = self.worker, None, False
        while not w.exiting.is_set():
            try:
                if listener is None:
                    listener = w.store.listener()
                nudge = listener.next(timeout=defaults.CONTROL_POLL_SECS)
            except redis.RedisError as err:  # Redis away, or no channel access: try again later
                if not failing:
                    w.log("control_unavailable", detail=str(err))
                failing = True
                if listener is not None:
                    listener.close()
                listener = None
                w.exiting.wait(defaults.CONTROL_POLL_SECS)
                continue
            failing = False
            if nudge is not None:
                self.on_nudge(*nudge)
        if listener is not None:
            listener.close()

    def on_nudge(self, kind: str, task_id: str) -> None:
        """``cancel`` of the running task: stop its CLI now; ``stop``: check the controls now."""
        w = self.worker
        held = w.held
        if kind == control.CANCEL and held is not None and held.task_id == task_id:
            w.cancelled_task = task_id
        elif kind == control.STOP:
            w.controls_due.set()  # the main loop checks the controls on its next turn
            end_idle_read(w)


def end_idle_read(w: IdleRead) -> None:
    """Make an idle worker's blocking read return now (CLIENT UNBLOCK), so the main loop acts on
    a signal or a stop nudge (both set ``controls_due``). The read may not have begun yet, and
    then there is nothing to unblock: keep trying, briefly, until the main loop has moved on (it
    took the request, took a task, or ended)."""
    for _ in range(defaults.CONTROL_UNBLOCK_TRIES):
        if not w.controls_due.is_set() or w.held is not None or w.exiting.is_set():
            return
        with contextlib.suppress(redis.RedisError):
            if w.docket.end_read():
                return
        time.sleep(defaults.CONTROL_UNBLOCK_PAUSE_SECS)
