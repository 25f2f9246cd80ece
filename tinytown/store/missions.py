"""Mission records in Redis (upstream §4.7): the document, its work items, notes and log.

A mission is a JSON string at ``mission:<id>``; work items are JSON values in the hash
``mission:<id>:work``, notes (control messages) in ``mission:<id>:control``; its log is a capped
list. Every mission id is in the ``missions`` zset (scored by creation time) so listing needs
no ``KEYS``; running ones are also in ``mission:active``. Every change writes the documents, the
active set and its events (:mod:`tinytown.core.events`) in one ``MULTI``; changes that depend on
what is stored are optimistic (``WATCH``), so the document, the items and the active set never
disagree. The dispatcher (:mod:`tinytown.missions.dispatcher`) decides; this module keeps.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import redis

from tinytown.core import events as ev
from tinytown.core.clock import epoch_us, now, to_rfc3339
from tinytown.core.errors import InvalidTransition, NotFound, TinytownError
from tinytown.core.keys import Keys
from tinytown.core.mission_plan import Plan
from tinytown.core.missions import (
    FORCED_STOP_REASON,
    STOPPED_REASON,
    Mission,
    decode_items,
    json_now,
    new_mission,
    summary,
)
from tinytown.core.records import new_id
from tinytown.core.states import MISSION, TERMINAL_MISSION_STATES
from tinytown.core.work_items import new_item_documents
from tinytown.store.events import Events
from tinytown.store.short_ids import resolve_reference, zset_members

MISSION_LOG_MAX_LINES = 100
NOTES_MAX = 200  # notes kept per mission (processed ones are dropped first)


@dataclass(frozen=True)
class Snapshot:
    raw: str | None  # the mission's document as stored
    work: dict[str, str]  # its work items as stored (id → JSON)
    items: list[dict]  # the same, decoded, in order

    @property
    def mission(self) -> dict | None:
        return json.loads(self.raw) if self.raw else None


class MissionStore:
    def __init__(self, r: redis.Redis, keys: Keys):
        self.r, self.keys = r, keys
        self.events = Events(r, keys)

    # -- create and read --------------------------------------------------------------------

    def create(
        self,
        items: list[dict],
        policy: dict,
        *,
        objectives: list[dict] = (),
        title: str | None = None,
        start: bool = True,
    ) -> Mission:
        """Save a new mission with its work items (checked by ``core.work_items``); ``start``
        moves it to ``running`` and into the active set, with its event, in the same step."""
        created = now()
        ts, mission_id = json_now(created), new_id()
        mission = new_mission(mission_id, list(objectives), policy, title, ts)
        docs = new_item_documents(mission_id, items, ts)
        pipe = self.r.pipeline(transaction=True)
        if start:
            mission.data["state"] = MISSION["start"].target
            pipe.sadd(self.keys.missions_active, mission_id)
        pipe.set(self.keys.mission(mission_id), mission.encode())
        pipe.zadd(self.keys.missions, {mission_id: epoch_us(created)})
        if docs:
            pipe.hset(
                self.keys.mission_work(mission_id), mapping={d["id"]: json.dumps(d) for d in docs}
            )
        self._queue_event(
            pipe,
            ev.MISSION_STATE_CHANGED,
            f"mission {mission_id} created with {len(docs)} work item(s), {mission.state}",
            mission_id=mission_id,
            new_state=mission.state,
        )
        self._queue_log(pipe, mission_id, f"Mission created with {len(docs)} work item(s)")
        pipe.execute()
        return mission

    def find(self, mission_id: str) -> Mission | None:
        return Mission.decode(self.r.get(self.keys.mission(mission_id)))

    def get(self, mission_id: str) -> Mission:
        mission = self.find(mission_id)
        if mission is None:
            raise NotFound(f"mission {mission_id} not found")
        return mission

    def resolve(self, ref: str) -> str:
        """The mission id ``ref`` names: its id, or a unique short id (its first 8 or more hex
        digits; dashes may be left out).

        Cost: a full id costs no command. A short id reads the whole ``missions`` index, 10 000
        ids per ZRANGE: O(every mission kept) — for ``tt``, never a request or the dispatcher.
        Raises NotFound when no mission id begins with it and TinytownError naming the
        candidates when several do."""
        return resolve_reference("mission", ref, lambda: zset_members(self.r, self.keys.missions))

    def active_ids(self) -> list[str]:
        return sorted(self.r.smembers(self.keys.missions_active))

    def active(self) -> list[Mission]:
        """The missions in the active set (O(active missions), not every mission ever made)."""
        ids = self.active_ids()
        docs = self.r.mget([self.keys.mission(i) for i in ids]) if ids else []
        return [m for m in (Mission.decode(d) for d in docs) if m is not None]

    def list(
        self, *, active_only: bool = False, offset: int = 0, limit: int = 100
    ) -> tuple[list[Mission], int]:
        """Missions newest first (or only active ones), a page of them, and the total."""
        if active_only:  # newest first by the index's creation times, then the page
            ids = self.active_ids()
            made = self.r.zmscore(self.keys.missions, ids) if ids else []
            ids = [i for _, i in sorted(zip((m or 0 for m in made), ids), reverse=True)]
            total, ids = len(ids), ids[offset : offset + limit]
        else:
            pipe = self.r.pipeline(transaction=False)
            pipe.zrevrange(self.keys.missions, offset, offset + limit - 1)
            pipe.zcard(self.keys.missions)
            ids, total = pipe.execute()
        docs = self.r.mget([self.keys.mission(i) for i in ids]) if ids else []
        return [m for m in (Mission.decode(d) for d in docs) if m is not None], total

    def snapshot(self, mission_id: str) -> Snapshot:
        """The mission's document and work items as stored, for a dispatcher step."""
        pipe = self.r.pipeline(transaction=False)
        pipe.get(self.keys.mission(mission_id))
        pipe.hgetall(self.keys.mission_work(mission_id))
        raw, work = pipe.execute()
        return Snapshot(raw, work, decode_items(work.values()))

    def work_items(self, mission_id: str, status: str | None = None) -> list[dict]:
        items = decode_items(self.r.hvals(self.keys.mission_work(mission_id)))
        return [i for i in items if status is None or i.get("status") == status]

    def work_item(self, mission_id: str, item_id: str) -> dict:
        raw = self.r.hget(self.keys.mission_work(mission_id), item_id)
        items = decode_items([raw]) if raw else []
        if not items:
            raise NotFound(f"work item {item_id} not found in mission {mission_id}")
        return items[0]

    def watches(self, mission_id: str) -> list[dict]:
        return decode_items(self.r.hvals(self.keys.mission_watch(mission_id)))

    def summaries(self, mission_ids: list[str]) -> dict[str, dict]:
        """Each mission's counts and progress, in one round trip."""
        pipe = self.r.pipeline(transaction=False)
        for mid in mission_ids:
            pipe.hvals(self.keys.mission_work(mid))
        return {
            mid: summary(decode_items(values)) for mid, values in zip(mission_ids, pipe.execute())
        }

    def summary(self, mission_id: str) -> dict:
        return summary(self.work_items(mission_id), self.watches(mission_id))

    def log_lines(self, mission_id: str, limit: int = 50) -> list[str]:
        return self.r.lrange(self.keys.mission_log(mission_id), 0, limit - 1)

    # -- the dispatcher's step --------------------------------------------------------------

    def apply(self, mission_id: str, snap: Snapshot, plan: Plan, tick_at: str) -> bool:
        """Write a plan made from ``snap``: the items and the mission it changed, the active
        set, its events, and ``dispatcher_last_tick_at`` — only if the document and the items
        are still as in ``snap`` (else False: someone changed them; plan again)."""
        key, work_key = self.keys.mission(mission_id), self.keys.mission_work(mission_id)
        with self.r.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(key, work_key)
                if (
                    snap.raw is None
                    or pipe.get(key) != snap.raw
                    or pipe.hgetall(work_key) != (snap.work)
                ):
                    pipe.unwatch()
                    return False
                mission = Mission(plan.mission or json.loads(snap.raw))
                mission.data["dispatcher_last_tick_at"] = tick_at
                pipe.multi()
                pipe.set(key, mission.encode())
                if plan.items:
                    pipe.hset(work_key, mapping={i: json.dumps(d) for i, d in plan.items.items()})
                if mission.terminal:
                    pipe.srem(self.keys.missions_active, mission_id)
                for doc in plan.events:
                    for command in self.events.commands(doc):
                        pipe.execute_command(*command)
                pipe.execute()
                return True
            except redis.WatchError:
                return False

    def change_items(self, mission_id: str, items: dict[str, dict], events: list[dict]) -> None:
        """Write changed work items with their events in one step (a note's retry or redirect;
        the dispatcher's next step plans from them)."""
        if not items:
            return
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(
            self.keys.mission_work(mission_id),
            mapping={i: json.dumps(d) for i, d in items.items()},
        )
        for doc in events:
            for command in self.events.commands(doc):
                pipe.execute_command(*command)
        pipe.execute()

    # -- notes ------------------------------------------------------------------------------

    def add_note(self, mission_id: str, sender: str, body: str) -> dict:
        """A note (upstream's control message) for the dispatcher, with its event."""
        self.get(mission_id)
        note = {
            "id": new_id(),
            "mission_id": mission_id,
            "sender": sender,
            "body": body,
            "created_at": json_now(),
            "processed_at": None,
        }
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self.keys.mission_control(mission_id), note["id"], json.dumps(note))
        self._queue_event(
            pipe, ev.MISSION_EVENT, f"note from {sender}: {body[:200]}", mission_id=mission_id
        )
        pipe.execute()
        return note

    def pending_notes(self, mission_id: str) -> list[dict]:
        notes = decode_items(self.r.hvals(self.keys.mission_control(mission_id)))
        return [n for n in notes if not n.get("processed_at")]

    def note_processed(self, mission_id: str, note: dict, outcome: str) -> None:
        note = {**note, "processed_at": json_now(), "outcome": outcome}
        key = self.keys.mission_control(mission_id)
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(key, note["id"], json.dumps(note))
        self._queue_log(pipe, mission_id, f"Note from {note['sender']}: {outcome}")
        pipe.execute()
        if self.r.hlen(key) > NOTES_MAX:
            done = [n for n in decode_items(self.r.hvals(key)) if n.get("processed_at")]
            self.r.hdel(key, *[n["id"] for n in done[: len(done) // 2]] or ["-"])

    # -- lifecycle --------------------------------------------------------------------------

    def _change(self, mission_id: str, mutate: Callable[[Mission], bool | None], message: str):
        """Apply ``mutate(mission) -> active?`` atomically with its event and log line; returns
        the mission and its old state."""
        key = self.keys.mission(mission_id)
        result: dict = {}

        def txn(pipe: redis.client.Pipeline) -> None:
            mission = Mission.decode(pipe.get(key))
            if mission is None:
                raise NotFound(f"mission {mission_id} not found")
            old = mission.state
            active = mutate(mission)
            mission.data["updated_at"] = json_now()
            pipe.multi()
            pipe.set(key, mission.encode())
            if active is True:
                pipe.sadd(self.keys.missions_active, mission_id)
            elif active is False:
                pipe.srem(self.keys.missions_active, mission_id)
            if mission.state != old:
                reason = mission.data.get("blocked_reason")
                self._queue_event(
                    pipe,
                    ev.MISSION_STATE_CHANGED,
                    f"mission {mission_id} {mission.state}" + (f": {reason}" if reason else ""),
                    mission_id=mission_id,
                    old_state=old,
                    new_state=mission.state,
                    reason=reason,
                )
                self._queue_log(pipe, mission_id, message.format(state=mission.state))
            result.update(mission=mission, old=old)

        self.r.transaction(txn, key)
        return result["mission"], result["old"]

    @staticmethod
    def _clear_help(m: Mission) -> None:
        m.data["dispatcher_last_help_request_at"] = None
        m.data["dispatcher_last_help_request_reason"] = None
        m.data["dispatcher_help_request_attempts"] = 0

    def stop(self, mission_id: str, *, force: bool = False) -> Mission:
        def mutate(m: Mission):
            move = MISSION["stop_forced" if force else "stop"]
            if not move.allows(m.state):
                raise InvalidTransition("mission", mission_id, m.state, "stopped")
            m.data["state"] = move.target
            m.data["blocked_reason"] = FORCED_STOP_REASON if force else STOPPED_REASON
            self._clear_help(m)
            return False

        return self._change(mission_id, mutate, "Mission stopped ({state})")[0]

    def resume(self, mission_id: str, *, move: str = "resume") -> tuple[Mission, str]:
        """Back to ``running`` (``move`` "retry" also from ``failed``: a retry note)."""

        def mutate(m: Mission):
            if not MISSION[move].allows(m.state):
                raise TinytownError(f"mission is {m.state} and cannot be resumed")
            m.data["state"] = MISSION[move].target
            m.data["blocked_reason"] = None
            m.data["next_wake_at"] = None
            self._clear_help(m)
            return True

        return self._change(mission_id, mutate, "Mission resumed")

    def pause(self, mission_id: str, reason: str) -> Mission:
        def mutate(m: Mission):
            if not MISSION["pause"].allows(m.state):
                raise InvalidTransition("mission", mission_id, m.state, "paused")
            m.data["state"] = MISSION["pause"].target
            m.data["blocked_reason"] = reason
            return None

        return self._change(mission_id, mutate, "Mission paused")[0]

    def complete(self, mission_id: str) -> tuple[Mission, str]:
        def mutate(m: Mission):
            if not MISSION["complete"].allows(m.state):
                raise InvalidTransition("mission", mission_id, m.state, "completed")
            m.data["state"] = MISSION["complete"].target
            m.data["blocked_reason"] = None
            return False

        return self._change(mission_id, mutate, "Mission marked completed")

    def fail(self, mission_id: str, reason: str) -> Mission:
        def mutate(m: Mission):
            if not MISSION["fail"].allows(m.state):
                raise InvalidTransition("mission", mission_id, m.state, "failed")
            m.data["state"] = MISSION["fail"].target
            m.data["blocked_reason"] = reason
            return False

        # (the reason is a caller's text: braces in it are kept, never read as a field)
        escaped = reason.replace("{", "{{").replace("}", "}}")
        return self._change(mission_id, mutate, f"Mission marked failed: {escaped}")[0]

    def delete(self, mission_id: str, *, force: bool = False) -> None:
        """Delete a mission and its work, watches, log, notes and event stream; the town's
        stream gets its mission_deleted event. Without ``force`` an active mission is refused,
        checked under a WATCH of its document and the active set (a resume landing between the
        check and the delete makes the check run again)."""
        key, active = self.keys.mission(mission_id), self.keys.missions_active

        def txn(pipe: redis.client.Pipeline) -> None:
            mission = Mission.decode(pipe.get(key))
            if mission is None:
                raise NotFound(f"mission {mission_id} not found")
            if not force and pipe.sismember(active, mission_id):
                raise InvalidTransition(
                    "mission", mission_id, f"{mission.state} and active", "deleted without force"
                )
            doc = ev.event(
                ev.MISSION_DELETED,
                f"mission {mission_id} deleted (was {mission.state})",
                json_now(),
                mission_id=mission_id,
                old_state=mission.state,
            )
            pipe.multi()
            pipe.delete(
                key,
                self.keys.mission_work(mission_id),
                self.keys.mission_watch(mission_id),
                self.keys.mission_log(mission_id),
                self.keys.mission_control(mission_id),
                self.keys.mission_event_stream(mission_id),
            )
            pipe.srem(active, mission_id)
            pipe.zrem(self.keys.missions, mission_id)
            pipe.execute_command(*self.events.commands(doc)[0])  # (the town's: not its own)

        self.r.transaction(txn, key, active)

    # -- work items and watches (upstream's manual routes) ----------------------------------

    def update_work_item(
        self, mission_id: str, item_id: str, *, status: str | None, artifacts: list[str] | None
    ) -> dict:
        self.get(mission_id)
        key = self.keys.mission_work(mission_id)
        result: dict = {}

        def txn(pipe: redis.client.Pipeline) -> None:
            raw = pipe.hget(key, item_id)
            items = decode_items([raw]) if raw else []
            if not items:
                raise NotFound(f"work item {item_id} not found in mission {mission_id}")
            item = items[0]
            old = item.get("status")
            if status is not None:
                item["status"] = status
            if artifacts:
                item["artifact_refs"] = list(item.get("artifact_refs") or []) + artifacts
            item["updated_at"] = json_now()
            pipe.multi()
            pipe.hset(key, item_id, json.dumps(item))
            if status is not None and status != old:
                self._queue_event(
                    pipe,
                    ev.MISSION_EVENT,
                    f"work item {item.get('key') or item_id} set to {status} by hand",
                    mission_id=mission_id,
                    work_item_id=item_id,
                    old_state=old,
                    new_state=status,
                )
            result["item"] = item

        self.r.transaction(txn, key)
        return result["item"]

    def snooze_watch(self, mission_id: str, watch_id: str, duration_secs: int) -> dict:
        self.get(mission_id)
        key = self.keys.mission_watch(mission_id)
        result: dict = {}

        def txn(pipe: redis.client.Pipeline) -> None:
            raw = pipe.hget(key, watch_id)
            items = decode_items([raw]) if raw else []
            if not items:
                raise NotFound(f"watch {watch_id} not found in mission {mission_id}")
            watch = items[0]
            watch["status"] = "snoozed"
            watch["next_due_at"] = json_now(now() + timedelta(seconds=duration_secs))
            pipe.multi()
            pipe.hset(key, watch_id, json.dumps(watch))
            result["watch"] = watch

        self.r.transaction(txn, key)
        return result["watch"]

    # -- the log and events -----------------------------------------------------------------

    def _queue_log(self, pipe, mission_id: str, text: str, at: datetime | None = None) -> None:
        line = f"[{(at or now()).strftime('%Y-%m-%d %H:%M:%S')}] {text}"
        pipe.lpush(self.keys.mission_log(mission_id), line)
        pipe.ltrim(self.keys.mission_log(mission_id), 0, MISSION_LOG_MAX_LINES - 1)

    def _queue_event(self, pipe, event_type: str, message: str, **fields) -> None:
        doc = ev.event(event_type, message, to_rfc3339(now()), **fields)
        for command in self.events.commands(doc):
            pipe.execute_command(*command)

    def log(self, mission_id: str, text: str) -> None:
        pipe = self.r.pipeline(transaction=True)
        self._queue_log(pipe, mission_id, text)
        pipe.execute()


__all__ = ["MissionStore", "Mission", "TERMINAL_MISSION_STATES"]
