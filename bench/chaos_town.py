"""Chaos at scale (issue 16 §5): real workers killed at random while work flows, and what it cost.

One run (:func:`run_chaos`) puts together:

- the project's own Redis (:class:`~tinytown.connection.embedded.EmbeddedServer`, unix socket),
  with AOF on (the town's ``[redis] persist``: ``appendfsync everysec``) for the Redis-restart
  variant;
- a townhall under gunicorn, whose keeper marks dead workers stopped and returns their work;
- W real ``agent_worker.py`` processes (heartbeat every second, take-over after 2 s idle), whose
  coding CLI is a stand-in: it appends ``<task id> <attempt> <agent id>`` to a run log when it
  starts, then sleeps ``task_secs``;
- a **submitter** that puts N tasks on the docket, at most ``backlog`` waiting at a time, so work
  keeps arriving all through the run; each with an id chosen here and submitted idempotently
  (retried with the same id until Redis acknowledges it), so every one of the N is acknowledged;
- a **killer** that SIGKILLs a random live worker every 2–5 s, and a **supervisor** that starts a
  new worker in the place of any that exited.

A restarted worker is a new agent with a fresh ``TINYTOWN_AGENT_NAME`` (``restart_as="fresh"``,
the default): the killed one still looks alive for up to 3 heartbeats, so its name would be
refused (exit 3) for that long, and its work takes the way a lost VM's does — an idle worker's
take-over or the keeper. ``restart_as="adopt"`` reuses the killed agent's id
(``TINYTOWN_AGENT_ID``), as a container restarted under its identity does: it resumes the
entries it held at once.

With ``redis_restart`` Redis is stopped with ``SHUTDOWN`` (what ``tt redis stop`` does; it
fsyncs the AOF, so every acknowledged write survives) once half the tasks completed, kept down
``redis_down_secs`` and started again on the same files; a probe records ``/ready`` throughout.

The result counts what matters: every acknowledged task completed (none lost, none failed), and
duplicate runs (CLI starts per task beyond the first) no more than kills. Every process started
is stopped by PID at the end, and any process left carrying the run's marker is reported and
killed. Used by ``bench/bench_chaos.py`` and ``tests/test_chaos.py``.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import redis
import requests

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.chaos_report import tally  # noqa: E402
from tests.scaler_stack import TownhallProcess  # noqa: E402
from tinytown.config import load_config  # noqa: E402
from tinytown.connection.embedded import EmbeddedServer  # noqa: E402
from tinytown.core.records import new_id  # noqa: E402
from tinytown.store import Town  # noqa: E402

WORKER = ROOT / "agent_worker.py"
MARKER_ENV = "CHAOS_RUN_ID"  # every process of a run inherits it: strays are found by it
AGENT = {
    "idle_timeout_secs": 0,
    "heartbeat_interval_secs": 1,
    "claim_timeout_secs": 2,
    "max_attempts": 3,
    "task_timeout_secs": 60,
    "drain_timeout_secs": 5,
}
SUPERVISE_EVERY_SECS = 0.2
WORKERS_READY_SECS = 60.0
PROBE_EVERY_SECS = 0.1
PROBE_TIMEOUT_SECS = 1.0
WATCH_EVERY_SECS = 0.1
SUBMIT_BATCH = 50
SUBMIT_RETRY_SECS = 0.2
STOP_WORKERS_SECS = 15.0
STRAY_GRACE_SECS = 8.0  # a dead worker's leash stops its CLI: SIGTERM, SIGKILL 5 s later
_FIELD = re.compile(r"\b(event|agent|task)=(\S+)")


@dataclass
class Chaos:
    """One run's settings (the bench's defaults; the CI test passes smaller ones)."""

    tasks: int = 2000
    workers: int = 4
    task_secs: float = 0.05
    kill_every_secs: tuple[float, float] = (2.0, 5.0)
    restart_as: str = "fresh"  # or "adopt"
    redis_restart: bool = False
    redis_down_secs: float = 1.0
    backlog: int = 200
    timeout_secs: float = 900.0
    seed: int | None = None
    keep_dir: bool = False


@dataclass
class Incarnation:
    """One worker process in a slot; a slot gets a new one whenever its process exited."""

    slot: int
    name: str
    proc: subprocess.Popen
    log: Path
    killed_at: float | None = None
    exit_code: int | None = None

    def events(self) -> list[dict]:
        out = []
        for text in self.log.read_text(errors="replace").splitlines():
            fields = dict(_FIELD.findall(text))
            if "event" in fields:
                out.append(fields)
        return out

    def agent_id(self) -> str | None:
        return next(
            (e["agent"] for e in self.events() if e.get("agent") not in (None, "None")), None
        )

    def task_held_at_death(self, started: list[str] = ()) -> str | None:
        """The task it had started and not finished when it died: from its own log, or, when
        the SIGKILL came before the log line was written, the last task its CLI started
        (``started``: this agent's task ids in the order the runs log has them)."""
        held, finished = None, set()
        for e in self.events():
            if e["event"] == "task_started":
                held = e.get("task")
            elif e["event"] in ("task_finished", "task_handed_back", "task_given_back"):
                finished.add(e.get("task"))
                held = None
        if held is None and started and started[-1] not in finished:
            held = started[-1]
        return held


class Run:
    """The processes and threads of one run; :meth:`stop_chaos` and :meth:`stop_services` stop
    every one of them."""

    def __init__(self, chaos: Chaos, work_dir: Path):
        self.chaos, self.dir = chaos, work_dir
        self.rng = random.Random(chaos.seed)
        self.marker = uuid.uuid4().hex
        self.t0 = time.monotonic()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.slots: list[Incarnation] = []
        self.gone: list[Incarnation] = []
        self.kills = 0
        self.ready: list[tuple[float, int]] = []  # (secs since start, status) on every change
        self.redis_timeline: dict[str, float] = {}
        self.submitted: list[str] = []
        self.submit_errors = 0
        self.ids = [new_id() for _ in range(chaos.tasks)]
        self.runs_log = work_dir / "runs.log"
        self.redis = self._redis_home()
        self.town_dir = self._town_dir()
        self.townhall = TownhallProcess(self.town_dir, work_dir / "townhall.log")
        self.threads: list[threading.Thread] = []

    def secs(self) -> float:
        return round(time.monotonic() - self.t0, 3)

    # -- set-up -----------------------------------------------------------------------------

    def _redis_home(self) -> EmbeddedServer:
        home = self.dir / "redis"
        home.mkdir()
        persist = "true" if self.chaos.redis_restart else "false"
        (home / "tinytown.toml").write_text(
            f'name = "chaos-redis"\n\n[redis]\npersist = {persist}\n'
        )
        return EmbeddedServer(load_config(home, env={}))

    def _town_dir(self) -> Path:
        town = self.dir / "town"
        town.mkdir()
        cli = self.dir / "cli.sh"
        cli.write_text(
            'echo "$TINYTOWN_TASK_ID $TINYTOWN_TASK_ATTEMPT $TINYTOWN_AGENT_ID"'
            f" >> {self.runs_log}\n"
            + (f"sleep {self.chaos.task_secs}\n" if self.chaos.task_secs else "")
        )
        agent = "\n".join(f"{k} = {v}" for k, v in AGENT.items())
        (town / "tinytown.toml").write_text(
            f'name = "chaos"\ndefault_cli = "standin"\n\n[redis]\nurl = "{self.redis.target.url}"\n'
            f'\n[agent]\n{agent}\n\n[agent_clis.standin]\ncommand = "sh {cli}"\n'
        )
        return town

    def start(self) -> Town:
        self.redis.ensure_running()
        self.townhall.start()
        town = Town.connect(load_config(self.town_dir, env={}), start_server=False)
        for slot in range(self.chaos.workers):
            self.slots.append(self._spawn(slot, 0))
        deadline = time.monotonic() + WORKERS_READY_SECS
        while town.agents.counts().live["idle"] < self.chaos.workers:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.chaos.workers} workers not idle in {WORKERS_READY_SECS} s"
                )
            time.sleep(WATCH_EVERY_SECS)
        self.started_at = self.secs()  # the clock of wall_secs starts with the first submission
        for target in (self._supervise, self._kill, self._probe_ready):
            self.threads.append(threading.Thread(target=target, daemon=True))
        self.threads.append(threading.Thread(target=self._submit, args=(town,), daemon=True))
        for thread in self.threads:
            thread.start()
        return town

    def _spawn(self, slot: int, generation: int, agent_id: str | None = None) -> Incarnation:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("TINYTOWN_") and k != "REDIS_URL"
        }
        name = f"chaos-{slot}-{generation}"
        env.update({"TINYTOWN_AGENT_NAME": name, "PYTHONUNBUFFERED": "1", MARKER_ENV: self.marker})
        if agent_id:
            env["TINYTOWN_AGENT_ID"] = agent_id
        log = self.dir / f"worker-{slot}-{generation}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(
                [sys.executable, str(WORKER), "--town", str(self.town_dir)],
                cwd=self.town_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        return Incarnation(slot, name, proc, log)

    # -- the chaos --------------------------------------------------------------------------

    def _supervise(self) -> None:
        generation = self.chaos.workers
        while not self.stopping.wait(SUPERVISE_EVERY_SECS):
            with self.lock:
                for i, inc in enumerate(self.slots):
                    if inc.proc.poll() is None:
                        continue
                    inc.exit_code = inc.proc.returncode
                    self.gone.append(inc)
                    adopt = self.chaos.restart_as == "adopt" and inc.killed_at is not None
                    self.slots[i] = self._spawn(inc.slot, generation, adopt and inc.agent_id())
                    generation += 1

    def _kill(self) -> None:
        low, high = self.chaos.kill_every_secs
        while not self.stopping.wait(self.rng.uniform(low, high)):
            with self.lock:
                live = [inc for inc in self.slots if inc.proc.poll() is None]
                if not live:
                    continue
                victim = self.rng.choice(live)
                victim.killed_at = self.secs()
                os.kill(victim.proc.pid, signal.SIGKILL)
                self.kills += 1

    def _probe_ready(self) -> None:
        session = requests.Session()
        while not self.stopping.wait(PROBE_EVERY_SECS):
            try:
                status = session.get(self.townhall.url + "/ready", timeout=PROBE_TIMEOUT_SECS)
                code = status.status_code
            except requests.RequestException:
                code = 0  # townhall itself did not answer
            if not self.ready or self.ready[-1][1] != code:
                self.ready.append((self.secs(), code))

    def _submit(self, town: Town) -> None:
        n = 0
        while n < len(self.ids) and not self.stopping.is_set():
            try:
                room = self.chaos.backlog - town.tasks.counts()["pending"]
                if room <= 0:
                    time.sleep(WATCH_EVERY_SECS)
                    continue
                for _ in range(min(room, SUBMIT_BATCH, len(self.ids) - n)):
                    # task_id makes the add idempotent: a retry after a lost reply adds nothing
                    town.tasks.add(f"chaos task {n}", task_id=self.ids[n])
                    self.submitted.append(self.ids[n])
                    n += 1
            except (redis.ConnectionError, redis.TimeoutError):
                self.submit_errors += 1
                time.sleep(SUBMIT_RETRY_SECS)

    def restart_redis(self) -> None:
        """SHUTDOWN (AOF fsynced, RDB saved), ``redis_down_secs`` down, started on its files."""
        self.redis_timeline["down_at"] = self.secs()
        self.redis.stop()
        self.redis_timeline["stopped_at"] = self.secs()
        time.sleep(self.chaos.redis_down_secs)
        self.redis.ensure_running()
        self.redis_timeline["up_at"] = self.secs()

    # -- the end ----------------------------------------------------------------------------

    def stop_chaos(self) -> None:
        """Stop the threads, then the workers by PID (SIGTERM: an idle worker leaves at once;
        SIGKILL after ``STOP_WORKERS_SECS``)."""
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=10)
        live = [inc for inc in self.slots if inc.proc.poll() is None]
        for inc in live:
            inc.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_WORKERS_SECS
        for inc in live:
            try:
                inc.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                inc.proc.kill()
                inc.proc.wait()

    def stop_services(self) -> int:
        """Townhall and Redis by PID, then any process still carrying this run's marker (a CLI
        or leash left behind), killed by PID; returns how many of those there were."""
        self.townhall.stop()
        self.redis.stop()
        deadline = time.monotonic() + STRAY_GRACE_SECS
        while (pids := marked_pids(self.marker)) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(pids)


def marked_pids(marker: str) -> list[int]:
    needle = f"{MARKER_ENV}={marker}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if needle in (proc / "environ").read_bytes().split(b"\0"):
                    pids.append(int(proc.name))
            except OSError:
                pass
    return pids


def wait_done(run: Run, town: Town) -> float | None:
    """Poll until every task is in a final state (restarting Redis half-way when asked);
    returns the seconds it took, or None on the timeout."""
    chaos, n = run.chaos, run.chaos.tasks
    deadline = time.monotonic() + chaos.timeout_secs
    while time.monotonic() < deadline:
        try:
            counts = town.tasks.counts()
        except (redis.ConnectionError, redis.TimeoutError):
            time.sleep(WATCH_EVERY_SECS)
            continue
        if chaos.redis_restart and not run.redis_timeline and counts["completed"] >= n // 2:
            run.restart_redis()
            continue
        if counts["completed"] + counts["failed"] + counts["cancelled"] >= n:
            return round(run.secs() - run.started_at, 2)
        time.sleep(WATCH_EVERY_SECS)
    return None


def run_chaos(chaos: Chaos, work_dir: Path | None = None) -> dict:
    """One chaos run; returns its summary (``bench/chaos_report.py``). The run's directory
    (logs, run log) is removed unless ``keep_dir`` or the run found a problem."""
    work_dir = work_dir or Path(tempfile.mkdtemp(prefix="ttc-", dir="/tmp"))
    run = Run(chaos, work_dir)
    try:
        town = run.start()
        wall_secs = wait_done(run, town)
        run.stop_chaos()
        summary = tally(run, town, wall_secs)
    finally:
        run.stop_chaos()
        strays = run.stop_services()
    summary["stray_processes"] = strays
    if strays:
        summary["problems"].append(f"{strays} process(es) outlived the run (killed by PID)")
    if chaos.keep_dir or summary["problems"]:
        summary["work_dir"] = str(work_dir)
    else:
        shutil.rmtree(work_dir, ignore_errors=True)
    return summary
