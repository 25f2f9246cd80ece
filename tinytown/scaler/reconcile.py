"""Reconcile: one pass of reading, planning and acting, and the ``Scaler`` that runs it.

A pass reads the scaling signal (without a valid one it does nothing at all, not even to the
state file), lists this town's containers on every outpost whose breaker is closed, counts new
exits toward crash loops, reads the agent list (without it: starts only), asks the pure policy
for a plan (:func:`tinytown.scaler.policy.plan_pass`), acts on it (:mod:`~tinytown.scaler.actions`;
not in ``--dry-run``) and saves the town's state, under the pass lock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tinytown.scaler.actions import Actions
from tinytown.scaler.containers import EXITED_STATUSES, Worker
from tinytown.scaler.crash_loops import CrashWatch, crash_limited, watch_exits
from tinytown.scaler.defaults import CRASH_LOG_LINES
from tinytown.scaler.epoch import iso
from tinytown.scaler.errors import ExitStatus, OutpostError, TownhallError
from tinytown.scaler.health import EVIDENCE_INCONSISTENT
from tinytown.scaler.log import log
from tinytown.scaler.memory import ContainerMemory, State
from tinytown.scaler.model import Config
from tinytown.scaler.notify import notify
from tinytown.scaler.outposts import DockerOutpost
from tinytown.scaler.placement import Breaker, OutpostView
from tinytown.scaler.policy import Plan, hourly_cost, plan_pass
from tinytown.scaler.report import Report, describe, worker_ref
from tinytown.scaler.settings import ENV_PREFIX
from tinytown.scaler.signal_reader import SignalReader
from tinytown.scaler.state_file import (
    StateOfAnotherTown,
    load_state,
    pass_lock,
    save_state,
    state_path,
)
from tinytown.scaler.townhall import Townhall
from tinytown.scaler.wire import Agent, Signal


class Scaler:
    """Holds the clients and the state between passes; ``run_pass`` is one reconcile."""

    def __init__(self, config: Config, environ: Mapping[str, str], dry_run: bool = False):
        self.config = config
        self.environ = environ
        self.dry_run = dry_run
        self.townhall = Townhall(config)
        self.signals = SignalReader(self.townhall, self.townhall.shown, config.town)
        self.outposts = [DockerOutpost(o, config.docker_timeout_secs) for o in config.outposts]
        self.actions = Actions(config, environ, self.townhall, self.outposts)
        self.memory: State | None = None  # kept across passes only in --dry-run

    def run_pass(self, now: float, sig: Signal | None = None) -> Report:
        """One pass; ``sig``: a signal just read (by :meth:`wait_for_change`), else it is read."""
        report = Report(town=self.config.town)
        # 1. The signal. Without a valid one nothing at all is done, not even to the state file.
        sig = self.signals.read(report, sig)
        if sig is None:
            return report
        path = state_path(self.config, self.environ, sig.town)
        try:
            if self.dry_run:
                if self.memory is None or self.memory.town != sig.town:
                    self.memory = load_state(path, sig.town)
                return self._pass(self.memory, sig, now, report)
            with pass_lock(path) as held:
                if not held:
                    log(
                        "warning",
                        "pass_skipped",
                        reason="another scaler pass holds the lock",
                        lock=str(path) + ".lock",
                    )
                    report.error = "another scaler pass holds the lock"
                    return report
                state = load_state(path, sig.town)
                self._pass(state, sig, now, report)
                save_state(path, state, now)
                return report
        except StateOfAnotherTown as err:
            log(
                "error",
                "state_other_town",
                path=str(err.path),
                state_town=err.state_town,
                town=err.town,
                error=str(err),
                action="nothing done; the file is left as it is",
            )
            report.error, report.exit_status = str(err), ExitStatus.CONFIG_ERROR
            return report
        except OSError as err:
            message = (
                f"state file {path}: {err.strerror or err}; set --state-file "
                f"or {ENV_PREFIX}STATE_FILE to a writable path"
            )
            log("error", "state_file_unwritable", error=message)
            report.error, report.exit_status = message, ExitStatus.CONFIG_ERROR
            return report

    def wait_for_change(self, last: Report, wait_secs: int) -> Signal | None:
        return self.signals.wait_for_change(last, wait_secs)

    def _pass(self, state: State, sig: Signal, now: float, report: Report) -> Report:
        config = self.config
        # 2. What runs where. An outpost whose breaker is open is not contacted.
        workers, views, unseen_hourly = self._survey(state, sig.town, now, report)
        if not any(v.available for v in views):
            report.error = "no outpost reachable"
            report.exit_status = ExitStatus.DOCKER_UNAVAILABLE
            log(
                "error",
                "docker_unavailable",
                reason="every outpost failed or is in backoff",
                action="nothing changed",
            )
            return report

        views = self._watch_crashes(workers, views, state, sig.town, now, report)

        # 3. The agents, for busy checks and health (none running: no request; unknown: starts only)
        agents: dict[str, Agent] | None = {}
        try:
            if workers:
                agents = self.townhall.agents()
        except TownhallError as err:
            agents = None
            report.error = str(err)
            report.exit_status = ExitStatus.TOWNHALL_UNAVAILABLE
            log(
                "warning",
                "agents_unavailable",
                reason=str(err),
                action="starting workers only: no drains, no health checks",
            )

        # 4. Decide, then act.
        plan = plan_pass(config, sig, agents, workers, views, state, now, unseen_hourly)
        report.plan = describe(plan)
        state.surplus_passes = plan.gate.surplus_passes
        self._log_evidence(plan, sig.town)
        outpost_of = {w.container_id: w.outpost for w in workers}
        for cid, count in plan.health_failures.items():
            memory = state.containers.setdefault(cid, ContainerMemory(outpost_of[cid]))
            if count > memory.health_failures:
                log(
                    "warning",
                    "worker_unhealthy",
                    container=cid[:12],
                    failures=count,
                    reason=plan.verdicts[cid].reason,
                )
            memory.health_failures = count
        if not self.dry_run:
            started = self.actions.start(
                plan, views, workers, state, sig.town, now, report, unseen_hourly
            )
            if plan.shortfall and not started and report.actions:
                report.error = "every start attempt failed"
                report.exit_status = ExitStatus.DOCKER_UNAVAILABLE
            self.actions.drain(plan, state, now, report)
            self.actions.restart(plan, state, now, report, sig.town)
            self.actions.remove(plan, state, report)
        report.cost = self._cost(workers, state, now)
        report.workers = len(workers)
        return report

    def _log_evidence(self, plan: Plan, town: str) -> None:
        """One line per contradiction, and per container whose verdict is unknown."""
        for conflict in plan.conflicts:
            log(
                "warning",
                EVIDENCE_INCONSISTENT,
                town=town,
                reason=conflict,
                action="nothing destructive this pass: no drain, restart or give-up; starts and "
                "removals of exited containers go on",
            )
        for w in plan.unknown:
            verdict = plan.verdicts[w.container_id]
            log(
                "warning",
                verdict.unknown,
                container=w.container_id[:12],
                agent_id=w.agent_id,
                outpost=w.outpost,
                health=w.health,
                reason=verdict.reason,
                action="not restarted or drained",
            )

    def _survey(
        self, state: State, town: str, now: float, report: Report
    ) -> tuple[list[Worker], list[OutpostView], float]:
        """List workers on every outpost whose breaker is closed, updating the breakers.

        Returns the workers, one view per outpost, and the last known hourly cost of the outposts
        that could not be seen."""
        workers: list[Worker] = []
        views: list[OutpostView] = []
        unseen_hourly = 0.0
        config = self.config
        for outpost in self.outposts:
            o = outpost.outpost
            breaker = state.breakers.get(o.name, Breaker())
            entry = {
                "name": o.name,
                "max_workers": o.max_workers,
                "cost_per_hour": o.cost_per_hour,
                "reachable": None,
                "live": None,
                "breaker_failures": breaker.failures,
                "error": breaker.last_error,
                "breaker_open_until": iso(breaker.open_until) if breaker.failures else None,
            }
            report.outposts.append(entry)
            found = None
            if not breaker.is_open(now):
                try:
                    found = outpost.list_workers(town)
                except OutpostError as err:
                    breaker = breaker.failed(
                        now, str(err), config.breaker_backoff_secs, config.breaker_backoff_max_secs
                    )
                    state.breakers[o.name] = breaker
                    log(
                        "warning",
                        "outpost_unreachable",
                        outpost=o.name,
                        error=str(err),
                        retry_at=iso(breaker.open_until),
                    )
                    entry.update(
                        reachable=False,
                        error=str(err),
                        breaker_failures=breaker.failures,
                        breaker_open_until=iso(breaker.open_until),
                    )
            if found is None:
                unseen_hourly += state.last_seen_hourly.get(o.name, 0.0)
                views.append(OutpostView(o.name, o.max_workers, o.cost_per_hour, False, 0))
                continue
            if breaker.failures:
                log("info", "outpost_recovered", outpost=o.name)
            state.breakers[o.name] = breaker.succeeded()
            state.last_seen_hourly[o.name] = hourly_cost(found)
            live = sum(1 for w in found if w.live)
            entry.update(
                reachable=True, live=live, error=None, breaker_failures=0, breaker_open_until=None
            )
            views.append(OutpostView(o.name, o.max_workers, o.cost_per_hour, True, live))
            workers.extend(found)
        self._forget_gone(state, workers, {v.name for v in views if v.available})
        return workers, views, unseen_hourly

    def _watch_crashes(
        self,
        workers: Sequence[Worker],
        views: list[OutpostView],
        state: State,
        town: str,
        now: float,
        report: Report,
    ) -> list[OutpostView]:
        """Count exits not seen before; hold starts on an outpost whose workers crash-loop and
        notify once per crash loop. Returns the views with holds and trial limits applied."""
        config = self.config
        limited = []
        for view, entry in zip(views, report.outposts):
            watch = state.crash_loops.get(view.name, CrashWatch())
            if view.available:
                fresh = []
                for w in workers:
                    if w.outpost != view.name or w.status not in EXITED_STATUSES:
                        continue
                    memory = state.containers.setdefault(w.container_id, ContainerMemory(w.outpost))
                    # A worker the scaler drained or gave up on did not crash by itself.
                    if (
                        not memory.exit_counted
                        and memory.drain_requested_at is None
                        and memory.marked_error_at is None
                    ):
                        fresh.append(w)
                    memory.exit_counted = True
                watch, opened = watch_exits(
                    watch,
                    fresh,
                    now,
                    config.crash_loop_after_exits,
                    config.quick_exit_secs,
                    config.breaker_backoff_secs,
                    config.breaker_backoff_max_secs,
                )
                if opened is not None:
                    self._hold_starts(view.name, watch, opened, town, now, report)
                if watch == CrashWatch():
                    state.crash_loops.pop(view.name, None)
                else:
                    state.crash_loops[view.name] = watch
            entry.update(
                crash_exits=watch.streak,
                starts_held_until=iso(watch.hold.open_until) if watch.hold.is_open(now) else None,
            )
            limited.append(crash_limited(view, watch, now, config.crash_loop_after_exits))
        return limited

    def _hold_starts(
        self, outpost: str, watch: CrashWatch, w: Worker, town: str, now: float, report: Report
    ) -> None:
        hold = watch.hold
        log(
            "error",
            "outpost_crash_loop",
            outpost=outpost,
            exits=watch.streak,
            exit_code=w.exit_code,
            container=w.container_id[:12],
            held_until=iso(hold.open_until),
        )
        if self.dry_run:
            return  # the plan says why nothing starts there; a dry run notifies nobody
        report.actions.append(
            {
                "action": "hold_starts",
                **worker_ref(w),
                "ok": True,
                "exit_code": w.exit_code,
                "exits": watch.streak,
                "until": iso(hold.open_until),
            }
        )
        if hold.failures > 1:
            return  # one notification per crash loop
        by_name = {o.name: o for o in self.outposts}
        notify(
            self.config,
            {
                "event": "outpost_crash_loop",
                "town": town,
                "outpost": outpost,
                "container_id": w.container_id,
                "container_name": w.name,
                "agent_id": w.agent_id,
                "exit_code": w.exit_code,
                "exits": watch.streak,
                "reason": hold.last_error,
                "held_until": iso(hold.open_until),
                "log_tail": by_name[outpost].log_tail(w.container_id, CRASH_LOG_LINES),
                "timestamp": iso(now),
            },
        )

    def _forget_gone(self, state: State, workers: Sequence[Worker], seen: set[str]) -> None:
        present = {w.container_id for w in workers}
        for cid, memory in list(state.containers.items()):
            if memory.outpost in seen and cid not in present:
                del state.containers[cid]
        for name in list(state.breakers):
            if name not in {o.name for o in self.outposts}:
                del state.breakers[name]
                state.last_seen_hourly.pop(name, None)

    def _cost(self, workers: Sequence[Worker], state: State, now: float) -> dict[str, Any]:
        """Hourly rate (last seen on every outpost, this pass's starts included) and cost so far."""
        live = [w for w in workers if w.live]
        return {
            "hourly": round(sum(state.last_seen_hourly.values()), 6),
            "cap_hourly": self.config.cost_cap_hourly,
            "live_so_far": round(sum(w.cost_so_far(now) for w in live), 6),
            "removed_total": round(state.removed_cost, 6),
        }
