"""Mission records (upstream §4.7): JSON documents, their work items, watches and log.

A mission is a JSON string at ``mission:<id>``; work items and watches are JSON values in the
hashes ``mission:<id>:work`` and ``mission:<id>:watch``; its log is a capped list. Every mission
id is in the ``missions`` zset (scored by creation time) so listing needs no ``KEYS``; running
ones are also in ``mission:active``. Lifecycle changes are optimistic transactions (``WATCH``) so
the document and the active set never disagree. The dispatcher that plans and assigns work is
separate; this module only keeps the records.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from tinytown.core.clock import epoch_us, now
from tinytown.core.errors import InvalidTransition, NotFound, TinytownError
from tinytown.core.keys import Keys
from tinytown.core.records import new_id
from tinytown.core.states import MISSION, MISSION_DEFAULT_STATE, TERMINAL_MISSION_STATES

MISSION_LOG_MAX_LINES = 100
DEFAULT_POLICY = {
    "max_parallel_items": 2,
    "reviewer_required": True,
    "auto_merge": False,
    "watch_interval_secs": 180,
}


def json_now(ts: datetime | None = None) -> str:
    """Upstream's JSON-document timestamp form (``…Z``)."""
    return (ts or now()).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Mission:
    data: dict[str, Any]

    @property
    def id(self) -> str:
        return self.data["id"]

    @property
    def state(self) -> str:
        return self.data.get("state", MISSION_DEFAULT_STATE)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_MISSION_STATES

    @classmethod
    def decode(cls, raw: str | None) -> Mission | None:
        if not raw:
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        return cls(data) if isinstance(data, dict) and "id" in data else None

    def encode(self) -> str:
        return json.dumps(self.data)


def new_mission(objectives: list[dict], policy: dict | None = None) -> Mission:
    ts = json_now()
    return Mission(
        {
            "id": new_id(),
            "objective_refs": objectives,
            "state": MISSION_DEFAULT_STATE,
            "policy": {**DEFAULT_POLICY, **(policy or {})},
            "created_at": ts,
            "updated_at": ts,
            "next_wake_at": None,
            "blocked_reason": None,
            "dispatcher_last_tick_at": None,
            "dispatcher_last_progress_at": None,
            "dispatcher_last_help_request_at": None,
            "dispatcher_last_help_request_reason": None,
            "dispatcher_help_request_attempts": 0,
        }
    )


def _decode_values(values) -> list[dict]:
    out = []
    for raw in values:
        try:
            item = json.loads(raw)
        except ValueError:
            continue
        if isinstance(item, dict):
            out.append(item)
    return sorted(out, key=lambda i: (i.get("created_at") or "", i.get("id") or ""))


class MissionStore:
    def __init__(self, r: redis.Redis, keys: Keys):
        self.r, self.keys = r, keys

    # -- create and read --------------------------------------------------------------------

    def create(
        self, objectives: list[dict], policy: dict | None = None, *, start: bool = True
    ) -> Mission:
        """Save a new mission; ``start`` moves it to ``running`` and into the active set."""
        mission = new_mission(objectives, policy)
        if start:
            mission.data["state"] = MISSION["start"].target
        pipe = self.r.pipeline(transaction=True)
        pipe.set(self.keys.mission(mission.id), mission.encode())
        pipe.zadd(self.keys.missions, {mission.id: epoch_us(now())})
        if start:
            pipe.sadd(self.keys.missions_active, mission.id)
        pipe.execute()
        self.log(mission.id, f"Mission created with {len(objectives)} objective(s)")
        return mission

    def find(self, mission_id: str) -> Mission | None:
        return Mission.decode(self.r.get(self.keys.mission(mission_id)))

    def get(self, mission_id: str) -> Mission:
        mission = self.find(mission_id)
        if mission is None:
            raise NotFound(f"mission {mission_id} not found")
        return mission

    def active(self) -> list[Mission]:
        """The missions in the active set (O(active missions), not every mission ever made)."""
        ids = sorted(self.r.smembers(self.keys.missions_active))
        docs = self.r.mget([self.keys.mission(i) for i in ids]) if ids else []
        return [m for m in (Mission.decode(d) for d in docs) if m is not None]

    def list(
        self, *, active_only: bool = False, offset: int = 0, limit: int = 100
    ) -> tuple[list[Mission], int]:
        """Missions newest first (or only active ones), a page of them, and the total."""
        if active_only:
            ids = sorted(self.r.smembers(self.keys.missions_active))
            total, ids = len(ids), ids[offset : offset + limit]
        else:
            pipe = self.r.pipeline(transaction=False)
            pipe.zrevrange(self.keys.missions, offset, offset + limit - 1)
            pipe.zcard(self.keys.missions)
            ids, total = pipe.execute()
        docs = self.r.mget([self.keys.mission(i) for i in ids]) if ids else []
        missions = [m for m in (Mission.decode(d) for d in docs) if m is not None]
        if active_only:
            missions.sort(key=lambda m: m.data.get("created_at") or "", reverse=True)
        return missions, total

    def work_items(self, mission_id: str, status: str | None = None) -> list[dict]:
        items = _decode_values(self.r.hvals(self.keys.mission_work(mission_id)))
        return [i for i in items if status is None or i.get("status") == status]

    def work_item(self, mission_id: str, item_id: str) -> dict:
        raw = self.r.hget(self.keys.mission_work(mission_id), item_id)
        items = _decode_values([raw]) if raw else []
        if not items:
            raise NotFound(f"work item {item_id} not found in mission {mission_id}")
        return items[0]

    def watches(self, mission_id: str) -> list[dict]:
        return _decode_values(self.r.hvals(self.keys.mission_watch(mission_id)))

    def events(self, mission_id: str, limit: int = 50) -> list[str]:
        return self.r.lrange(self.keys.mission_log(mission_id), 0, limit - 1)

    def log(self, mission_id: str, text: str) -> None:
        line = f"[{now().strftime('%Y-%m-%d %H:%M:%S')}] {text}"
        pipe = self.r.pipeline(transaction=True)
        pipe.lpush(self.keys.mission_log(mission_id), line)
        pipe.ltrim(self.keys.mission_log(mission_id), 0, MISSION_LOG_MAX_LINES - 1)
        pipe.execute()

    # -- lifecycle --------------------------------------------------------------------------

    def _change(self, mission_id: str, mutate) -> tuple[Mission, str]:
        """Apply ``mutate(mission) -> active?`` atomically; returns the mission and old state."""
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
            result.update(mission=mission, old=old)

        self.r.transaction(txn, key)
        return result["mission"], result["old"]

    def stop(self, mission_id: str, *, force: bool = False) -> Mission:
        def mutate(m: Mission):
            move = MISSION["stop_forced" if force else "stop"]
            if not move.allows(m.state):
                raise InvalidTransition("mission", mission_id, m.state, "stopped")
            m.data["state"] = move.target
            m.data["blocked_reason"] = "Stopped by user (forced)" if force else "Stopped by user"
            m.data["dispatcher_last_help_request_at"] = None
            m.data["dispatcher_last_help_request_reason"] = None
            m.data["dispatcher_help_request_attempts"] = 0
            return False

        mission, _ = self._change(mission_id, mutate)
        self.log(mission_id, f"Mission stopped ({mission.state})")
        return mission

    def resume(self, mission_id: str) -> tuple[Mission, str]:
        def mutate(m: Mission):
            if not MISSION["resume"].allows(m.state):
                raise TinytownError(f"mission is {m.state} and cannot be resumed")
            m.data["state"] = MISSION["resume"].target
            m.data["blocked_reason"] = None
            m.data["next_wake_at"] = None
            return True

        mission, old = self._change(mission_id, mutate)
        if old != MISSION["resume"].target:
            self.log(mission_id, "Mission resumed")
        return mission, old

    def complete(self, mission_id: str) -> tuple[Mission, str]:
        def mutate(m: Mission):
            if not MISSION["complete"].allows(m.state):
                raise InvalidTransition("mission", mission_id, m.state, "completed")
            m.data["state"] = MISSION["complete"].target
            m.data["blocked_reason"] = None
            return False

        mission, old = self._change(mission_id, mutate)
        if old != MISSION["complete"].target:
            self.log(mission_id, "Mission marked completed")
        return mission, old

    def fail(self, mission_id: str, reason: str) -> Mission:
        def mutate(m: Mission):
            if not MISSION["fail"].allows(m.state):
                raise InvalidTransition("mission", mission_id, m.state, "failed")
            m.data["state"] = MISSION["fail"].target
            m.data["blocked_reason"] = reason
            return False

        mission, _ = self._change(mission_id, mutate)
        self.log(mission_id, f"Mission marked failed: {reason}")
        return mission

    def delete(self, mission_id: str, *, force: bool = False) -> None:
        """Delete a mission and its work, watches, log and control notes (not a held lease)."""
        mission = self.get(mission_id)
        if not force and self.r.sismember(self.keys.missions_active, mission_id):
            raise InvalidTransition(
                "mission", mission_id, f"{mission.state} and active", "deleted without force"
            )
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(
            self.keys.mission(mission_id),
            self.keys.mission_work(mission_id),
            self.keys.mission_watch(mission_id),
            self.keys.mission_log(mission_id),
            self.keys.mission_control(mission_id),
        )
        pipe.srem(self.keys.missions_active, mission_id)
        pipe.zrem(self.keys.missions, mission_id)
        pipe.execute()

    # -- work items and watches -------------------------------------------------------------

    def update_work_item(
        self, mission_id: str, item_id: str, *, status: str | None, artifacts: list[str] | None
    ) -> dict:
        self.get(mission_id)
        key = self.keys.mission_work(mission_id)
        result: dict = {}

        def txn(pipe: redis.client.Pipeline) -> None:
            raw = pipe.hget(key, item_id)
            items = _decode_values([raw]) if raw else []
            if not items:
                raise NotFound(f"work item {item_id} not found in mission {mission_id}")
            item = items[0]
            if status is not None:
                item["status"] = status
            if artifacts:
                item["artifact_refs"] = list(item.get("artifact_refs") or []) + artifacts
            item["updated_at"] = json_now()
            pipe.multi()
            pipe.hset(key, item_id, json.dumps(item))
            result["item"] = item

        self.r.transaction(txn, key)
        return result["item"]

    def snooze_watch(self, mission_id: str, watch_id: str, duration_secs: int) -> dict:
        self.get(mission_id)
        key = self.keys.mission_watch(mission_id)
        result: dict = {}

        def txn(pipe: redis.client.Pipeline) -> None:
            raw = pipe.hget(key, watch_id)
            items = _decode_values([raw]) if raw else []
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

    def summary(self, mission_id: str) -> dict:
        items, watches = self.work_items(mission_id), self.watches(mission_id)
        count = lambda s: sum(1 for i in items if i.get("status") == s)  # noqa: E731
        return {
            "total_work_items": len(items),
            "pending": count("pending"),
            "ready": count("ready"),
            "running": count("running") + count("assigned"),
            "done": count("done"),
            "blocked": count("blocked"),
            "active_watches": sum(1 for w in watches if w.get("status") == "active"),
        }
