"""What work costs: where a worker runs, at what rate, and the seconds and money a task took.
Pure: the environment in, numbers out.

The scaler starts each worker with ``TINYTOWN_OUTPOST`` (its outpost's name) and
``TINYTOWN_COST_PER_HOUR`` (the outpost's ``cost_per_hour``); a worker started by hand may set
them too. A task's ``worker_secs`` are the seconds its coding CLI ran (every attempt), and its
``cost`` those seconds at the rate of the worker that ran each attempt; a mission's are the sum
of its items' tasks. Time a worker spends idle is not in any task: it is the scaler's total
minus the tasks' (docs/cost.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from tinytown.core import inputs


def outpost_from_env(env: Mapping[str, str]) -> tuple[str | None, float, str | None]:
    """``(outpost, cost per hour, problem)`` from a worker's environment; a value that does not
    parse is ignored (rate 0) and described in ``problem``."""
    outpost = env.get("TINYTOWN_OUTPOST") or None
    problem = None
    if outpost is not None:
        try:
            inputs.name(outpost, "TINYTOWN_OUTPOST")
        except inputs.InputError as err:
            outpost, problem = None, str(err)
    raw = (env.get("TINYTOWN_COST_PER_HOUR") or "").strip()
    if not raw:
        return outpost, 0.0, problem
    try:
        rate = float(raw)
    except ValueError:
        rate = -1.0
    if not math.isfinite(rate) or rate < 0:
        return outpost, 0.0, f"TINYTOWN_COST_PER_HOUR={raw[:40]!r} is not a number ≥ 0; using 0"
    return outpost, rate, problem


def charge(worker_secs: float | None, cost: float | None, run_secs: float, rate: float) -> dict:
    """A task's ``worker_secs`` and ``cost`` fields after one more run of ``run_secs``."""
    secs = (worker_secs or 0.0) + run_secs
    total = (cost or 0.0) + run_secs * rate / 3600
    return {"worker_secs": f"{secs:.3f}", "cost": f"{total:.6f}"}
