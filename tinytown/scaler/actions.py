"""Acting on a plan: starts, drains, restarts, error marks and removals on the outposts, each
logged and added to the pass's report. An outpost that refuses a start opens its breaker and the
next one is tried.

Before anything destructive the witnesses are asked again, since the plan is seconds old: a
drain needs townhall's agent list to still say alive and Idle with no task and the container's
Docker health to still say healthy; a restart needs Docker to still say unhealthy.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence

from tinytown.scaler.containers import Worker
from tinytown.scaler.epoch import iso
from tinytown.scaler.errors import OutpostError, TownhallError
from tinytown.scaler.health import drain_veto
from tinytown.scaler.log import log
from tinytown.scaler.memory import ContainerMemory, State
from tinytown.scaler.model import Config
from tinytown.scaler.notify import notify
from tinytown.scaler.outposts import DockerOutpost
from tinytown.scaler.placement import Breaker, OutpostView, choose_outposts
from tinytown.scaler.policy import Plan, hourly_cost
from tinytown.scaler.report import Report, worker_ref
from tinytown.scaler.townhall import Townhall


class Actions:
    """The hands of a ``Scaler``: what its passes do to the outposts (never in ``--dry-run``)."""

    def __init__(
        self,
        config: Config,
        environ: Mapping[str, str],
        townhall: Townhall,
        outposts: Sequence[DockerOutpost],
    ):
        self.config = config
        self.environ = environ
        self.townhall = townhall
        self.outposts = outposts

    def _outpost(self, name: str) -> DockerOutpost:
        return next(o for o in self.outposts if o.name == name)

    def start(
        self,
        plan: Plan,
        views: list[OutpostView],
        workers: list[Worker],
        state: State,
        town: str,
        now: float,
        report: Report,
        unseen_hourly: float,
    ) -> int:
        """Start the plan's shortfall, placing each start again so that an outpost that refuses
        one drops out; returns how many started. ``views`` are updated as starts land."""
        if plan.placement.unplaced:
            log(
                "warning",
                "start_limited",
                wanted=plan.shortfall,
                placed=len(plan.placement.outposts),
                reason=plan.placement.reason,
            )
        started = 0
        hourly = hourly_cost(workers) + unseen_hourly
        for _ in range(plan.shortfall):
            # Re-place each start: a failed outpost drops out and the next one is tried.
            pick = choose_outposts(1, views, hourly, self.config.cost_cap_hourly)
            if not pick.outposts:
                break
            name = pick.outposts[0]
            outpost = self._outpost(name)
            index = next(i for i, v in enumerate(views) if v.name == name)
            try:
                cid, cname, agent_id = outpost.start_worker(
                    self.config, town, time.time(), self.environ
                )
            except OutpostError as err:
                breaker = state.breakers.get(name, Breaker()).failed(
                    now,
                    str(err),
                    self.config.breaker_backoff_secs,
                    self.config.breaker_backoff_max_secs,
                )
                state.breakers[name] = breaker
                views[index] = dataclasses.replace(views[index], available=False)
                log(
                    "error",
                    "start_failed",
                    outpost=name,
                    error=str(err),
                    retry_at=iso(breaker.open_until),
                )
                report.actions.append(
                    {"action": "start", "outpost": name, "ok": False, "error": str(err)}
                )
                continue
            started += 1
            hourly += outpost.outpost.cost_per_hour
            state.last_seen_hourly[name] = (
                state.last_seen_hourly.get(name, 0.0) + outpost.outpost.cost_per_hour
            )
            views[index] = dataclasses.replace(views[index], live=views[index].live + 1)
            state.last_scale_up_at = now
            state.containers[cid] = ContainerMemory(name)
            log(
                "info",
                "worker_started",
                outpost=name,
                container=cid[:12],
                name=cname,
                agent_id=agent_id,
            )
            report.actions.append(
                {
                    "action": "start",
                    "outpost": name,
                    "ok": True,
                    "container_id": cid[:12],
                    "name": cname,
                    "agent_id": agent_id,
                }
            )
        return started

    def drain(self, plan: Plan, state: State, now: float, report: Report) -> None:
        """SIGTERM each worker the plan drains, unless a witness now vetoes it."""
        if plan.drains:
            state.surplus_passes = 0  # the next drain needs a fresh run of surplus passes
        for w in plan.drains:
            outpost = self._outpost(w.outpost)
            # The plan's agent list is seconds old: an Idle worker may have taken a task since.
            # Both witnesses are asked again: townhall, then the container's own health.
            try:
                veto = drain_veto(self.townhall.agents().get(w.agent_id or ""))
            except TownhallError as err:
                veto = f"agent list unavailable: {err}"
            veto = veto or self._health_veto(outpost, w, "healthy")
            if veto:
                skipped(report, "drain", w, veto)
                continue
            try:
                outpost.drain(w.container_id)
            except OutpostError as err:
                log("error", "drain_failed", container=w.container_id[:12], error=str(err))
                report.actions.append(
                    {"action": "drain", **worker_ref(w), "ok": False, "error": str(err)}
                )
                continue
            state.containers.setdefault(
                w.container_id, ContainerMemory(w.outpost)
            ).drain_requested_at = now
            log(
                "info",
                "worker_drain_requested",
                container=w.container_id[:12],
                agent_id=w.agent_id,
                outpost=w.outpost,
                reason=plan.gate.reason,
            )
            report.actions.append({"action": "drain", **worker_ref(w), "ok": True})

    def restart(self, plan: Plan, state: State, now: float, report: Report, town: str) -> None:
        """Mark and notify the containers the plan gives up on; restart the ones it restarts,
        unless Docker now says healthy. A failed restart marks and notifies too."""
        for w, reason in plan.give_up:
            self._mark_error(w, state, now, report, town, reason, None)
        for w in plan.restarts:
            memory = state.containers.setdefault(w.container_id, ContainerMemory(w.outpost))
            reason = plan.verdicts[w.container_id].reason
            outpost = self._outpost(w.outpost)
            # Docker's health is asked again just before: a worker that recovered is spared.
            veto = self._health_veto(outpost, w, "unhealthy")
            if veto:
                memory.health_failures = 0
                skipped(report, "restart", w, veto)
                continue
            try:
                outpost.restart(w.container_id, self.config.restart_timeout_secs)
            except OutpostError as err:
                self._mark_error(w, state, now, report, town, reason, str(err))
                continue
            memory.restarts += 1
            memory.restarted_at, memory.health_failures = time.time(), 0
            memory.drain_requested_at = None  # a fresh worker process: it serves again
            log(
                "warning",
                "worker_restarted",
                container=w.container_id[:12],
                agent_id=w.agent_id,
                outpost=w.outpost,
                reason=reason,
                restarts=memory.restarts,
            )
            report.actions.append(
                {"action": "restart", **worker_ref(w), "ok": True, "reason": reason}
            )

    def _health_veto(self, outpost: DockerOutpost, w: Worker, wanted: str) -> str | None:
        """Why the container's Docker health, inspected now, does not confirm the action
        (``wanted`` is ``healthy`` for a drain, ``unhealthy`` for a restart), or None."""
        try:
            health = outpost.health(w.container_id)
        except OutpostError as err:
            return f"container health unreadable: {err}"
        if health == wanted or (health is None and self.config.trust_townhall_alone):
            return None
        return "no Docker healthcheck" if health is None else f"Docker health now {health}"

    def _mark_error(
        self,
        w: Worker,
        state: State,
        now: float,
        report: Report,
        town: str,
        reason: str,
        error: str | None,
    ) -> None:
        memory = state.containers.setdefault(w.container_id, ContainerMemory(w.outpost))
        memory.marked_error_at, memory.marked_reason = now, error or reason
        event = {
            "event": "worker_restart_failed" if error else "worker_restarts_exhausted",
            "town": town,
            "outpost": w.outpost,
            "container_id": w.container_id,
            "container_name": w.name,
            "agent_id": w.agent_id,
            "reason": reason,
            "error": error,
            "restarts": memory.restarts,
            "timestamp": iso(now),
        }
        log(
            "error",
            event["event"],
            container=w.container_id[:12],
            agent_id=w.agent_id,
            outpost=w.outpost,
            reason=reason,
            error=error,
        )
        report.actions.append(
            {"action": "mark_error", **worker_ref(w), "ok": True, "reason": reason, "error": error}
        )
        notify(self.config, event)

    def remove(self, plan: Plan, state: State, report: Report) -> None:
        """Remove the exited containers the plan removes, adding their cost to the total."""
        for w in plan.removals:
            outpost = self._outpost(w.outpost)
            try:
                gone = outpost.remove(w.container_id)
            except OutpostError as err:
                log("warning", "remove_failed", container=w.container_id[:12], error=str(err))
                report.actions.append(
                    {"action": "remove", **worker_ref(w), "ok": False, "error": str(err)}
                )
                continue
            state.removed_cost += (gone or w).cost_so_far(time.time())
            state.containers.pop(w.container_id, None)
            log(
                "info",
                "worker_removed",
                container=w.container_id[:12],
                agent_id=w.agent_id,
                outpost=w.outpost,
            )
            report.actions.append({"action": "remove", **worker_ref(w), "ok": True})


def skipped(report: Report, action: str, w, reason: str) -> None:
    """A drain or restart not done (``<action>_skipped``): logged, and in the pass's report."""
    log(
        "info",
        f"{action}_skipped",
        container=w.container_id[:12],
        agent_id=w.agent_id,
        outpost=w.outpost,
        reason=reason,
    )
    report.actions.append(
        {"action": f"{action}_skipped", **worker_ref(w), "ok": True, "reason": reason}
    )
