"""Townhall's sampler: every ``SAMPLE_INTERVAL_SECS`` one process writes the town's queue depth,
tasks in flight and live agents to a capped stream, which the status page draws as a chart.
One round trip for the turn, one for the counts and one to write, per interval — but a quiet
interval (the process's event pump saw no event since the last sample) is skipped, up to
``SAMPLE_QUIET_MAX_SECS``: nothing the chart shows can have changed, and the chart holds each
value until the next sample.
"""

from __future__ import annotations

import logging
import threading
import time

from tinytown.core import defaults
from tinytown.store import Town
from tinytown.store.duty import run_duty
from tinytown.store.pump import EventPump

log = logging.getLogger("tinytown.townhall")


class Sampler:
    def __init__(
        self,
        town: Town,
        interval_secs: float = defaults.SAMPLE_INTERVAL_SECS,
        pump: EventPump | None = None,
    ):
        self.town, self.interval_secs, self.pump = town, interval_secs, pump
        self.sampled_seq = -1  # the pump seq at the last sample
        self.sampled_at = 0.0  # time.monotonic() of the last sample
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
        seq = self.pump.seq if self.pump is not None and self.pump.healthy else -1
        quiet = seq != -1 and seq == self.sampled_seq
        if quiet and time.monotonic() - self.sampled_at < defaults.SAMPLE_QUIET_MAX_SECS:
            return self.interval_secs
        self.sampled_seq, self.sampled_at = seq, time.monotonic()
        if self.town.samples.take_turn(int(self.interval_secs * 1000 * 0.9)):
            counts = self.town.counts()
            self.town.samples.record(
                counts.pending_tasks, counts.in_flight_tasks, counts.agents.live_active
            )
        return self.interval_secs
