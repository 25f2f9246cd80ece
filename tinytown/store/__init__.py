"""The one door to Redis: records, their atomic state changes, and every read the town makes.

``Town`` is the one object the API, the CLI, the worker, the keeper and recovery hold: the
config, a verified Redis client, the town's key names and the stores over them. Nothing outside
this package (and the connection set-up in :mod:`tinytown.connection`) sends a Redis command;
``tests/test_structure.py`` holds the code to that. Each state change updates the record and its
index sets in one Lua script, so counts stay exact under concurrency.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from tinytown.config import Config
from tinytown.core.keys import Keys
from tinytown.store.agent_index import upgrade_index
from tinytown.store.agents import AgentStore
from tinytown.store.counts import TownCounts, town_counts
from tinytown.store.docket import Docket
from tinytown.store.dockets import Dockets
from tinytown.store.events import Events
from tinytown.store.inbox import InboxStore
from tinytown.store.lease import Lease
from tinytown.store.missions import MissionStore
from tinytown.store.output import TaskOutput
from tinytown.store.page_sessions import PageSessions
from tinytown.store.samples import Samples
from tinytown.store.tasks import TaskStore


@dataclass
class Town:
    config: Config
    redis: redis.Redis

    def __post_init__(self) -> None:
        self.keys = Keys(self.config.name)
        self.tasks = TaskStore(self.redis, self.keys)
        self.agents = AgentStore(self.redis, self.keys, self.config.agent.heartbeat_interval_secs)
        self.missions = MissionStore(self.redis, self.keys)
        self.inbox = InboxStore(self.redis, self.keys)
        self.dockets = Dockets(self.redis, self.keys)
        self.events = Events(self.redis, self.keys)
        self.output = TaskOutput(self.redis, self.keys)  # tasks' CLI output as it runs
        self.samples = Samples(self.redis, self.keys)
        self.page_sessions = PageSessions(self.redis, self.keys)  # status-page log-ins

    @classmethod
    def connect(cls, config: Config, *, start_server: bool = True) -> Town:
        """Connect (starting the embedded server when it is the town's own) and verify Redis."""
        from tinytown.connection.client import connect

        town = cls(config, connect(config, start_server=start_server))
        upgrade_index(town.agents)
        return town

    def docket(self, agent_id: str) -> Docket:
        """One worker's view of the docket, with a connection of its own for the blocking read."""
        return Docket(self, agent_id)

    def counts(self, *, idle_times: bool = False) -> TownCounts:
        """Every count the scaling signal and metrics need, in one round trip."""
        return town_counts(self.redis, self.keys, self.agents, idle_times=idle_times)

    def lease(self, key: str, ttl_ms: int) -> Lease:
        return Lease(self.redis, key, ttl_ms)

    def ping_ms(self) -> float:
        """One PING's round trip in milliseconds; raises if Redis does not answer PONG."""
        start = time.perf_counter()
        if not self.redis.ping():
            raise redis.ConnectionError("PING did not answer PONG")
        return (time.perf_counter() - start) * 1000

    def commands_processed(self) -> int:
        """The Redis server's count of commands processed since it started (every client's)."""
        return int(self.redis.info("stats").get("total_commands_processed", 0))

    def server_version(self) -> str:
        return str(self.redis.info("server").get("redis_version", ""))

    def close(self) -> None:
        self.redis.close()


__all__ = ["Town", "TaskStore", "AgentStore", "MissionStore", "InboxStore"]
