"""The mission dispatcher: turns work items into docket tasks the moment they can run.

It waits on the town's event feed (a blocking ``XREAD``), so a task that finishes wakes it at
once and the items that depended on it are queued within milliseconds; a tick every
``[missions] tick_secs`` (5 s) is only the backstop, and it is when help is looked for. The
backstop steps a quiet mission (nothing changed at its last steps: a long run, a wait for a
person) less and less often, doubling up to once a minute, so an idle town's active missions
cost Redis a few commands a minute each; an event about a mission steps it at once. Each
step of a mission is :func:`tinytown.core.mission_plan.plan` over what the store holds, written
back only if the mission's document did not change meanwhile. A lease per mission
(``mission:<id>:dispatch_lock``, refreshed every step, lapsing after ``lease_secs``) keeps one
dispatcher acting on it however many run: townhall runs one per process, ``tt mission
dispatch`` one more. A dispatcher killed mid-step loses nothing: tasks are created before the
step's items are written, with ids derived from the item, so the next step (here or in another
process, once the lease lapses) makes the same ones and carries on.

Redis errors are logged once and retried; the loop never ends before its process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

import redis

from tinytown.core import defaults
from tinytown.core import events as ev
from tinytown.core.clock import now
from tinytown.core.errors import InvalidTransition, NotFound, TinytownError
from tinytown.core.mission_plan import Plan, TaskView, plan
from tinytown.core.missions import json_now
from tinytown.core.states import TASK_RUNNING, TERMINAL_MISSION_STATES
from tinytown.missions.notes import apply_note
from tinytown.store import Town
from tinytown.store.duty import run_duty
from tinytown.store.lease import Lease
from tinytown.store.pump import EventPump

log = logging.getLogger("tinytown.missions")

# Events that may change what a mission should do next. The dispatcher's own writes
# (mission_work_*, help) are left out, so a step does not wake itself.
WAKE_EVENTS = frozenset(
    {
        ev.TASK_CREATED,
        ev.TASK_ASSIGNED,
        ev.TASK_STARTED,
        ev.TASK_REQUEUED,
        ev.TASK_COMPLETED,
        ev.TASK_FAILED,
        ev.TASK_CANCELLED,
        ev.MISSION_STATE_CHANGED,
        ev.MISSION_EVENT,
    }
)
STEP_TRIES = 3  # a step whose write met a concurrent change is planned again this many times
EVENTS_PER_READ = 500


class Dispatcher:
    def __init__(
        self,
        town: Town,
        *,
        tick_secs: float = defaults.MISSION_TICK_SECS,
        lease_secs: float = defaults.MISSION_LEASE_SECS,
        only: str | None = None,
        pump: EventPump | None = None,
    ):
        """``only``: act on this one mission (``tt mission dispatch --mission``); ``pump``: the
        process's event pump (townhall's), to wait on instead of reading the feed itself."""
        self.town, self.tick_secs, self.only, self.pump = town, tick_secs, only, pump
        self.lease_ms = int(lease_secs * 1000)
        self.leases: dict[str, Lease] = {}
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None
        self.cursor: str | None = None
        self.woken: set[str] = set()
        self.next_tick = 0.0
        # a mission's next backstop step (monotonic), and how many in a row changed nothing:
        # a quiet mission (waiting on a long run, or for a person) is looked at less and less
        # often, down to every MISSION_QUIET_MAX_SECS; an event about it steps it at once
        self.due_at: dict[str, float] = {}
        self.quiet: dict[str, int] = {}
        self.live_workers: int | None = None  # read once a round, for every mission it steps
        self.steps = 0  # mission steps that wrote something (for tests and `tt mission dispatch`)

    # -- running ----------------------------------------------------------------------------

    def start(self) -> Dispatcher:
        self.thread = threading.Thread(target=self.run, name="tinytown-dispatcher", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()

    def run(self) -> None:
        """Loop until stopped: react to events, tick as a backstop, survive Redis errors."""
        run_duty(
            "dispatcher", self.round, self.stopped, log, retry_secs=defaults.MISSION_RETRY_SECS
        )
        self.release_all()

    def round(self) -> None:
        self.run_once()

    def run_once(self, wait: bool = True) -> int:
        """One round: step the missions that are due, then wait for events (until the next
        tick) and note which missions they wake. Returns how many steps wrote something.

        With the process's event pump, the wait costs Redis nothing: the feed is read from
        this dispatcher's cursor only when the pump saw something. With no active mission the
        next tick is ``MISSION_IDLE_RECHECK_SECS`` away (a new mission's event wakes it)."""
        if self.cursor is None:
            self.cursor = self.town.events.last_id()
            self.next_tick = 0.0
        seen = self.pump.seq if self.pump is not None else -1
        due, woken = set(self.woken), self.woken
        self.woken, self.live_workers = set(), None
        if time.monotonic() >= self.next_tick:
            active = self.active_ids()
            t = time.monotonic()
            due |= {m for m in active if self.due_at.get(m, 0.0) <= t}
            idle = not active and self.pump is not None
            gap = defaults.MISSION_IDLE_RECHECK_SECS if idle else self.tick_secs
            self.next_tick = time.monotonic() + gap
        wrote = 0
        for mission_id in sorted(due):
            changed = self.step(mission_id)
            wrote += changed
            self.backstop_after(mission_id, changed or mission_id in woken)
        if due:  # a mission is alive: tick as usual (the next tick reads the active set)
            self.next_tick = min(self.next_tick, time.monotonic() + self.tick_secs)
        wait_ms = int(max(0.0, self.next_tick - time.monotonic()) * 1000) if wait else 0
        if self.pump is not None and self.pump.healthy and wait_ms:
            if self.pump.wait(seen, wait_ms / 1000) == seen:
                return wrote  # nothing happened: no read
            wait_ms = 0
        events = self.town.events.read(self.cursor, EVENTS_PER_READ, wait_ms=wait_ms)
        if events:
            self.cursor = events[-1]["id"]
            self.woken |= set(self.missions_woken(events))
        return wrote

    def backstop_after(self, mission_id: str, busy: bool) -> None:
        """When the backstop steps this mission next: a tick from now after a change (or an
        event), else twice as long as last time, up to ``MISSION_QUIET_MAX_SECS``."""
        quiet = 0 if busy else self.quiet.get(mission_id, 0) + 1
        self.quiet[mission_id] = quiet
        # (never so long that a step and the tick after it pass /ready's freshness window)
        longest = max(self.tick_secs, defaults.MISSION_QUIET_MAX_SECS - self.tick_secs)
        wait = min(self.tick_secs * 2**quiet, longest)
        self.due_at[mission_id] = time.monotonic() + wait

    def missions_woken(self, events: Iterable[dict]) -> Iterable[str]:
        for doc in events:
            mission_id = doc.get("mission_id")
            if mission_id and doc.get("event_type") in WAKE_EVENTS:
                if self.only is None or mission_id == self.only:
                    yield mission_id

    def active_ids(self) -> list[str]:
        ids = self.town.missions.active_ids()
        return [i for i in ids if i == self.only] if self.only else ids

    # -- one mission ------------------------------------------------------------------------

    def lease(self, mission_id: str) -> Lease:
        if mission_id not in self.leases:
            key = self.town.keys.mission_dispatch_lock(mission_id)
            self.leases[mission_id] = self.town.lease(key, self.lease_ms)
        return self.leases[mission_id]

    def step(self, mission_id: str) -> bool:
        """Plan and write one step of a mission this dispatcher holds (or can take) the lease
        of. Returns True when it wrote a change."""
        lease = self.lease(mission_id)
        if not lease.acquire():
            return False  # another dispatcher acts on it
        for _ in range(STEP_TRIES):
            snap = self.town.missions.snapshot(mission_id)
            mission, items = snap.mission, snap.items
            if mission is None:
                self.forget(mission_id)
                return False
            if self.handle_notes(mission_id, mission, items):
                continue  # a note (a retry of an ended mission too): plan from what it is now
            if mission.get("state") in TERMINAL_MISSION_STATES:
                self.forget(mission_id)
                return False
            result = self.plan_step(mission, items)
            self.create_tasks(mission_id, result)
            if self.town.missions.apply(mission_id, snap, result, json_now()):
                for task_id in result.cancel:
                    self.cancel(task_id, "redirected by a note")
                if not result.empty:
                    self.steps += 1
                    return True
                return False
        return False

    def plan_step(self, mission: dict, items: list[dict]) -> Plan:
        ids = [i["task_id"] for i in items if i.get("task_id")]
        found = [t for t in self.town.tasks.many(ids) if t is not None]
        running = [t.assigned_to for t in found if t.state == TASK_RUNNING]
        alive = self.town.agents.alive_ids(running)
        tasks = {
            t.id: TaskView(t.id, t.state, t.result, t.worker_secs, t.cost, t.assigned_to in alive)
            for t in found
        }
        if self.live_workers is None:  # (once a round, not once a mission)
            self.live_workers = self.town.agents.counts().live_active
        live = self.live_workers
        current = now()
        return plan(mission, items, tasks, now=current, ts=json_now(current), live_workers=live)

    def create_tasks(self, mission_id: str, result: Plan) -> None:
        for task in result.tasks:
            self.town.tasks.add(
                task.description,
                tags=task.tags,
                agent_id=task.agent_id,
                repo=task.repo,
                base_branch=task.base_branch,
                push=task.push,
                cli=task.cli,
                mission_id=mission_id,
                work_item_id=task.item_id,
                max_attempts=task.max_attempts,
                task_id=task.id,
            )

    def handle_notes(self, mission_id: str, mission: dict, items: list[dict]) -> bool:
        notes = self.town.missions.pending_notes(mission_id)
        for note in notes:
            outcome, cancel = apply_note(self.town, mission_id, mission, items, note)
            self.town.missions.note_processed(mission_id, note, outcome)
            for task_id in cancel:
                self.cancel(task_id, f"redirected by a note from {note['sender']}")
        return bool(notes)

    def cancel(self, task_id: str, reason: str) -> None:
        try:
            self.town.tasks.cancel(task_id, reason)
        except (NotFound, InvalidTransition, TinytownError):
            pass  # already finished or gone: nothing to stop

    def forget(self, mission_id: str) -> None:
        self.due_at.pop(mission_id, None)
        self.quiet.pop(mission_id, None)
        lease = self.leases.pop(mission_id, None)
        if lease is not None:
            lease.release()

    def release_all(self) -> None:
        for mission_id in list(self.leases):
            try:
                self.forget(mission_id)
            except redis.RedisError:
                pass  # it lapses by itself
