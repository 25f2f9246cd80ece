"""Redis records and their atomic state transitions.

``Town`` is the one object the API, the CLI and the worker hold: the config, a verified Redis
client, the town's key names and the stores over them. Each state change updates the record and
its index sets in one Lua script, so counts stay exact under concurrency.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from tinytown.config import Config
from tinytown.core.keys import Keys
from tinytown.store.agents import AgentStore
from tinytown.store.tasks import TaskStore


@dataclass
class Town:
    config: Config
    redis: redis.Redis

    def __post_init__(self) -> None:
        self.keys = Keys(self.config.name)
        self.tasks = TaskStore(self.redis, self.keys)
        self.agents = AgentStore(self.redis, self.keys, self.config.agent.heartbeat_interval_secs)

    @classmethod
    def connect(cls, config: Config, *, start_server: bool = True) -> "Town":
        """Connect (starting the embedded server when it is the town's own) and verify Redis."""
        from tinytown.connection.client import connect

        town = cls(config, connect(config, start_server=start_server))
        town.agents.upgrade_index()
        return town


__all__ = ["Town", "TaskStore", "AgentStore"]
