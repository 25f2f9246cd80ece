"""Every default in one place, each with its unit in its name.

Operational advice sits next to the value; the README's configuration reference mirrors this
module.
"""

# --- town -------------------------------------------------------------------------------------
CONFIG_FILENAME = "tinytown.toml"
RUNTIME_DIRNAME = ".tt"
DEFAULT_CLI = "claude"
MAX_AGENTS = 10

# --- redis ------------------------------------------------------------------------------------
REDIS_SOCKET_PATH = ".tt/redis.sock"
REDIS_PIDFILE = ".tt/redis.pid"
REDIS_LOGFILE = ".tt/redis.log"
REDIS_AOF_PATH = ".tt/redis.aof"
REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
REDIS_BIND = "127.0.0.1"
REDIS_MIN_VERSION = (7, 0)
REDIS_CONNECT_TIMEOUT_SECS = 5.0
# How long one reply may take, set explicitly rather than left to redis-py's default (5 s in
# 8.x, none before): a blocking read (the worker's XREADGROUP … BLOCK) waits its block time
# plus this, so it never meets the timeout however the library's defaults change.
REDIS_SOCKET_TIMEOUT_SECS = 10.0
# RESP version, also explicit: redis-py 8 moved its default from 2 to 3. RESP2 is what every
# Redis-compatible server and proxy speaks; the docket's raw reply parsing handles both.
REDIS_PROTOCOL = 2
# A connection idle this long is PINGed before reuse. Longer than any period of an idle worker's
# connections (its heartbeat every 30 s, its read at most every claim timeout, 60 s), so an idle
# worker pays no PING; a connection cut meanwhile is reconnected by redis-py's retry anyway.
REDIS_HEALTH_CHECK_INTERVAL_SECS = 120
REDIS_READY_TIMEOUT_SECS = 10.0  # how long to wait for a just-started embedded server
REDIS_READY_POLL_SECS = 0.05
REDIS_STOP_TIMEOUT_SECS = 10.0

# --- townhall ---------------------------------------------------------------------------------
TOWNHALL_BIND = "127.0.0.1"
TOWNHALL_PORT = 8080
TOWNHALL_REQUEST_TIMEOUT_MS = 30_000
TOWNHALL_WORKERS = 2
TOWNHALL_MAX_BODY_BYTES = 1024 * 1024
# Townhall's gunicorn worker (tinytown.api.server.BufferingWorker) reads each request whole on
# its event loop before a thread serves it. A request must arrive within this many seconds of its
# first byte (of the connection's accept for the first one, TLS handshake included), else 408.
TOWNHALL_REQUEST_READ_TIMEOUT_SECS = 10
TOWNHALL_THREADS = 8  # pool threads per gunicorn worker: requests served at once, per process
# Open connections per worker, whatever their state; each holds at most one request's bytes
# (head + max_body_bytes), so this also bounds the worker's buffer memory.
TOWNHALL_WORKER_CONNECTIONS = 100
TOWNHALL_KEEPALIVE_SECS = 5  # an idle kept-alive connection is closed after this
# gunicorn's own header limits, spelled out: request line → 414, field count or size → 431.
TOWNHALL_REQUEST_LINE_MAX_BYTES = 4094
TOWNHALL_HEADER_FIELDS_MAX = 100
TOWNHALL_HEADER_FIELD_MAX_BYTES = 8190
OIDC_CLOCK_SKEW_SECS = 60
TOWNHALL_RETRY_AFTER_SECS = 5  # Retry-After on 503 when Redis is unreachable
TOWNHALL_PAGE_LIMIT = 100  # default page size of list routes
TOWNHALL_PAGE_LIMIT_MAX = 1000
TOWNHALL_INBOX_PEEK = 100  # messages shown by the inbox route (upstream: first 100)
TOWNHALL_API_KEY_FILENAME = ".townhall-api-key"  # container bootstrap writes the raw key here
# A successful Argon2 verification is remembered this long under a keyed digest of the key, so
# steady traffic pays Argon2 (~tens of ms) once per key per process per window, not per request.
API_KEY_CACHE_TTL_SECS = 60
API_KEY_CACHE_MAX_ENTRIES = 1024
# OIDC: the JWKS document is cached; an unknown kid refetches it, at most once per interval.
JWKS_CACHE_TTL_SECS = 300
JWKS_MIN_REFETCH_INTERVAL_SECS = 10
JWKS_FETCH_TIMEOUT_SECS = 5
# Townhall's keeper (tinytown.keeper) wakes when the next agent's heartbeat window can run out,
# no sooner than this (and no later than one dead-after window of [agent] heartbeat_interval_secs);
# one process recovers at a time, under a lease that lapses this long after a holder dies.
KEEPER_MIN_SLEEP_SECS = 1.0
KEEPER_LEASE_SECS = 30
DISPATCHER_FRESH_SECS = 90  # /ready reports the dispatcher "running" if it ticked this recently

# --- input rules (tinytown.core.inputs): request bodies, tt arguments ---------------------------
INPUT_MAX_DEPTH = 32  # nesting of a JSON body
INPUT_MAX_NUMBER_CHARS = (
    32  # one number literal in a JSON body (Python's own int limit is 4300 digits)
)
INPUT_MAX_TEXT_CHARS = 256 * 1024  # a description, message, result or reason
INPUT_MAX_LINE_CHARS = 1024  # a one-line value without a rule of its own (a doc path, an artifact)
INPUT_MAX_TAGS = 50
INPUT_MAX_TAG_CHARS = 100
INPUT_MAX_BRANCH_CHARS = 200
INPUT_MAX_REPO_CHARS = 2048
MISSION_MAX_OBJECTIVES = 100
MISSION_MAX_ITEMS = 200  # work items in one mission
MISSION_MAX_PARALLEL_ITEMS = 2  # policy default: items whose tasks are queued or run at once
MISSION_MAX_ATTEMPTS = 3  # policy default: runs of an item's task (and review rounds)
MISSION_HELP_AFTER_SECS = 600  # policy default: no progress this long → mission_help_needed
MISSION_GH_BUDGET_SECS = 15  # POST /v1/missions runs gh for issues at most this long in all
INBOX_MAX_MESSAGES = 1_000  # an agent's inbox (each of its two lists) takes no more
PROMPT_MESSAGES_MAX = 100  # a task's prompt carries at most this many of them (the rest wait)
MISSION_TICK_SECS = 5  # the dispatcher's backstop tick; events wake it at once
MISSION_QUIET_MAX_SECS = 60  # a mission quiet tick after tick steps less often, down to this
MISSION_IDLE_RECHECK_SECS = 1_800  # with no active mission, it looks for one this often (a new
# mission's event wakes it at once; this is the safety net)
MISSION_LEASE_SECS = 15  # a dispatcher's lease on one mission; refreshed every tick
MISSION_EVENTS_SHOWN = 50  # the latest events GET /v1/missions/{id}?include_events=true shows
SAMPLE_INTERVAL_SECS = 60  # townhall samples queue depth and live agents this often (the chart)
SAMPLE_QUIET_MAX_SECS = 1_800  # ...but skips intervals without events, for at most this long
SAMPLES_MAXLEN = 2_000  # samples kept (about a day and a half at 60 s)
PAGE_REFRESH_SECS = 10  # the status page reloads itself this often
PAGE_OUTPUT_CHUNKS = 4  # a task's page shows its newest output chunks (each ≤ 16 KiB)
PAGE_CHART_HOURS = 6  # the status page's chart spans this many hours
PAGE_SESSION_MAX_AGE_SECS = (
    30 * 86400
)  # a status-page log-in (its cookie and session) lasts this long
MISSION_RETRY_SECS = 2  # after a Redis error, the dispatcher tries again this much later

# --- agent worker -----------------------------------------------------------------------------
# 300 s matches KEDA's cooldown and Semaphore's idle default; coding agents that are slow to
# start may want more. 0 disables the idle exit.
IDLE_TIMEOUT_SECS = 300
# "Dead" = no heartbeat for DEAD_AFTER_HEARTBEATS intervals.
HEARTBEAT_INTERVAL_SECS = 5
DEAD_AFTER_HEARTBEATS = 3
# An idle worker (no task held) beats this many times less often: 30 s by default, so its death
# is seen within 90 s instead of 15 s, and an idle worker costs Redis about 25 commands a minute
# instead of ~290 (docs/benchmarks.md, "Idle cost"). `[agent] idle_heartbeat_secs` sets it.
IDLE_HEARTBEAT_FACTOR = 6
# A pending docket entry idle longer than this, held by an agent whose heartbeat is stale, is
# taken over by another worker. Live workers refresh their own entries well within it.
CLAIM_TIMEOUT_SECS = 60
MAX_ATTEMPTS = 3
TASK_TIMEOUT_SECS = 3600
# docker stop waits 10 s, Kubernetes 30 s by default; raise the orchestrator's grace period too.
DRAIN_TIMEOUT_SECS = 25
RESULT_TAIL_BYTES = 4096
# A stopped CLI gets SIGTERM on its whole process group, then SIGKILL after this grace.
CLI_STOP_GRACE_SECS = 5
# The stop flag an agent stopped from outside gets (POST /v1/agents/{agent}/kill) expires after
# this long, as upstream's does.
STOP_FLAG_TTL_SECS = 3600
# An agent's activity log (tt:<town>:activity:<id>, upstream's): this many lines, kept this long.
ACTIVITY_LOG_LINES = 10
ACTIVITY_LOG_TTL_SECS = 3600
# How often a worker waiting on its CLI wakes to check signals and the task timeout.
CLI_POLL_SECS = 0.2
# How long a worker's control listener waits for a nudge before it looks whether it should end
# (and how long it waits before listening again after losing Redis).
CONTROL_POLL_SECS = 1.0
# A signal or stop nudge that arrives just before an idle worker's read begins retries its
# CLIENT UNBLOCK this many times, this far apart.
CONTROL_UNBLOCK_TRIES = 20
CONTROL_UNBLOCK_PAUSE_SECS = 0.05
# A worker that loses Redis retries with exponential backoff (first → max) and exits with
# code 4 after this long without a connection; `agent_worker.py --redis-retry-secs` overrides.
REDIS_RETRY_SECS = 60
REDIS_BACKOFF_FIRST_SECS = 0.1
REDIS_BACKOFF_MAX_SECS = 5.0
TASK_LOG_DIR = ".tt/logs/tasks"  # one log file per task: <task id>.log, appended per attempt
GIT_TIMEOUT_SECS = 600

# --- docket (Redis Streams) -------------------------------------------------------------------
DOCKET_GROUP = "workers"
DOCKET_MAXLEN = 100_000  # approximate trim of acknowledged history
EVENTS_MAXLEN = 10_000  # the town's event stream keeps about this many (approximate trim)
MISSION_EVENTS_MAXLEN = 1_000  # a mission's own event stream
EVENTS_BLOCK_SLICE_MS = 5_000  # a long-poll waits in blocking reads of at most this
EVENTS_WAIT_MAX_SECS = 25  # the longest wait= GET /v1/events accepts
EVENTS_PAGE_MAX = 1_000  # the most events one read returns
# Long-polls (GET /v1/events?wait=…) waiting at once per townhall process: each holds a thread
# while it waits, so at most half of them; one more is answered at once, without waiting.
EVENTS_WAITERS_MAX = TOWNHALL_THREADS // 2
# Each townhall process reads the event feed once (tinytown.store.pump), in blocking reads of at
# most this long: a quiet town costs one command per this many seconds per process, and every
# background duty and long-poll of the process waits on that one read.
PUMP_BLOCK_SECS = 55
PUMP_READ_COUNT = 1_000  # events one pump read takes (it only needs to know something came)
PUMP_RETRY_SECS = 2  # while Redis is unreachable the pump tries again this often
# GET /api/scaling?wait=: the longest wait accepted, and how old a process's cached signal may
# be before it is computed again even though no event came (a safety net; events drive it).
SCALING_WAIT_MAX_SECS = 25
SCALING_CACHE_MAX_SECS = 600

# --- auth -------------------------------------------------------------------------------------
ARGON2_MEMORY_KIB = 19456
ARGON2_TIME_COST = 2
ARGON2_PARALLELISM = 1
ARGON2_HASH_LEN_BYTES = 32
ARGON2_SALT_LEN_BYTES = 16

# --- first hour: task tokens, agent names, agent retention ------------------------------------
# A task token (TINYTOWN_TASK_TOKEN) lives in Redis at most the task timeout plus this, in case
# its worker dies before it can delete it; it is refused anyway once its task is not running.
TASK_TOKEN_GRACE_SECS = 60
TASK_TOKEN_SECRET_BYTES = 32  # random bytes in a task token's secret part
AGENT_NAME_SUFFIX_HEX = 4  # the default agent name: host name, "-", this many hex digits
AGENT_NAME_MAX_CHARS = 64  # the longest name inputs.NAME_RULE allows (a long host is cut)
# Stopped and errored agent records are deleted by townhall's keeper this long after their last
# heartbeat window ended ([agent] retention_secs; 0 keeps them), looked for at most this often.
AGENT_RETENTION_SECS = 86_400
AGENT_PRUNE_INTERVAL_SECS = 3_600  # records are kept a day: an hour late is nothing, and an
# idle town's keeper then wakes once an hour (a registering worker's event wakes it at once)
AGENT_PRUNE_BATCH = 1000  # records per state deleted per pass; the next pass takes more

# --- task output: a running task's output in Redis (tt:<town>:task:<id>:output) ----------------
# Per task, the stream keeps the newest output up to this many bytes (plus at most one chunk);
# older chunks are trimmed. The local log file (.tt/logs/tasks/<id>.log) keeps all of it.
TASK_OUTPUT_MAX_BYTES = 1024 * 1024
TASK_OUTPUT_CHUNK_MAX_BYTES = 16 * 1024  # the most of the CLI's output one chunk (one XADD) holds
TASK_OUTPUT_FLUSH_SECS = 0.2  # while the CLI runs, its new output is sent this often
TASK_OUTPUT_TTL_SECS = 7 * 86_400  # the stream expires this long after its last write
TASK_OUTPUT_RETRY_SECS = 1.0  # after a failed write, the worker tries again this much later
# Once the CLI exits, the worker waits at most this long for its last output to be sent before it
# writes the task's final state (Redis being slow or away never holds the task up for longer).
TASK_OUTPUT_STOP_WAIT_SECS = 2.0
TASK_OUTPUT_PAGE_MAX = 1_000  # chunks one read returns at most (GET /v1/tasks/{id}/log limit)
