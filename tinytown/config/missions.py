"""``[missions]`` in ``tinytown.toml``: where the mission dispatcher runs and how often it ticks.

[missions]
dispatcher = true    # run the dispatcher inside townhall (false: run `tt mission dispatch`)
tick_secs = 5        # the backstop tick; events wake the dispatcher at once
lease_secs = 15      # one dispatcher per mission; a dead one's missions move on after this
"""

from __future__ import annotations

from dataclasses import dataclass

from tinytown.config.table import Table
from tinytown.core import defaults


@dataclass(frozen=True)
class MissionsConfig:
    dispatcher: bool = True
    tick_secs: int = defaults.MISSION_TICK_SECS
    lease_secs: int = defaults.MISSION_LEASE_SECS


def missions_config(t: Table) -> MissionsConfig:
    tick = t.int_range("tick_secs", defaults.MISSION_TICK_SECS, 1, 300)
    lease = t.int_range("lease_secs", defaults.MISSION_LEASE_SECS, 2, 3600)
    if lease <= tick:
        raise t._fail(
            "lease_secs", lease, f"an integer above tick_secs ({tick}): a lease outlives a tick"
        )
    config = MissionsConfig(
        dispatcher=t.get("dispatcher", True, bool), tick_secs=tick, lease_secs=lease
    )
    t.check_unknown()
    return config
