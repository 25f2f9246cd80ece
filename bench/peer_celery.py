"""The Celery side of ``bench_dispatch.py``: an app on the benchmark's Redis and its one task.

Imported by the benchmark (to submit) and by ``celery -A peer_celery worker`` (to run), both with
``BENCH_PEER_REDIS_URL`` set to the redis-py URL of the benchmark's server. Celery uses its own
database number there. Settings follow the issue: ``task_acks_late`` and a prefetch multiplier
of 1, results ignored (nothing waits on Celery's result backend).
"""

from __future__ import annotations

import os
import subprocess
import time
from urllib.parse import urlsplit, urlunsplit

import redis
from celery import Celery
from celery.signals import worker_ready

DB = 1
QUEUE = "tt-bench-celery"
DONE_KEY = "bench:done"  # "<token> <clock before the process> <clock after it>", one per task
READY_KEY = "bench:ready"  # the pids of workers that are consuming

URL = os.environ["BENCH_PEER_REDIS_URL"]


def kombu_url(url: str, db: int) -> str:
    """kombu spells a unix socket ``redis+socket://`` and the database ``virtual_host``."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"redis+socket://{parts.path}?virtual_host={db}"
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", "", ""))


results = redis.Redis.from_url(URL, db=DB)
app = Celery("peer_celery", broker=kombu_url(URL, DB))
app.conf.update(
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench.run_true")
def run_true(token: str) -> None:
    """Start one no-op process; the clock is noted just before it, as agent_worker's
    ``started_at`` is, and stored afterwards, off the measured path."""
    spawn_at = time.time()
    subprocess.run(["true"], check=True)
    results.rpush(DONE_KEY, f"{token} {spawn_at!r} {time.time()!r}")


@worker_ready.connect
def _note_ready(**_) -> None:
    results.sadd(READY_KEY, os.getpid())
