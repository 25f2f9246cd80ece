"""Judging a worker by two witnesses: its agent's record in townhall and the container's own
Docker health (the healthcheck reads the health file the worker touches after every heartbeat
Redis acknowledged). Pure: records and ``now`` in, verdicts out.

A restart needs both to say the worker failed; a drain needs both to say it is alive and idle.
When they disagree, or townhall contradicts itself, the verdict is *unknown* and nothing
destructive follows (``evidence_inconsistent``); a container without a healthcheck cannot
confirm townhall (``evidence_missing``) unless ``trust_townhall_alone`` is set.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tinytown.scaler.containers import Worker
from tinytown.scaler.defaults import EVIDENCE_TOLERANCE_AGENTS
from tinytown.scaler.wire import ERROR, IDLE, STOPPED, WORKING, Agent, Signal

# Why a verdict is unknown (also the names of the events that log it).
EVIDENCE_INCONSISTENT = "evidence_inconsistent"  # townhall contradicts itself or the engine
EVIDENCE_MISSING = "evidence_missing"  # the container has no healthcheck to confirm townhall


@dataclass(frozen=True)
class Verdict:
    judged: bool
    healthy: bool
    reason: str
    unknown: str | None = None  # EVIDENCE_INCONSISTENT or EVIDENCE_MISSING: nothing destructive


def townhall_failure(agent: Agent | None, now: float, unhealthy_after_secs: float) -> str | None:
    """What townhall's record says is wrong with an agent, or None when it is alive and well.
    Townhall's own ``alive`` decides when it is given; else the heartbeat's age."""
    if agent is None:
        return "agent not registered"
    if agent.state == ERROR:
        return f"agent state {ERROR}"
    if agent.alive is not None:
        if agent.alive:
            return None
        age = agent.heartbeat_age_secs
        if age is None and agent.last_heartbeat is not None:
            age = now - agent.last_heartbeat
        return "agent not alive" + (
            f" (heartbeat {age:.0f}s old)" if age is not None else " (no heartbeat)"
        )
    if agent.last_heartbeat is None:
        return "no heartbeat"
    age = now - agent.last_heartbeat
    if age > unhealthy_after_secs:
        return f"heartbeat {age:.0f}s old"
    return None


def health_verdict(
    worker: Worker,
    agent: Agent | None,
    now: float,
    unhealthy_after_secs: float,
    start_grace_secs: float,
    quiet_since: float | None = None,
    trust_townhall_alone: bool = False,
) -> Verdict:
    """Judge one container by two witnesses: its agent's record in townhall and its own Docker
    health (the worker's health file). It fails only when both say so; when they disagree, or
    townhall's word cannot be confirmed (no healthcheck, unless ``trust_townhall_alone``), the
    verdict is unknown. A container is not judged within ``start_grace_secs`` of its start or of
    ``quiet_since`` (its last restart or drain request), nor while Docker's health is starting."""
    if worker.status != "running":
        return Verdict(False, True, f"container {worker.status}")
    since = max(worker.started_at or 0.0, quiet_since or 0.0)
    if now - since < start_grace_secs:
        return Verdict(False, True, "within start grace")
    failure = townhall_failure(agent, now, unhealthy_after_secs)
    if worker.health == "starting":
        return Verdict(False, True, "Docker health starting")
    if (
        failure is not None
        and worker.health != "unhealthy"
        and leaving(agent, now, unhealthy_after_secs)
    ):
        return Verdict(False, True, "agent stopped within a heartbeat window: its worker leaves")
    if worker.health is None:
        if failure is None:
            return Verdict(True, True, "ok")
        if trust_townhall_alone:
            return Verdict(True, False, failure)
        return Verdict(
            False,
            True,
            f"townhall says {failure}, but the container has no Docker "
            "healthcheck to confirm it (started by an older scaler or image); not "
            "restarted unless trust_townhall_alone is set",
            EVIDENCE_MISSING,
        )
    if worker.health == "unhealthy":
        if failure is not None:
            return Verdict(True, False, f"{failure}; Docker health unhealthy")
        return Verdict(
            False,
            True,
            "Docker health unhealthy, but townhall says the agent is alive",
            EVIDENCE_INCONSISTENT,
        )
    if failure is not None:
        return Verdict(
            False,
            True,
            f"townhall says {failure}, but Docker health is healthy",
            EVIDENCE_INCONSISTENT,
        )
    return Verdict(True, True, "ok")


def leaving(agent: Agent | None, now: float, window_secs: float) -> bool:
    """Whether the agent's worker stopped itself a moment ago (its record says stopped, with a
    beat younger than ``window_secs``): its container may still run for the last milliseconds
    of its exit, which is no disagreement between the witnesses. Later it is one again."""
    if agent is None or agent.state != STOPPED:
        return False
    age = agent.heartbeat_age_secs
    if age is None and agent.last_heartbeat is not None:
        age = now - agent.last_heartbeat
    return age is not None and age < window_secs


def next_failure_count(previous: int, verdict: Verdict) -> int:
    """Consecutive failures after this verdict: +1 on a failure, 0 when healthy or unknown (the
    witnesses must agree for ``restart_after_failures`` passes in a row), unchanged when not
    judged."""
    if verdict.unknown:
        return 0
    if not verdict.judged:
        return previous
    return 0 if verdict.healthy else previous + 1


def evidence_conflicts(
    signal_: Signal,
    agents: Mapping[str, Agent],
    workers: Iterable[Worker],
    now: float,
    start_grace_secs: float,
) -> tuple[str, ...]:
    """Where townhall's two answers contradict each other: the signal's ``active_agents`` (and
    ``busy_agents``, when given) against the agents ``/v1/agents`` lists as live (and Working),
    beyond a race tolerance of EVIDENCE_TOLERANCE_AGENTS plus one per live container still within
    its start grace (its agent may register between the two reads). An empty list while the
    signal counts live agents is the plainest case. Empty when they agree."""
    live = [a for a in agents.values() if a.live]
    young = sum(1 for w in workers if w.live and (w.age_secs(now) or 0.0) < start_grace_secs)
    tolerance = EVIDENCE_TOLERANCE_AGENTS + young
    conflicts = []
    for name, claimed, listed in (
        ("active_agents", signal_.active_agents, len(live)),
        ("busy_agents", signal_.busy_agents, sum(1 for a in live if a.state == WORKING)),
    ):
        if claimed is not None and abs(claimed - listed) > tolerance:
            conflicts.append(
                f"/api/scaling says {name}={claimed} but /v1/agents lists {listed} "
                f"{'live' if name == 'active_agents' else WORKING} agent(s) "
                f"(tolerance {tolerance})"
            )
    return tuple(conflicts)


def drain_veto(agent: Agent | None) -> str | None:
    """Why townhall says this agent's worker must not be drained, or None when it is alive and
    Idle with no task."""
    if agent is None:
        return "agent not registered"
    if agent.alive is False:
        return "agent not alive"
    if agent.state != IDLE or agent.busy:
        return f"agent {agent.state}" + (
            f" with task {agent.current_task}" if agent.current_task else ""
        )
    return None


def health_veto(health: str | None, trust_townhall_alone: bool) -> str | None:
    """Why the container's own Docker health does not confirm a drain, or None when it does:
    healthy, or no healthcheck at all while townhall alone is trusted."""
    if health == "healthy" or (health is None and trust_townhall_alone):
        return None
    if health is None:
        return (
            "no Docker healthcheck to confirm the worker (set trust_townhall_alone to act on "
            "townhall's word alone)"
        )
    return f"Docker health {health}"
