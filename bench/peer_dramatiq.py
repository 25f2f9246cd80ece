"""The Dramatiq side of ``bench_dispatch.py``: a Redis broker on the benchmark's server and its
one actor.

Imported by the benchmark (to submit) and by ``dramatiq peer_dramatiq`` (to run), both with
``BENCH_PEER_REDIS_URL`` set to the redis-py URL of the benchmark's server. Dramatiq uses its own
database number there and its default middleware; the actor does not retry.
"""

from __future__ import annotations

import os
import subprocess
import time

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware

DB = 2
QUEUE = "tt-bench-dramatiq"
DONE_KEY = "bench:done"  # "<token> <clock before the process> <clock after it>", one per task
READY_KEY = "bench:ready"  # the pids of workers that are consuming

URL = os.environ["BENCH_PEER_REDIS_URL"]
results = redis.Redis.from_url(URL, db=DB)


class NoteReady(Middleware):
    def after_worker_boot(self, broker, worker) -> None:
        results.sadd(READY_KEY, os.getpid())


broker = RedisBroker(connection_pool=redis.ConnectionPool.from_url(URL, db=DB))
broker.add_middleware(NoteReady())
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def run_true(token: str) -> None:
    """Start one no-op process; the clock is noted just before it, as agent_worker's
    ``started_at`` is, and stored afterwards, off the measured path."""
    spawn_at = time.time()
    subprocess.run(["true"], check=True)
    results.rpush(DONE_KEY, f"{token} {spawn_at!r} {time.time()!r}")
