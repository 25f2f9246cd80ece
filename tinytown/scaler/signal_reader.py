"""Reading the town's scaling signal for a pass, and waiting for it to change between passes.

One scaler serves one town: the ``--town`` it is given, else the first one townhall names. A
signal for any other town is refused (nothing is done that pass): a townhall that named a new
town each pass would otherwise get workers started past ``max_workers`` and the cost cap, which
count one town's containers.
"""

from __future__ import annotations

from tinytown.scaler.errors import ExitStatus, TownhallError
from tinytown.scaler.log import log
from tinytown.scaler.report import Report
from tinytown.scaler.townhall import Townhall
from tinytown.scaler.wire import Signal


class SignalReader:
    def __init__(self, townhall: Townhall, url: str, town: str | None):
        self.townhall, self.url = townhall, url
        self.town, self.configured = town, town is not None

    def read(self, report: Report, sig: Signal | None) -> Signal | None:
        """The town's signal (``sig``, or read now), or None (logged, reported)."""
        try:
            sig = sig or self.townhall.scaling_signal()
            if self.town is not None and sig.town != self.town:
                which = "configured town" if self.configured else "town it served first"
                raise TownhallError(
                    f"townhall at {self.url} serves town {sig.town!r}, not the {which} "
                    f"{self.town!r}"
                )
        except TownhallError as err:
            log("error", "signal_unavailable", reason=str(err), action="nothing changed")
            report.error, report.exit_status = str(err), ExitStatus.TOWNHALL_UNAVAILABLE
            return None
        self.town = sig.town
        report.signal, report.town = sig, sig.town
        return sig

    def wait_for_change(self, last: Report, wait_secs: int) -> Signal | None:
        """Townhall's long-poll: the signal once it differs from ``last``'s, or after
        ``wait_secs``; None when townhall cannot wait (no ``version``) or failed: the loop
        sleeps instead."""
        sig = last.signal
        if sig is None or sig.version is None or wait_secs <= 0:
            return None
        try:
            return self.townhall.scaling_signal(wait_secs, sig.version)
        except TownhallError as err:
            action = "this pass polls; the next waits again"
            log("warning", "signal_wait_failed", reason=str(err), action=action)
            return None
