"""Celery and Dramatiq for ``bench_dispatch.py``: start their workers, see them ready, measure.

Both run the same task (``peer_celery.py``, ``peer_dramatiq.py``): note the clock, start the
no-op process ``true``, then push ``"<token> <clock before the process> <clock after it>"`` to
a list in the peer's own database on the benchmark's Redis. Latency reads the first clock,
throughput the last of the second. Workers run as subprocesses in their own session, so a worker
that ignores SIGTERM is ended with its children by its process group id.
"""

from __future__ import annotations

import importlib
import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
POLL_SECS = 0.001
# A throughput run is timed by the tasks' own clocks, so its waits poll slowly: the poller must
# not take CPU from the workers, and a fast poll costs some systems more than others.
THROUGHPUT_POLL_SECS = 0.02
STOP_WAIT_SECS = 15


def wait_for(check, timeout: float, what: str, poll_secs: float = POLL_SECS):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(poll_secs)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


class DoneListPeer:
    """A peer whose task reports to a done list; subclasses say how to run and submit."""

    module_name = ""

    def __init__(self, name: str, url: str, log_dir: Path):
        import redis

        os.environ["BENCH_PEER_REDIS_URL"] = url  # read by the peer module, here and in workers
        self.module = importlib.import_module(self.module_name)
        self.name, self.url, self.log_dir = name, url, log_dir
        self.r = redis.Redis.from_url(url, db=self.module.DB, decode_responses=True)
        self.r.delete(self.module.DONE_KEY, self.module.READY_KEY)
        self.tokens = itertools.count()

    def command(self, n: int) -> list[str]:
        raise NotImplementedError

    def submit(self, token: str) -> None:
        raise NotImplementedError

    def start(self, n: int) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": str(HERE)}
        with open(self.log_dir / f"{self.name}-worker-{n}.log", "w") as log:
            proc = subprocess.Popen(
                self.command(n), env=env, stdout=log, stderr=log, start_new_session=True
            )
        proc.leads_group = True  # see stop()
        return proc

    def wait_ready(self, count: int, timeout: float) -> None:
        wait_for(
            lambda: self.r.scard(self.module.READY_KEY) >= count,
            timeout,
            f"{count} {self.name} worker(s) consuming",
        )

    def latency(self, timeout: float) -> tuple[float, None]:
        """(submit → just before the task's process starts, no reference) in seconds."""
        token = f"l{next(self.tokens)}"
        submitted = time.time()
        self.submit(token)
        line = wait_for(lambda: self.r.lpop(self.module.DONE_KEY), timeout, f"a {self.name} task")
        done, spawn_at, _ = line.split()
        if done != token:
            raise RuntimeError(f"{self.name}: expected task {token}, {done} finished")
        return float(spawn_at) - submitted, None

    def throughput(self, n: int, timeout: float) -> float:
        """n tasks submitted at once: n ÷ (first submit → last completion), tasks per second."""
        key = self.module.DONE_KEY
        self.r.delete(key)
        start = time.time()
        for i in range(n):
            self.submit(f"t{i}")
        wait_for(
            lambda: self.r.llen(key) >= n, timeout, f"{n} {self.name} tasks", THROUGHPUT_POLL_SECS
        )
        last = max(float(line.split()[2]) for line in self.r.lrange(key, 0, -1))
        self.r.delete(key)
        return n / (last - start)


class CeleryPeer(DoneListPeer):
    """``celery worker --pool=solo --concurrency=1``: the task runs in the worker's own process,
    as agent_worker's CLI start and RQ's SimpleWorker do. Gossip, mingle and heartbeats are off:
    cluster chatter that is not on the dispatch path, only noise on it."""

    module_name = "peer_celery"

    def command(self, n: int) -> list[str]:
        return [
            sys.executable, "-m", "celery", "-A", self.module_name, "worker",
            "--pool=solo", "--concurrency=1", "-Q", self.module.QUEUE, "-n", f"bench{n}@%h",
            "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING",
        ]  # fmt: skip

    def submit(self, token: str) -> None:
        self.module.run_true.apply_async((token,), queue=self.module.QUEUE)


class DramatiqPeer(DoneListPeer):
    """``dramatiq --processes 1 --threads 1``: one worker process with one worker thread."""

    module_name = "peer_dramatiq"

    def command(self, n: int) -> list[str]:
        return [
            sys.executable, "-m", "dramatiq", self.module_name, "--processes", "1",
            "--threads", "1", "--queues", self.module.QUEUE,
        ]  # fmt: skip

    def submit(self, token: str) -> None:
        self.module.run_true.send(token)


PEERS = {"celery": CeleryPeer, "dramatiq": DramatiqPeer}


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, a bounded wait, SIGKILL; then, for a peer's worker, SIGKILL to the process group
    this benchmark created for it (children its main process left behind)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_WAIT_SECS)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if getattr(proc, "leads_group", False):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
