"""Tinytown scaler: turns townhall's scaling signal into agent-worker containers on Docker.

Each pass reads ``GET /api/scaling`` and ``GET /v1/agents`` from townhall, lists this town's worker
containers on every outpost (a Docker engine: the local one, or remote ones over ``tcp://`` with
TLS or ``ssh://``), and then:

- **starts** workers until the live count reaches ``desired_agents`` clamped to
  [``min_workers``, ``max_workers``], on the first outpost in preference order that has room, whose
  circuit breaker is closed, that is not holding starts after a crash loop, and that keeps the
  hourly cost under ``cost_cap_hourly``. Workers share one named volume per outpost,
  ``tinytown-<town>-workspace`` at ``/workspace/.tt`` (git checkouts and task logs), which the
  scaler creates and never removes;
- **drains** (SIGTERM) an *idle* surplus worker only when the signal says ``scale_down`` or
  ``scale_to_zero``, the surplus has lasted ``scale_down_after_passes`` passes and
  ``scale_down_cooldown_secs`` have passed since the last start. A worker that is Working, Starting
  or holds a task is never touched, nor one whose container Docker does not report healthy; the
  agent list and the container's health are read again just before each SIGTERM: workers retire
  themselves when idle (exit 0);
- **restarts** a running worker whose agent is not alive (townhall's ``alive``, else a heartbeat
  older than ``unhealthy_after_secs``) or is in Error, *and* whose container Docker reports
  unhealthy, for ``restart_after_failures`` passes in a row; if the restart fails (or the
  container has used up ``max_restarts``), it marks the container in the state file, stops
  counting it as capacity and runs the notification hook;
- **holds starts** on an outpost whose workers exited non-zero within ``quick_exit_secs`` of
  starting ``crash_loop_after_exits`` times in a row (bad configuration, Redis unreachable), for
  the breaker backoff, and runs the notification hook once with the exit code and the last log
  lines;
- **removes** exited workers, keeping the newest ``keep_exited`` per outpost for their logs.

Destructive actions need consistent evidence from two witnesses: townhall, and the container
itself, through the Docker healthcheck the scaler gives every worker (``python -P -m
tinytown.worker.health_file``, which passes while the worker's heartbeats reach Redis). When
townhall's answers contradict each other (the signal's ``active_agents``/``busy_agents`` against
``/v1/agents``) the pass drains, restarts and gives up on nobody; when townhall and a container's
health disagree, that container is left alone; either is logged as ``evidence_inconsistent`` and
reported (``--json``, ``status``). Containers without a healthcheck are never restarted or drained
unless ``trust_townhall_alone`` is set (``evidence_missing`` says so).

If the signal is unreachable, not 200 or malformed, the pass does nothing at all. Containers are
found by their labels only (``tinytown.town``, ``tinytown.role=agent-worker``,
``tinytown.outpost``, ``tinytown.agent_id``); each new one gets a fresh UUID as
``TINYTOWN_AGENT_ID`` so it maps to exactly one agent record.

Configuration: command-line flags, then ``TINYTOWN_SCALER_<KEY>`` environment variables, then a
TOML file (``--config``), then the defaults; ``tinytown-scaler --help`` lists every key and
``tinytown-scaler config`` prints the resolved configuration. Outposts are configured only in the
TOML file (``[[outposts]]``); without any, one outpost ``local`` uses the local engine
(``DOCKER_HOST`` or the default socket). Cooldowns, circuit breakers and health counters live in a
small JSON state file of the town's own, so ``--once`` from cron behaves like the loop; a state
file written for another town is never used or replaced (exit 3). See ``docs/scaler.md``.

The scaler talks to the town only over HTTP. This package imports the standard library,
``requests``, ``docker`` and :mod:`tinytown.core` (the states, recommendations, logfmt writer and
timestamp parser it shares with townhall and the worker) — never ``redis``, ``flask`` or the rest
of ``tinytown``; a test holds it to that. It is installed with the ``tinytown`` package (``pip
install``) or runs from the project's image, as ``tinytown-scaler``; ``scaler.py`` at the top of
the repository is its front door.

The rooms, from the command line down:

- :mod:`~tinytown.scaler.cli` — argparse, the loop, ``main`` and exit codes;
  :mod:`~tinytown.scaler.status` — the ``status`` command;
- :mod:`~tinytown.scaler.reconcile` — one pass (the ``Scaler``): read, plan, act, save;
  :mod:`~tinytown.scaler.actions` — starts, drains, restarts, marks, removals;
  :mod:`~tinytown.scaler.report` — what a pass did, as ``--json`` prints it;
- pure policy, plain data in and decisions out (no Docker, no HTTP, no clock):
  :mod:`~tinytown.scaler.policy` (``plan_pass``), :mod:`~tinytown.scaler.placement`,
  :mod:`~tinytown.scaler.health`, :mod:`~tinytown.scaler.crash_loops`,
  :mod:`~tinytown.scaler.memory`;
- what is read: :mod:`~tinytown.scaler.wire` (townhall's answers) through
  :mod:`~tinytown.scaler.townhall` (HTTP, each answer bounded in time and size by
  :mod:`~tinytown.scaler.http_answer`), for a pass by :mod:`~tinytown.scaler.signal_reader`
  (one town, the long-poll); :mod:`~tinytown.scaler.containers` (Docker's) through
  :mod:`~tinytown.scaler.outposts` (the Docker SDK); :mod:`~tinytown.scaler.state_file`;
  :mod:`~tinytown.scaler.notify` — the notification hook;
- configuration: :mod:`~tinytown.scaler.settings` (the table of settings),
  :mod:`~tinytown.scaler.config` (reading and checking), :mod:`~tinytown.scaler.values` (one
  value's type and range), :mod:`~tinytown.scaler.outpost_config` (``[[outposts]]``),
  :mod:`~tinytown.scaler.defaults`;
- :mod:`~tinytown.scaler.cloudrun` — not Docker: executes a Cloud Run job of workers from the
  same signal (``python -m tinytown.scaler.cloudrun``, deploy/cloudrun/scaler-job.yaml);
- :mod:`~tinytown.scaler.errors` (exceptions and ``ExitStatus``), :mod:`~tinytown.scaler.log`,
  :mod:`~tinytown.scaler.epoch` (Unix seconds to and from RFC 3339).
"""
