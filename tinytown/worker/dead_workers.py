"""An idle worker's share in recovering the work of workers that died.

Between its reads, a worker that is not paused looks once per ``claim_timeout_secs`` (an entry
cannot be taken over before it has been idle that long anyway) for one shared-docket entry idle
longer than ``claim_timeout_secs`` whose holder is dead, and takes it over
(:meth:`tinytown.store.docket.Docket.reclaim_one`; the worker then runs its task as a new
attempt, and looks for another right away). At the same pace it also returns to the backlog the
directed tasks of agents still recorded live but silent
(:func:`tinytown.recovery.recover_silent_workers`: nobody else reads their streams) and removes
the consumers of dead agents that hold nothing and have not read for two claim timeouts (so its
cost does not grow with the number of live workers). Townhall's keeper does the same sooner
(within a dead window); this is the fallback without it. Workers never change another agent's
state; townhall's keeper and ``tt recover`` do.
"""

from __future__ import annotations

from collections.abc import Callable

from tinytown.config import AgentConfig
from tinytown.recovery import recover_silent_workers
from tinytown.store import Town
from tinytown.store.docket import Docket, Entry


class DeadWorkers:
    def __init__(
        self, with_redis: Callable[..., object], log: Callable[..., None], agent_cfg: AgentConfig
    ):
        """``with_redis``: the worker's :class:`tinytown.worker.retry.RedisRetry`; ``agent_cfg``:
        its ``[agent]`` settings."""
        self.with_redis, self.log = with_redis, log
        self.claim_timeout_secs = agent_cfg.claim_timeout_secs
        self.last_take_over = self.last_recovery = 0.0  # time.monotonic() of the last look

    def due_in(self, t: float) -> float:
        """Seconds from ``t`` (monotonic) until the next look is due (at least 1 ms)."""
        due = min(self.last_take_over, self.last_recovery) + self.claim_timeout_secs
        return max(0.001, due - t)

    def entry_to_take_over(self, t: float, docket: Docket) -> Entry | None:
        """Once per claim timeout at ``t`` (monotonic): a dead holder's entry, now this
        worker's."""
        if t - self.last_take_over < self.claim_timeout_secs:
            return None
        self.last_take_over = t
        entry = self.with_redis("reclaim", docket.reclaim_one)
        if entry is not None:
            holder = entry.reclaimed_from
            self.log("entry_reclaimed", task=entry.task_id, entry=entry.entry_id, holder=holder)
            self.last_take_over = 0.0  # look for more right after this one
        return entry

    def recover(self, t: float, town: Town, docket: Docket) -> None:
        """Once per claim timeout at ``t``: silent agents' directed tasks, dead consumers."""
        if t - self.last_recovery < self.claim_timeout_secs:
            return
        self.last_recovery = t
        returned = self.with_redis("recover", recover_silent_workers, town)
        if returned:
            self.log("directed_tasks_returned", count=returned)
        silent_ms = 2 * self.claim_timeout_secs * 1000
        for consumer in self.with_redis("forget", docket.forget_dead_consumers, silent_ms):
            self.log("consumer_removed", consumer=consumer)
