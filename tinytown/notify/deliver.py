"""Townhall's notifier: route notification events to the outbox and deliver it, at least once.

Two daemon threads per townhall process (any number of processes may run them side by side):

- the **router** waits on the town's event stream through the consumer group ``notify`` and, for
  each event that is a notification (:func:`tinytown.core.events.notification_kind`), adds one
  outbox entry per target that wants it — and acknowledges the event in the same transaction;
- the **deliverer** waits on the outbox through the group ``deliverers`` and POSTs each entry
  (:mod:`tinytown.notify.send`). A 2xx acknowledges the entry and appends a
  ``notification_attempt`` event (``status="delivered"``) in one transaction. A failure appends
  one with ``status="failed"`` and parks the entry; it is tried again after ``backoff_base_secs``
  doubling up to ``backoff_max_secs``, and after ``max_attempts`` it moves to the dead letters
  (``status="dead"``). Entries held by a deliverer that died are taken over once idle for the
  in-flight claim time.

**Delivery is at least once.** A deliverer killed after its request reached the receiver and
before it recorded the answer leaves the entry held; another deliverer sends it again, with the
**same** ``Idempotency-Key`` (one per event and target, :func:`~tinytown.notify.message.
idempotency_key`). A receiver that drops keys it has seen gets each notification exactly once;
ntfy and Slack do not dedupe, so there a crash at the wrong instant repeats a ping.

Waiting is blocking reads of at most ``EVENTS_BLOCK_SLICE_MS`` (the client's socket timeout is
longer), plus a look at the pending list every ``scan_interval_secs`` or when a parked retry is
due: an idle town costs about 25 commands a minute per townhall process. Redis errors are
logged once and retried; neither thread ends before ``stop()`` or its process.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import secrets
import threading
import time
import traceback
from dataclasses import dataclass
from typing import NamedTuple

import redis
import requests

from tinytown.config.notify import NotifyTarget
from tinytown.core import defaults
from tinytown.core import events as ev
from tinytown.core.clock import now, to_rfc3339
from tinytown.notify.message import Notification, idempotency_key, link_for
from tinytown.notify.policy import backoff_secs, wanted_by
from tinytown.notify.send import Outcome, send
from tinytown.store.duty import run_duty
from tinytown.store.outbox import Outbox, OutboxEntry, Pending, entry_fields

log = logging.getLogger("tinytown.townhall")

# Defaults (to move to tinytown/core/defaults.py).
NOTIFY_MAX_ATTEMPTS = 8
NOTIFY_BACKOFF_BASE_SECS = 2.0
NOTIFY_BACKOFF_MAX_SECS = 300.0
NOTIFY_CLAIM_IDLE_SECS = 60.0  # an entry held this long by a deliverer: it died; at least
# twice the slowest target's timeout (connect + read) and a second, whatever is set here
NOTIFY_ROUTER_CLAIM_IDLE_SECS = 60.0  # an event read and not routed this long: its router died
NOTIFY_SCAN_INTERVAL_SECS = 30.0  # how often a deliverer looks for others' due or orphaned work
NOTIFY_ERROR_RETRY_SECS = 5.0  # after a Redis error, try again this much later
NOTIFY_CONSUMER_FORGET_SECS = 86_400  # a consumer that holds nothing and was idle a day: gone
NOTIFY_ROUTE_BATCH = 100
NOTIFY_DELIVER_BATCH = 10
NOTIFY_PENDING_SCAN = 100  # rows of the pending list looked at per scan


@dataclass(frozen=True)
class DeliveryPolicy:
    """How often and how long to try. Every field has its default above; tests shorten them."""

    max_attempts: int = NOTIFY_MAX_ATTEMPTS
    backoff_base_secs: float = NOTIFY_BACKOFF_BASE_SECS
    backoff_max_secs: float = NOTIFY_BACKOFF_MAX_SECS
    claim_idle_secs: float = NOTIFY_CLAIM_IDLE_SECS
    router_claim_idle_secs: float = NOTIFY_ROUTER_CLAIM_IDLE_SECS
    scan_interval_secs: float = NOTIFY_SCAN_INTERVAL_SECS
    error_retry_secs: float = NOTIFY_ERROR_RETRY_SECS
    block_ms: int = defaults.EVENTS_BLOCK_SLICE_MS


class Pass(NamedTuple):
    """What one :meth:`Notifier.run_once` did: events routed, deliveries attempted."""

    routed: int
    attempts: int


def _where(err: Exception) -> str:
    """An unexpected error's type and place only: its text may hold a target's URL."""
    frame = traceback.extract_tb(err.__traceback__)[-1]
    return f"error={type(err).__name__} at={os.path.basename(frame.filename)}:{frame.lineno}"


def consumer_name() -> str:
    """Unique per notifier: host, process and a random part."""
    return f"{platform.node() or 'host'}:{os.getpid()}:{secrets.token_hex(3)}"


def attempt_event(entry: OutboxEntry, status: str, reason: str = "") -> dict:
    """The ``notification_attempt`` event of one attempt, with the notified event's ids."""
    said = f"; {reason}" if reason else ""
    return ev.event(
        ev.NOTIFICATION_ATTEMPT,
        f"notification {entry.kind} to {entry.target}: {status} (attempt {entry.attempt}{said})",
        to_rfc3339(now()),
        target=entry.target,
        attempt=entry.attempt,
        status=status,
        reason=reason,
        mission_id=entry.event.get("mission_id"),
        task_id=entry.event.get("task_id"),
        agent_id=entry.event.get("agent_id"),
    )


class Notifier:
    """Routes and delivers a town's notifications to its ``[[notify]]`` targets."""

    def __init__(
        self,
        town,
        policy: DeliveryPolicy | None = None,
        *,
        targets: tuple[NotifyTarget, ...] | None = None,
    ):
        """``town``: a :class:`tinytown.store.Town`; ``targets``: default the town's config."""
        self.town, self.policy = town, policy or DeliveryPolicy()
        chosen = town.config.notify if targets is None else targets
        self.targets = {t.name: t for t in chosen}
        self.outbox = Outbox.of(town)
        self.consumer = consumer_name()
        slowest = max((t.timeout_secs for t in chosen), default=0)
        self.claim_idle_ms = int(1000 * max(self.policy.claim_idle_secs, 2 * slowest + 1))
        self.session = requests.Session()
        self.stopped = threading.Event()
        self.between_attempts = threading.Event()  # clear while an attempt sends and records
        self.between_attempts.set()
        self.threads: list[threading.Thread] = []
        self._ready = False
        self._next_scan = self._next_router_scan = self._next_forget = 0.0

    # -- threads ------------------------------------------------------------------------------

    def start(self) -> Notifier:
        """Start the router and deliverer threads (none when no target is configured)."""
        if not self.targets:
            log.info("event=notify_off reason=no_targets")
            return self
        for name, step in (("router", self._route_step), ("deliverer", self._deliver_step)):
            thread = threading.Thread(
                target=self._run, args=(name, step), name=f"tinytown-notify-{name}", daemon=True
            )
            thread.start()
            self.threads.append(thread)
        log.info(
            "event=notify_started targets=%s consumer=%s",
            json.dumps(",".join(self.targets)),
            self.consumer,
        )
        return self

    def stop(self, timeout_secs: float | None = None) -> None:
        """Stop the threads (each ends within one blocking-read slice) and, best effort, leave
        the consumer groups if this notifier holds nothing."""
        self.stopped.set()
        for thread in self.threads:
            thread.join(timeout_secs)
        try:
            self.outbox.forget_consumers(NOTIFY_CONSUMER_FORGET_SECS * 1000, self.consumer)
        except redis.RedisError:
            pass

    def finish_sending(self, timeout_secs: float) -> bool:
        """Start no new attempt, and wait up to ``timeout_secs`` for the one being sent to be
        answered and recorded (townhall's graceful stop: a notification cut off mid-send would
        be taken over and sent again). True when none is left in flight."""
        self.stopped.set()
        return self.between_attempts.wait(timeout_secs)

    def _run(self, name: str, step) -> None:
        def prepared_step() -> None:
            self.prepare()
            step()

        run_duty(
            "notify",
            prepared_step,
            self.stopped,
            log,
            retry_secs=self.policy.error_retry_secs,
            fields={"thread": name},
            describe=_where,
        )

    def prepare(self) -> None:
        """Create the consumer groups if missing (the router's at the newest event: only events
        after this are notified). The threads and :meth:`run_once` call it themselves."""
        if not self._ready:
            self.outbox.ensure_groups()
            self._ready = True

    @property
    def block_ms(self) -> int:
        """One blocking read's wait: never past a slice, so never near the socket timeout."""
        return max(1, min(self.policy.block_ms, defaults.EVENTS_BLOCK_SLICE_MS))

    def _route_step(self) -> None:
        self.route(self.block_ms)

    def _deliver_step(self) -> None:
        wait_ms = int(max(0.0, self._next_scan - time.monotonic()) * 1000)
        self.deliver(min(self.block_ms, max(1, wait_ms)))

    # -- one pass -----------------------------------------------------------------------------

    def run_once(self, timeout_ms: int = 0) -> Pass:
        """Route what the event stream holds (waiting up to ``timeout_ms``, at most one
        ``EVENTS_BLOCK_SLICE_MS`` slice, for it), then deliver new entries and every retry or
        orphan that is due. For tests and ``tt``."""
        self.prepare()
        routed = self.route(min(timeout_ms, defaults.EVENTS_BLOCK_SLICE_MS))
        attempts = self.deliver(0, scan=True)
        return Pass(routed, attempts)

    def route(self, block_ms: int) -> int:
        """Route new events (and, now and then, those a dead router left); returns how many
        were notifications."""
        rows = []
        if time.monotonic() >= self._next_router_scan:
            idle_ms = int(self.policy.router_claim_idle_secs * 1000)
            rows += self.outbox.stale_events(self.consumer, idle_ms, NOTIFY_ROUTE_BATCH)
            self._next_router_scan = time.monotonic() + self.policy.router_claim_idle_secs
        rows += self.outbox.read_events(self.consumer, NOTIFY_ROUTE_BATCH, 0 if rows else block_ms)
        entries, routed = [], 0
        for event_id, doc in rows:
            kind = ev.notification_kind(doc) if doc else None
            if kind is None:
                continue
            routed += 1
            for target in wanted_by(self.targets.values(), kind, doc):
                key = idempotency_key(self.town.config.name, event_id, target.name)
                entries.append(entry_fields(key, target.name, kind, doc))
        self.outbox.route([event_id for event_id, _ in rows], entries)
        return routed

    def deliver(self, block_ms: int, *, scan: bool = False) -> int:
        """Attempt what is due (when the scan time has come, or ``scan``), then new entries,
        waiting up to ``block_ms`` for them; returns how many attempts were made."""
        attempts = 0
        if scan or time.monotonic() >= self._next_scan:
            attempts += self._deliver_due()
        for entry in self.outbox.read_new(self.consumer, NOTIFY_DELIVER_BATCH, block_ms):
            self.attempt(entry)
            attempts += 1
        return attempts

    def _deliver_due(self) -> int:
        """Claim and attempt parked entries whose backoff has passed and entries whose
        deliverer died; plan the next scan for the earliest parked retry."""
        clock = time.monotonic()
        self._next_scan = clock + self.policy.scan_interval_secs  # attempts below may bring it in
        if clock >= self._next_forget:
            self.outbox.forget_consumers(NOTIFY_CONSUMER_FORGET_SECS * 1000)
            self._next_forget = clock + NOTIFY_CONSUMER_FORGET_SECS / 24
        attempts = 0
        for row in self.outbox.pending(NOTIFY_PENDING_SCAN):
            min_idle_ms = self._min_idle_ms(row)
            if row.idle_ms < min_idle_ms:
                due = clock + (min_idle_ms - row.idle_ms) / 1000
                self._next_scan = min(self._next_scan, due)
                continue
            entry = self.outbox.claim(self.consumer, row, min_idle_ms)
            if entry is not None:
                if not row.parked:
                    log.warning(
                        "event=notification_taken_over key=%s target=%s from=%s attempt=%d",
                        entry.key,
                        entry.target,
                        row.consumer,
                        entry.attempt,
                    )
                self.attempt(entry)
                attempts += 1
        return attempts

    def _min_idle_ms(self, row: Pending) -> int:
        if row.parked:
            p = self.policy
            return int(backoff_secs(row.deliveries, p.backoff_base_secs, p.backoff_max_secs) * 1000)
        return self.claim_idle_ms

    def attempt(self, entry: OutboxEntry) -> Outcome | None:
        """Send one entry held by this notifier and record the outcome (None: not sent; after
        :meth:`finish_sending`, left held for another deliverer's take-over)."""
        if self.stopped.is_set():
            return None
        self.between_attempts.clear()
        try:
            return self._attempt(entry)
        finally:
            self.between_attempts.set()

    def _attempt(self, entry: OutboxEntry) -> Outcome | None:
        p = self.policy
        event, stale = self._as_of_now(entry)
        if stale:  # not worth a ping any more: recorded, not sent
            self.outbox.delivered(entry, attempt_event(entry, "skipped", stale))
            log.info(
                "event=notification_skipped target=%s kind=%s key=%s reason=%s",
                entry.target,
                entry.kind,
                entry.key,
                json.dumps(stale),
            )
            return None
        target = self.targets.get(entry.target)
        if target is None:
            self._bury(entry, "the target is no longer configured")
            return None
        if entry.attempt > p.max_attempts:  # its deliverers died: attempts with no answer
            self._bury(entry, f"no answer recorded after {p.max_attempts} attempts")
            return None
        config = self.town.config
        link = link_for(config.townhall.public_url, entry.kind, event)
        notification = Notification(
            entry.key, entry.kind, config.name, event, int(time.time()), link
        )
        outcome = send(target, notification, self.session)
        if outcome.ok:
            self.outbox.delivered(entry, attempt_event(entry, "delivered", outcome.reason))
            log.info(
                "event=notification_delivered target=%s kind=%s key=%s attempt=%d status=%s",
                target.name,
                entry.kind,
                entry.key,
                entry.attempt,
                outcome.status,
            )
        elif entry.attempt >= p.max_attempts:
            self._bury(entry, outcome.reason)
        else:
            self.outbox.park(entry, attempt_event(entry, "failed", outcome.reason))
            wait = backoff_secs(entry.attempt, p.backoff_base_secs, p.backoff_max_secs)
            self._next_scan = min(self._next_scan, time.monotonic() + wait)
            log.warning(
                "event=notification_failed target=%s kind=%s key=%s attempt=%d reason=%s "
                "retry_in_secs=%g",
                target.name,
                entry.kind,
                entry.key,
                entry.attempt,
                json.dumps(outcome.reason),
                wait,
            )
        return outcome

    def _as_of_now(self, entry: OutboxEntry) -> tuple[dict, str]:
        """The event to send, with its mission's title (``mission_title``) when it names one
        that still exists; and why it is not worth sending any more ("" when it is): a mission
        that asked for help and has ended since (its ping was parked while the target was
        down)."""
        event = dict(entry.event)
        mission_id = event.get("mission_id")
        mission = self.town.missions.find(mission_id) if mission_id else None
        if mission is None:
            return event, ""
        if mission.data.get("title"):
            event["mission_title"] = mission.data["title"]
        if entry.kind == ev.NOTIFY_MISSION_HELP and mission.terminal:
            return event, f"the mission is {mission.state} now"
        return event, ""

    def _bury(self, entry: OutboxEntry, reason: str) -> None:
        self.outbox.bury(entry, attempt_event(entry, "dead", reason), reason)
        log.error(
            "event=notification_dead target=%s kind=%s key=%s attempts=%d reason=%s",
            entry.target,
            entry.kind,
            entry.key,
            entry.attempt,
            json.dumps(reason),
        )
