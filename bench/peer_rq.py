"""The RQ side of ``bench_dispatch.py``: the job both RQ workers run, by name.

A module of its own, as light as the Celery and Dramatiq ones: RQ's forking ``Worker`` imports
the job's module afresh in every work horse, so the job must not carry the benchmark's imports.
"""

from __future__ import annotations

import subprocess
import time

from rq import get_current_job


def run_true() -> None:
    """Start one no-op process, like agent_worker's CLI `true`.

    It notes its clock just before the process starts (the point agent_worker's ``started_at``
    marks) and stores it in the job's meta afterwards, off the measured path.
    """
    spawn_at = time.time()
    subprocess.run(["true"], check=True)
    job = get_current_job()
    if job is not None:
        job.meta["spawn_at"] = spawn_at
        job.save_meta()
