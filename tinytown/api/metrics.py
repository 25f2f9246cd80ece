"""``/metrics``: upstream's Prometheus series (§10.2), computed from Redis at scrape time.

A custom collector reads the town's index counts on every scrape, so every gunicorn worker
answers with the same numbers (per-process gauges would each see only their own process).
Names and HELP texts are upstream's. ``tinytown_agents_total`` counts an agent under its state
while it is alive and under ``state="dead"`` once its heartbeat is older than its own dead-after
window (the same judgement as ``/api/scaling``). Task counts come from the state indexes:
``tinytown_tasks_assigned_pending`` is tasks assigned to an agent and not yet started (upstream
counted inbox task messages), ``tinytown_tasks_pending`` adds the backlog to it.

``tinytown_redis_commands_total`` is the Redis server's own count of commands processed (every
client's, ``INFO stats``): ``rate(tinytown_redis_commands_total[5m]) * 60`` is what the town
costs a Redis priced per command, a minute — the idle-cost figure of ``bench/bench_idle.py``.

When Redis cannot be read the scrape answers 503 with every value 0, no agent series,
``tinytown_ready 0`` and a trailing ``# tinytown_metrics_error <detail>`` line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from tinytown.core.states import TASK

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

HELP = {
    "tinytown_up": "Whether the townhall process is running.",
    "tinytown_ready": "Whether townhall can reach its Redis-backed town state.",
    "tinytown_agents_total": "Number of registered agents by state.",
    "tinytown_tasks_pending": "Number of queued tasks across backlog and agent inboxes.",
    "tinytown_tasks_completed": "Total completed tasks persisted in town state.",
    "tinytown_missions_active": "Number of active missions.",
    "tinytown_redis_latency_seconds": "Redis round-trip latency for this scrape.",
    "tinytown_backlog_tasks": "Tasks currently in the global backlog.",
    "tinytown_tasks_assigned_pending": "Pending assigned tasks across all agents.",
    "tinytown_urgent_messages": "Urgent inbox messages across agents in an active state.",
    "tinytown_worker_seconds": "Seconds coding CLIs have run, every attempt of every task.",
    "tinytown_redis_commands": "Commands the town's Redis server has processed (all clients).",
}


@dataclass(frozen=True)
class MetricsSnapshot:
    ready: bool = False
    agents_by_state: dict[str, int] = field(default_factory=dict)
    backlog: int = 0
    assigned_pending: int = 0
    completed: int = 0
    missions_active: int = 0
    redis_latency_seconds: float = 0.0
    urgent_messages: int = 0
    worker_seconds: float = 0.0
    redis_commands: int = 0


def read_snapshot(town) -> MetricsSnapshot:
    """Everything one scrape shows, from Redis (raises redis errors)."""
    latency = town.ping_ms() / 1000
    counts = town.counts()
    urgent = town.inbox.urgent_total(town.agents.active_ids())  # (not every agent ever made)
    by_state = {**counts.agents.live, "dead": counts.agents.dead_total}
    return MetricsSnapshot(
        ready=True,
        agents_by_state={s: n for s, n in by_state.items() if n > 0},
        backlog=counts.backlog,
        assigned_pending=counts.tasks[TASK["assign"].target],
        completed=counts.tasks[TASK["complete"].target],
        missions_active=counts.missions_active,
        redis_latency_seconds=round(latency, 6),
        urgent_messages=urgent,
        worker_seconds=town.tasks.worker_seconds_total(),
        redis_commands=town.commands_processed(),
    )


class TownCollector:
    """prometheus-client collector: one Redis read per scrape, in upstream's series order."""

    def __init__(self, read):
        self.read = read  # () -> MetricsSnapshot

    def collect(self):
        s: MetricsSnapshot = self.read()

        def gauge(name: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, HELP[name], value=value)

        yield gauge("tinytown_up", 1)
        yield gauge("tinytown_ready", 1 if s.ready else 0)
        agents = GaugeMetricFamily(
            "tinytown_agents_total", HELP["tinytown_agents_total"], labels=["state"]
        )
        for state in sorted(s.agents_by_state):
            agents.add_metric([state], s.agents_by_state[state])
        yield agents
        yield gauge("tinytown_tasks_pending", s.backlog + s.assigned_pending)
        yield CounterMetricFamily(
            "tinytown_tasks_completed", HELP["tinytown_tasks_completed"], value=s.completed
        )
        yield gauge("tinytown_missions_active", s.missions_active)
        yield gauge("tinytown_redis_latency_seconds", s.redis_latency_seconds)
        yield gauge("tinytown_backlog_tasks", s.backlog)
        yield gauge("tinytown_tasks_assigned_pending", s.assigned_pending)
        yield gauge("tinytown_urgent_messages", s.urgent_messages)
        yield CounterMetricFamily(  # exposed as tinytown_worker_seconds_total
            "tinytown_worker_seconds", HELP["tinytown_worker_seconds"], value=s.worker_seconds
        )
        yield CounterMetricFamily(  # exposed as tinytown_redis_commands_total
            "tinytown_redis_commands", HELP["tinytown_redis_commands"], value=s.redis_commands
        )


def render(read) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TownCollector(read))
    return generate_latest(registry)


def scrape(town) -> tuple[int, bytes]:
    """``(status, body)`` for ``/metrics``: 200 with live values, or upstream's 503 body."""
    try:
        snapshot = read_snapshot(town)
    except Exception as err:  # noqa: BLE001 - any failure to read is reported in the body
        from tinytown.connection.target import resolve_target
        from tinytown.core.urls import redact_text

        detail = (
            redact_text(str(err), resolve_target(town.config).url)
            .replace("\n", " ")
            .replace("\r", " ")
        )
        body = render(MetricsSnapshot) + f"# tinytown_metrics_error {detail}\n".encode()
        return 503, body
    return 200, render(lambda: snapshot)
