"""Townhall's keeper: dead agents' work moves on by itself, without ``tt recover``.

A worker that is killed outright (SIGKILL, a lost VM) cannot say so. Its agent stays in the state
it had, but once its heartbeat is older than its own window (``DEAD_AFTER_HEARTBEATS`` × its
``heartbeat_interval_secs``) every view reports it dead and no count includes it as live. The
keeper then finishes the job: it marks the agent ``stopped`` and returns the docket entries it
held — to the backlog, or failed past ``max_attempts`` (:func:`tinytown.recovery.recover`).

One daemon thread per townhall process. It sleeps until the earliest moment an agent's window
can run out (the lowest score of the deadlines index, ``Keys.agents_alive``, Redis clock: one
look is two commands), at least ``KEEPER_MIN_SLEEP_SECS``. It waits on the process's event pump
meanwhile: an agent that registers, takes a task or ends one changes state, which appends an
event, and its window may have moved earlier (a worker that takes a task shortens its window
from an idle one, 90 s by default, to a working one, 15 s), so an event makes it look again, at
most once per ``KEEPER_MIN_SLEEP_SECS``. With no live agent at all it waits for an event alone,
so an empty town, or one whose workers are idle, costs it almost nothing. Without a working
pump it looks at least once per dead-after window of the town's own
``heartbeat_interval_secs`` (15 s by default), as it did before the pump. When an
agent is past its window it takes the town's keeper lease, so one process recovers at a time,
and a process that dies holding it loses it after ``KEEPER_LEASE_SECS``. Redis errors are logged
once and retried a window later; the thread never ends before its process.

It also forgets agents: records stopped or in error whose last heartbeat window ended more than
``[agent] retention_secs`` ago (a day by default; 0 keeps them) are deleted with their index
entries, inboxes and flags, as ``POST /v1/agents/prune`` deletes them. It looks at most every
``AGENT_PRUNE_INTERVAL_SECS`` (a few Redis commands), under the same lease.
"""

from __future__ import annotations

import json
import logging
import threading
import time

from tinytown.core import defaults
from tinytown.recovery import recover
from tinytown.store import Town
from tinytown.store.duty import run_duty
from tinytown.store.pump import EventPump

log = logging.getLogger("tinytown.townhall")


class Keeper:
    def __init__(self, town: Town, pump: EventPump | None = None):
        """``pump``: the process's event pump; with it, a town without live agents is not
        looked at on a timer but when an event comes (a worker registering makes one)."""
        self.town, self.pump = town, pump
        self.lease = town.lease(town.keys.keeper_lease, defaults.KEEPER_LEASE_SECS * 1000)
        self.stopped = threading.Event()
        # Longest sleep without a working pump (and after a Redis error): an agent registered
        # meanwhile (deadline ≥ its beat + its own window) is seen no later than this after its
        # window ends. With the pump, its event wakes the keeper instead.
        self.max_sleep_secs = (
            town.config.agent.heartbeat_interval_secs * defaults.DEAD_AFTER_HEARTBEATS
        )
        self.thread: threading.Thread | None = None
        self.retention_secs = town.config.agent.retention_secs
        self.next_prune = 0.0  # time.monotonic() when stopped agents are looked at next

    def start(self) -> Keeper:
        self.thread = threading.Thread(target=self.run, name="tinytown-keeper", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()

    def run(self) -> None:
        run_duty("keeper", self.tend, self.stopped, log, retry_secs=self.max_sleep_secs)

    def tend(self) -> float | None:
        """Recover what is due (under the lease), then wait on the pump until the next deadline
        or an event; returns the seconds to sleep before the next look (the pump's absence:
        polling)."""
        seen = self.pump.seq if self.pump is not None else -1
        looked = time.monotonic()
        deadline, now_ms = self.town.agents.next_deadline_ms()
        if deadline is not None and deadline <= now_ms and self.lease.acquire():
            try:
                result = recover(self.town, sweep_terminal=False)
            finally:
                self.lease.release()
            if result["recovered"] or result["reclaimed"]:
                log.warning(
                    "event=agents_recovered agents=%s recovered=%d reclaimed=%d",
                    json.dumps(",".join(result["agents"])),
                    result["recovered"],
                    result["reclaimed"],
                )
            deadline, now_ms = self.town.agents.next_deadline_ms()
        self.prune()
        due = defaults.AGENT_PRUNE_INTERVAL_SECS
        if deadline is not None:  # just past it, so the agent is dead by then if it has not beaten
            due = (deadline - now_ms) / 1000 + defaults.KEEPER_MIN_SLEEP_SECS / 10
            due = max(defaults.KEEPER_MIN_SLEEP_SECS, due)
        if self.pump is None or not self.pump.healthy or self.pump.stopped.is_set():
            return min(self.max_sleep_secs, due)
        if self.pump.wait(seen, due) == seen:
            return None  # the deadline came: look now
        # An event: look again, but not sooner than the least sleep after the last look.
        return max(0.0, looked + defaults.KEEPER_MIN_SLEEP_SECS - time.monotonic())

    def prune(self) -> None:
        """Delete agents stopped longer than the retention (when due, and under the lease)."""
        if not self.retention_secs or time.monotonic() < self.next_prune:
            return
        if not self.lease.acquire():
            return  # another process holds it: look again at the next wake-up
        try:
            pruned = self.town.agents.prune_stopped(self.retention_secs)
        finally:
            self.lease.release()
        self.next_prune = time.monotonic() + defaults.AGENT_PRUNE_INTERVAL_SECS
        if pruned:
            log.info(
                "event=agents_pruned count=%d agents=%s retention_secs=%d",
                len(pruned),
                json.dumps(",".join(pruned)),
                self.retention_secs,
            )
