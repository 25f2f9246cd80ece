"""The command line: ``tinytown-scaler`` (or ``python scaler.py``) ``[run|status|config]``.

``run`` loops until SIGTERM or SIGINT (it finishes the current pass first): between passes it
long-polls townhall's signal and passes again the moment it changes — at once when work is
queued — or after ``interval_secs`` with workers running (``SIGNAL_WAIT_SECS`` with none); an
older townhall that cannot wait is polled every ``interval_secs``. Or it makes one pass with
``--once`` (for cron and systemd timers). ``status`` lists the town's containers; ``config``
prints the resolved configuration. Every setting is a flag made from the table in
:mod:`tinytown.scaler.settings`. Exit codes are ``ExitStatus`` (:mod:`tinytown.scaler.errors`):
the loop never exits on townhall or Docker being down, only ``--once`` and ``status`` report
them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from tinytown.core.signal_safe import SignalSafeSetter
from tinytown.core.urls import redact_url
from tinytown.scaler.config import config_summary, load_config
from tinytown.scaler.defaults import MIN_PASS_GAP_SECS, SIGNAL_WAIT_SECS
from tinytown.scaler.errors import ConfigError, ExitStatus
from tinytown.scaler.log import log, set_verbose
from tinytown.scaler.model import Config
from tinytown.scaler.reconcile import Scaler
from tinytown.scaler.report import Report
from tinytown.scaler.settings import ENV_PREFIX, SETTINGS
from tinytown.scaler.status import run_status
from tinytown.scaler.wire import Signal

GROUPS = {
    "townhall": "townhall (the scaling signal and agent list)",
    "container": "worker containers",
    "scaling": "scaling",
    "health": "health checks",
    "outposts": "outposts (list them in the TOML file as [[outposts]])",
    "state": "state",
}


def build_parser() -> argparse.ArgumentParser:
    """The parser, named as invoked (``scaler.py`` or ``tinytown-scaler``)."""
    parser = argparse.ArgumentParser(
        description="Start and retire Tinytown agent-worker containers from townhall's "
        "/api/scaling signal. Precedence: flags > TINYTOWN_SCALER_* environment > "
        "TOML file (--config) > defaults.",
        epilog="exit codes: 0 success, 2 bad command line, 3 bad configuration, 4 townhall "
        "unavailable (--once), 5 Docker unavailable (--once), 130 interrupted. "
        "See docs/scaler.md.",
    )
    parser.add_argument(
        "subcommand",
        nargs="?",
        choices=("run", "status", "config"),
        default="run",
        metavar="{run,status,config}",
        help="run: reconcile (default); status: list this town's containers; "
        "config: print the resolved configuration",
    )
    modes = parser.add_argument_group("modes")
    modes.add_argument(
        "--config",
        metavar="PATH",
        help=f"TOML file with the settings below [env {ENV_PREFIX}CONFIG]",
    )
    modes.add_argument("--once", action="store_true", help="one pass, then exit (for cron)")
    modes.add_argument(
        "--dry-run",
        action="store_true",
        help="compute and print the plan; change nothing, not even the state file",
    )
    modes.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per pass (or for status) on stdout",
    )
    modes.add_argument("-v", "--verbose", action="store_true", help="log debug events too")
    groups = {key: parser.add_argument_group(title) for key, title in GROUPS.items()}
    defaults = Config()
    for s in SETTINGS:
        default = getattr(defaults, s.key)
        where = [f"env {s.env}"] if s.env else []
        where.append(f"TOML {s.section + '.' if s.section else ''}{s.key}")
        if isinstance(default, bool):
            where.append(f"default {str(default).lower()}")
        elif default not in (None, (), {}):
            where.append(
                f"default {default:g}" if isinstance(default, float) else f"default {default}"
            )
        kwargs: dict[str, Any] = dict(
            dest=s.key, metavar=s.metavar, help=f"{s.help} [{'; '.join(where)}]"
        )
        if s.kind in ("list", "map"):
            kwargs["action"] = "append"
        groups[s.group].add_argument(s.option, **kwargs)
    return parser


def run_loop(scaler: Scaler, interval_secs: float, as_json: bool) -> ExitStatus:
    """Pass after pass until SIGTERM or SIGINT; a second signal during a pass stops at once."""
    stop = threading.Event()
    stopping = SignalSafeSetter(stop)  # (Event.set in a handler can deadlock: signal_safe)
    signals = []

    def on_signal(signum: int, _frame: Any) -> None:
        if signals:
            raise KeyboardInterrupt  # a second signal: stop now
        signals.append(signum)  # before the log line: a second signal that follows it sees it
        stopping.set()
        log(
            "info",
            "stopping",
            signal=signal.Signals(signum).name,
            action="finishing the current pass",
        )

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log(
        "info",
        "loop_started",
        interval_secs=interval_secs,
        url=redact_url(scaler.config.url),
        outposts=",".join(o.name for o in scaler.outposts),
        dry_run=scaler.dry_run,
    )
    sig, waits = None, True
    while not stop.is_set():
        began = time.monotonic()
        report = None
        try:
            report = scaler.run_pass(time.time(), sig)
            print_report(report, as_json, scaler.dry_run)
        except Exception as err:  # a bug or a surprise must not end the loop: log, retry
            log("error", "pass_failed", error=f"{type(err).__name__}: {err}")
        sig = None
        if report is not None and waits and not stop.is_set():
            longest = min(scaler.config.signal_wait_secs, SIGNAL_WAIT_SECS)
            wait_secs = min(longest, round(interval_secs)) if report.workers else longest
            asked = time.monotonic()
            sig = _unless_stopped(partial(scaler.wait_for_change, report, wait_secs), stop)
            if sig is not None and not _waited(report, sig, wait_secs, time.monotonic() - asked):
                waits, sig = False, None  # it answers at once: poll every interval_secs
                log(
                    "warning",
                    "signal_wait_unsupported",
                    reason="townhall (or a proxy in front of it) answered the long-poll at once "
                    "with the same signal",
                    action=f"polling every {interval_secs:g} s",
                )
            if sig is not None:  # changed, or the wait ended: pass now, but never in a spin
                stop.wait(max(0.0, MIN_PASS_GAP_SECS - (time.monotonic() - began)))
                continue
        stop.wait(max(0.0, interval_secs - (time.monotonic() - began)))
    log("info", "loop_stopped")
    return ExitStatus.SUCCESS


def _waited(last: Report, sig: Signal, wait_secs: int, took_secs: float) -> bool:
    """Whether a long-poll's answer is one: a new signal, or the same one after the wait (a
    second's slack). The same signal at once means townhall does not wait."""
    same = last.signal is not None and sig.version == last.signal.version
    return not same or took_secs >= wait_secs - 1


def _unless_stopped(call: Callable[[], Signal | None], stop: threading.Event) -> Signal | None:
    """``call()`` in a thread of its own, so that SIGTERM during a long-poll stops the loop at
    once instead of after the wait (the request is left to finish in its daemon thread)."""
    result: list[Signal | None] = []
    done = threading.Event()

    def run() -> None:
        try:
            result.append(call())
        except Exception as err:  # (a bug: one line, and the loop sleeps instead)
            log("error", "signal_wait_failed", error=f"{type(err).__name__}: {err}")
        finally:
            done.set()

    threading.Thread(target=run, name="scaler-signal-wait", daemon=True).start()
    while not done.wait(0.2):
        if stop.is_set():
            return None
    return result[0] if result else None


def print_report(report: Report, as_json: bool, dry_run: bool) -> None:
    """A pass's report: one JSON line with ``--json``, the plan with ``--dry-run``; and a log line
    when it did something or failed (debug otherwise)."""
    now = time.time()
    if as_json:
        print(json.dumps(report.to_json(now, dry_run)), flush=True)
    elif dry_run:
        plan = report.plan
        if plan is None:
            print(f"plan: none ({report.error})", flush=True)
        else:
            print(
                f"plan: target={plan['target']} live={plan['live']} "
                f"start={','.join(plan['starts']) or '-'} "
                f"drain={len(plan['drains'])} ({plan['scale_down']['reason']}) "
                f"restart={len(plan['restarts'])} remove={len(plan['removals'])}"
                + (
                    f" unplaced={plan['unplaced']} ({plan['unplaced_reason']})"
                    if plan["unplaced"]
                    else ""
                ),
                flush=True,
            )
    if report.actions or report.error:
        log(
            "info",
            "pass_done",
            town=report.town,
            actions=len(report.actions),
            exit_code=int(report.exit_status),
        )
    else:
        log("debug", "pass_done", town=report.town, actions=0)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns an ``ExitStatus``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    set_verbose(args.verbose)
    flags = {s.key: getattr(args, s.key) for s in SETTINGS}
    flags["config"] = args.config
    environ = dict(os.environ)
    try:
        config = load_config(flags, environ)
        if args.subcommand == "run" and not config.image:
            raise ConfigError(
                f"image is not set: pass --image, set {ENV_PREFIX}IMAGE or "
                "[container] image in the config file"
            )
    except ConfigError as err:
        print(f"{parser.prog}: configuration error: {err}", file=sys.stderr)
        return ExitStatus.CONFIG_ERROR
    try:
        if args.subcommand == "config":
            print(json.dumps(config_summary(config), indent=2))
            return ExitStatus.SUCCESS
        if args.subcommand == "status":
            return run_status(config, environ, args.json)
        if "REDIS_URL" not in config.env and "REDIS_URL" not in config.pass_env:
            log(
                "warning",
                "no_redis_url",
                hint="workers get no REDIS_URL from the scaler; pass "
                "--pass-env REDIS_URL or --env REDIS_URL=... unless the image sets it",
            )
        scaler = Scaler(config, environ, dry_run=args.dry_run)
        if not args.once:
            return run_loop(scaler, config.interval_secs, args.json)
        report = scaler.run_pass(time.time())
        print_report(report, args.json, args.dry_run)
        return report.exit_status
    except KeyboardInterrupt:
        log("warning", "interrupted")
        return ExitStatus.INTERRUPTED
