"""Townhall's sampler: every ``SAMPLE_INTERVAL_SECS`` one process writes the town's queue depth,
tasks in flight and live agents to a capped stream, which the status page draws as a chart.
One round trip for the turn, one for the counts and one to write, per interval.
"""

from __future__ import annotations

import logging
import threading

from tinytown.core import defaults
from tinytown.store import Town
from tinytown.store.duty import run_duty

log = logging.getLogger("tinytown.townhall")


class Sampler:
    def __init__(self, town: Town, interval_secs: float = defaults.SAMPLE_INTERVAL_SECS):
        self.town, self.interval_secs = town, interval_secs
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> Sampler:
        self.thread = threading.Thread(target=self.run, name="tinytown-sampler", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()

    def run(self) -> None:
        run_duty("sampler", self.sample, self.stopped, log, retry_secs=self.interval_secs)

    def sample(self) -> float:
        """Take this interval's sample if no other process has; returns the seconds to wait."""
        if self.town.samples.take_turn(int(self.interval_secs * 1000 * 0.9)):
            counts = self.town.counts()
            self.town.samples.record(
                counts.pending_tasks, counts.in_flight_tasks, counts.agents.live_active
            )
        return self.interval_secs
