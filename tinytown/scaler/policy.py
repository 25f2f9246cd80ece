"""The scaler's pure policy: one pass decided. Plain data in (the signal, the agents, the
containers, the outposts as this pass sees them, the memory of earlier passes, ``now``), a
``Plan`` out. No Docker, no HTTP, no clock: :mod:`tinytown.scaler.reconcile` reads the world and
acts on the plan.

- target = ``desired_agents`` clamped to [``min_workers``, ``max_workers``]; a shortfall is
  placed on outposts (:mod:`~tinytown.scaler.placement`);
- a surplus is drained only on a down signal that has lasted ``scale_down_after_passes`` passes,
  not within ``scale_down_cooldown_secs`` of the last start, and only idle, healthy workers;
- every running container is judged by two witnesses (:mod:`~tinytown.scaler.health`): failing
  ``restart_after_failures`` passes in a row means a restart, or giving up after
  ``max_restarts``;
- exited containers beyond the newest ``keep_exited`` per outpost are removed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from tinytown.scaler.containers import EXITED_STATUSES, Worker
from tinytown.scaler.health import (
    EVIDENCE_INCONSISTENT,
    Verdict,
    drain_veto,
    evidence_conflicts,
    health_verdict,
    health_veto,
    next_failure_count,
)
from tinytown.scaler.memory import ContainerMemory, State
from tinytown.scaler.model import Config
from tinytown.scaler.placement import OutpostView, Placement, choose_outposts
from tinytown.scaler.wire import DOWN_RECOMMENDATIONS, Agent, Signal


def clamp_target(desired: int, min_workers: int, max_workers: int) -> int:
    return max(min_workers, min(desired, max_workers))


# --- scale-down: cooldown, hysteresis, never a busy worker -----------------------------------
@dataclass(frozen=True)
class ScaleDownGate:
    allowed: bool
    surplus_passes: int  # consecutive passes with a surplus and a down signal, this one included
    reason: str


def scale_down_gate(
    recommendation: str,
    surplus: int,
    surplus_passes: int,
    last_scale_up_at: float | None,
    now: float,
    cooldown_secs: float,
    after_passes: int,
) -> ScaleDownGate:
    """May this pass drain surplus workers? Only on a down signal that has lasted
    ``after_passes`` passes in a row, and not within ``cooldown_secs`` of the last start."""
    if surplus <= 0:
        return ScaleDownGate(False, 0, "no surplus")
    if recommendation not in DOWN_RECOMMENDATIONS:
        return ScaleDownGate(False, 0, f"signal says {recommendation}")
    passes = surplus_passes + 1
    if last_scale_up_at is not None and now - last_scale_up_at < cooldown_secs:
        left = cooldown_secs - (now - last_scale_up_at)
        return ScaleDownGate(False, passes, f"cooldown: {left:.0f}s left since the last start")
    if passes < after_passes:
        return ScaleDownGate(False, passes, f"surplus seen {passes}/{after_passes} passes")
    return ScaleDownGate(True, passes, f"surplus {surplus} for {passes} passes")


def drain_candidates(
    workers: Iterable[Worker],
    agents: Mapping[str, Agent],
    surplus: int,
    outpost_order: Sequence[str],
    trust_townhall_alone: bool = False,
) -> list[Worker]:
    """Up to ``surplus`` running workers whose agent is alive and Idle with no task and whose
    container Docker reports healthy, least preferred outpost first, oldest first. An agent that
    is unknown, busy, starting or draining, or a container that does not confirm it, is never
    chosen."""
    rank = {name: i for i, name in enumerate(outpost_order)}
    idle = [
        w
        for w in workers
        if w.status == "running"
        and drain_veto(agents.get(w.agent_id or "")) is None
        and health_veto(w.health, trust_townhall_alone) is None
    ]
    idle.sort(key=lambda w: (-rank.get(w.outpost, len(rank)), w.started_at or 0.0))
    return idle[: max(0, surplus)]


def exited_to_remove(workers: Iterable[Worker], keep: int) -> list[Worker]:
    """Exited workers beyond the newest ``keep`` on each outpost."""
    by_outpost: dict[str, list[Worker]] = {}
    for w in workers:
        if w.status in EXITED_STATUSES:
            by_outpost.setdefault(w.outpost, []).append(w)
    doomed = []
    for exited in by_outpost.values():
        exited.sort(key=lambda w: w.started_at or 0.0, reverse=True)
        doomed.extend(exited[keep:])
    return doomed


# --- one pass, decided --------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    target: int
    live: int  # live workers counted toward the target (those marked in error are not)
    placement: Placement
    gate: ScaleDownGate
    drains: tuple[Worker, ...]
    restarts: tuple[Worker, ...]
    give_up: tuple[tuple[Worker, str], ...]  # failing too often after restarts: mark and notify
    removals: tuple[Worker, ...]
    health_failures: Mapping[str, int]  # container id -> consecutive failures after this pass
    verdicts: Mapping[str, Verdict]
    agents_known: bool
    # Townhall's answers contradict each other: no drain, restart or give-up this pass.
    conflicts: tuple[str, ...] = ()
    unknown: tuple[Worker, ...] = ()  # containers whose verdict is unknown (see ``verdicts``)

    @property
    def shortfall(self) -> int:
        return max(0, self.target - self.live)

    @property
    def surplus(self) -> int:
        return max(0, self.live - self.target)


def hourly_cost(workers: Iterable[Worker]) -> float:
    return sum(w.cost_per_hour for w in workers if w.live)


def plan_pass(
    config: Config,
    signal_: Signal,
    agents: Mapping[str, Agent] | None,
    workers: Sequence[Worker],
    outposts: Sequence[OutpostView],
    state: State,
    now: float,
    unseen_hourly: float = 0.0,
) -> Plan:
    """Decide one pass. ``agents`` is None when the agent list was unavailable: then nothing is
    drained and nobody is judged. When townhall's answers contradict each other
    (:func:`evidence_conflicts`) nothing is drained or judged either, and every health count
    starts again. ``unseen_hourly`` is the last known hourly cost of outposts not seen this pass,
    counted against the cost cap so a network blip cannot double the spend. Starts and removals
    of exited containers go on in both cases."""
    target = clamp_target(signal_.desired_agents, config.min_workers, config.max_workers)
    live = [w for w in workers if w.live]
    # A container marked in error, or asked to drain, still costs money and takes its outpost's
    # room, but it will do no more work: it does not count toward the target.
    leaving = {
        cid
        for cid, m in state.containers.items()
        if m.marked_error_at is not None or m.drain_requested_at is not None
    }
    serving = [w for w in live if w.container_id not in leaving]
    placement = choose_outposts(
        max(0, target - len(serving)),
        outposts,
        hourly_cost(live) + unseen_hourly,
        config.cost_cap_hourly,
    )

    surplus = max(0, len(serving) - target)
    gate = scale_down_gate(
        signal_.scaling_recommendation,
        surplus,
        state.surplus_passes,
        state.last_scale_up_at,
        now,
        config.scale_down_cooldown_secs,
        config.scale_down_after_passes,
    )
    conflicts = (
        ()
        if agents is None
        else evidence_conflicts(signal_, agents, workers, now, config.start_grace_secs)
    )
    drains: list[Worker] = []
    if agents is None and gate.allowed:
        gate = ScaleDownGate(False, gate.surplus_passes, "agent list unavailable")
    elif conflicts and surplus:
        gate = ScaleDownGate(False, 0, f"evidence inconsistent: {conflicts[0]}")
    elif gate.allowed:
        drains = drain_candidates(
            serving, agents or {}, surplus, [o.name for o in outposts], config.trust_townhall_alone
        )

    failures: dict[str, int] = {}
    verdicts: dict[str, Verdict] = {}
    restarts: list[Worker] = []
    give_up: list[tuple[Worker, str]] = []
    if agents is not None:
        drained_now = {w.container_id for w in drains}
        for w in live:
            memory = state.containers.get(w.container_id) or ContainerMemory(w.outpost)
            if memory.marked_error_at is not None or w.container_id in drained_now:
                continue
            if conflicts:
                verdict = Verdict(
                    False, True, f"townhall inconsistent: {conflicts[0]}", EVIDENCE_INCONSISTENT
                )
            else:
                quiet_since = max(memory.restarted_at or 0.0, memory.drain_requested_at or 0.0)
                verdict = health_verdict(
                    w,
                    agents.get(w.agent_id or ""),
                    now,
                    config.unhealthy_after_secs,
                    config.start_grace_secs,
                    quiet_since or None,
                    config.trust_townhall_alone,
                )
            verdicts[w.container_id] = verdict
            count = next_failure_count(memory.health_failures, verdict)
            failures[w.container_id] = count
            if count >= config.restart_after_failures:
                if memory.restarts >= config.max_restarts:
                    give_up.append((w, f"{verdict.reason} after {memory.restarts} restarts"))
                else:
                    restarts.append(w)

    unknown = tuple(
        w
        for w in live
        if not conflicts and verdicts.get(w.container_id) and verdicts[w.container_id].unknown
    )
    return Plan(
        target,
        len(serving),
        placement,
        gate,
        tuple(drains),
        tuple(restarts),
        tuple(give_up),
        tuple(exited_to_remove(workers, config.keep_exited)),
        failures,
        verdicts,
        agents is not None,
        conflicts,
        unknown,
    )
