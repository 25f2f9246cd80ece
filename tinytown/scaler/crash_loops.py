"""Crash loops: workers that exit non-zero right after they start are crashing, not finishing
(bad configuration, Redis unreachable), and replacing them every pass would only burn starts.

After ``crash_loop_after_exits`` quick non-zero exits in a row an outpost holds starts for the
breaker backoff; after the hold it takes one new worker per pass as a trial until an exit resets
the count. Pure: exits in, the outpost's watch and placement limits out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field

from tinytown.scaler.containers import Worker
from tinytown.scaler.epoch import iso
from tinytown.scaler.placement import Breaker, OutpostView


@dataclass(frozen=True)
class CrashWatch:
    """One outpost's quick non-zero exits in a row, and the hold on new starts they opened."""

    streak: int = 0
    hold: Breaker = field(default_factory=Breaker)  # open: no new workers on this outpost
    last_exit_code: int | None = None


def is_crash(worker: Worker, quick_exit_secs: float) -> bool:
    """A non-zero exit within ``quick_exit_secs`` of the start. Exit 0 (idle exit, drain) never
    is, nor is a failure after a long run."""
    return (
        worker.exit_code not in (None, 0)
        and worker.ran_secs is not None
        and worker.ran_secs < quick_exit_secs
    )


def watch_exits(
    watch: CrashWatch,
    exits: Iterable[Worker],
    now: float,
    after_exits: int,
    quick_exit_secs: float,
    backoff_secs: float,
    max_secs: float,
) -> tuple[CrashWatch, Worker | None]:
    """Count exits seen for the first time, oldest first. A crash adds one to the streak and
    anything else resets it (and lifts the hold). When the streak reaches ``after_exits`` and no
    hold is open, a hold opens for the breaker backoff, doubling per hold in one crash loop.
    Returns the new watch and the exit that opened a hold this time, if one did."""
    opened = None
    if after_exits <= 0:
        return watch, None
    for w in sorted(exits, key=lambda w: w.finished_at or 0.0):
        if not is_crash(w, quick_exit_secs):
            watch, opened = CrashWatch(), None
            continue
        hold = watch.hold
        streak = watch.streak + 1
        if streak >= after_exits and not hold.is_open(now):
            hold = hold.failed(
                now,
                f"{streak} workers in a row exited within "
                f"{quick_exit_secs:g}s, the last with code {w.exit_code}",
                backoff_secs,
                max_secs,
            )
            opened = w
        watch = CrashWatch(streak, hold, w.exit_code)
    return watch, opened


def crash_limited(
    view: OutpostView, watch: CrashWatch, now: float, after_exits: int
) -> OutpostView:
    """The outpost as placement should see it: held while the hold is open; after it, in a crash
    loop still, one new worker per pass as a trial."""
    if watch.hold.is_open(now):
        return dataclasses.replace(
            view, hold=f"{watch.hold.last_error}; until {iso(watch.hold.open_until)}"
        )
    if after_exits and watch.streak >= after_exits:
        return dataclasses.replace(view, max_workers=min(view.max_workers, view.live + 1))
    return view
