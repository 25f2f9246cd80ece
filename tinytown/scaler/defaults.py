"""Every default of the scaler, named with its unit, and why it is what it is.

The settings that can be changed (``--max-workers``, ``max_workers = …`` in TOML) take their
defaults from here (:mod:`tinytown.scaler.settings`); the rest are fixed parts of the contract
with the worker image and Docker.
"""

from __future__ import annotations

# --- townhall --------------------------------------------------------------------------------
TOWNHALL_URL = "http://127.0.0.1:8080"
HTTP_TIMEOUT_SECS = 5.0  # connecting, and each read; a whole call: this (plus a long-poll's wait)
# The most an answer may hold (tinytown.scaler.http_answer): a signal is ~1 KB, an agent in the
# list ~0.5 KB (10 000 agents ~5 MB); a Cloud Run Admin API page of executions ~100 KB.
SIGNAL_MAX_BYTES = 1024 * 1024
AGENTS_MAX_BYTES = 32 * 1024 * 1024
REPORT_MAX_BYTES = 64 * 1024
RUN_API_MAX_BYTES = 8 * 1024 * 1024
# Passes never follow each other closer than this, even when a long-poll comes back at once
# (a townhall, or a proxy in front of it, that does not wait).
MIN_PASS_GAP_SECS = 2.0

# --- scaling -----------------------------------------------------------------------------------
MIN_WORKERS = 0
MAX_WORKERS = 10
INTERVAL_SECS = 10.0  # Buildkite's scaler polls every 10 s; Nomad evaluates every 10 s
# Between passes the scaler long-polls townhall's signal (GET /api/scaling?wait=&since=) and
# passes again the moment it changes: this long with no worker running (nothing to watch),
# interval_secs otherwise (running workers' health is checked every pass).
SIGNAL_WAIT_SECS = 25  # also the longest townhall accepts (its SCALING_WAIT_MAX_SECS)
# Scale up at once, scale down slowly (peers: 5 min in KEDA, HPA and Nomad).
SCALE_DOWN_COOLDOWN_SECS = 300.0
SCALE_DOWN_AFTER_PASSES = 3  # a surplus must persist this many passes in a row (hysteresis)
KEEP_EXITED_PER_OUTPOST = 3

# --- health ------------------------------------------------------------------------------------
# Workers heartbeat every 5 s; 90 s is Docker HEALTHCHECK's 30 s x 3 and Gas Town's "3 missed".
UNHEALTHY_AFTER_SECS = 90.0
RESTART_AFTER_FAILURES = 3
MAX_RESTARTS_PER_CONTAINER = 3  # then mark it and notify instead of restarting forever
START_GRACE_SECS = 120.0  # a younger (or just restarted) container is not judged
RESTART_TIMEOUT_SECS = 30.0  # docker restart: SIGTERM, then SIGKILL after this (drain is 25 s)
# /api/scaling and /v1/agents are read a moment apart: their agent counts may differ by this much
# (plus one per container still within its start grace) before the answers count as inconsistent.
EVIDENCE_TOLERANCE_AGENTS = 1

# --- outposts: circuit breakers and crash loops ---------------------------------------------
LOCAL_OUTPOST = "local"
DOCKER_TIMEOUT_SECS = 30.0
BREAKER_BACKOFF_SECS = 30.0
BREAKER_BACKOFF_MAX_SECS = 600.0
# A worker that exits non-zero this soon after starting is crashing, not finishing: bad
# configuration exits 3 at once, Redis unreachable exits 4 after the worker's 60 s of retries.
QUICK_EXIT_SECS = 120.0
CRASH_LOOP_AFTER_EXITS = 3  # quick non-zero exits in a row that hold starts on an outpost
CRASH_LOG_LINES = 20  # log lines of the last crashed worker sent with the notification
NOTIFY_TIMEOUT_SECS = 10.0

# --- worker containers -------------------------------------------------------------------------
# The worker image's town directory is /workspace and [agent] workspace_dir is .tt/workspace
# under it; the volume covers all of .tt (checkouts and task logs) because Docker would create a
# missing /workspace/.tt as root, where the worker (uid 10001) could not write its logs.
WORKSPACE_MOUNT = "/workspace/.tt"
WORKSPACE_VOLUME = "tinytown-{town}-workspace"
NO_WORKSPACE_VOLUME = "none"
WORKSPACE_INIT_MOUNT = "/tinytown-workspace"
# Each worker container's own evidence of life: a Docker healthcheck that reads the health file
# the worker touches after every heartbeat Redis acknowledged (tinytown/worker/health_file.py). It
# is given at create, so derived images need nothing; -P keeps a checkout in /workspace from
# shadowing the installed package.
HEALTHCHECK = "python -P -m tinytown.worker.health_file"
IMAGE_HEALTHCHECK = "image"  # healthcheck = "image": pass none, the image's own applies
HEALTH_FILE_ENV = "TINYTOWN_HEALTH_FILE"  # read by the worker and by the healthcheck
# inside the worker's container (its own /tmp, where only the worker runs), never on a shared volume
HEALTH_FILE = "/tmp/tinytown-worker.health"  # nosec B108
HEARTBEAT_INTERVAL_SECS = 5.0  # the workers' [agent] heartbeat_interval_secs default
HEALTHCHECK_TIMEOUT_SECS = 10.0  # a Python start on a loaded VM can take seconds
HEALTHCHECK_RETRIES = 2  # the file already allows 3 missed heartbeats; 2 checks in a row confirm

# --- the state file --------------------------------------------------------------------------
STATE_FILE = "tinytown-scaler/{town}/state.json"  # under $XDG_STATE_HOME, else ~/.local/state
STATE_VERSION = 1
