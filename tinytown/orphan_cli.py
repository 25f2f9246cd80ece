"""A coding CLI left running by a worker that was killed outright, found and stopped.

A worker runs its CLI in a process group of its own, so that a task timeout or a drain can stop
the whole tree. The flip side: when the worker itself is killed with SIGKILL outside a container
(nothing then takes the group down with it), the CLI goes on working. If another worker on the
same host then takes the task over, two CLIs would work on one task, in one workspace.

So a worker records its CLI's process group and host on its agent record, and a worker that
takes a task over from a dead holder on the same host stops what is left of that group first.
A process group id can be reused after its processes are gone, so a group is stopped only if one
of its processes still carries the dead holder's agent id and the task id in its environment
(``TINYTOWN_AGENT_ID``, ``TINYTOWN_TASK_ID``, which every CLI gets). Linux only (``/proc``);
elsewhere nothing is found.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

PROC = Path("/proc")


def _stat(pid: str) -> tuple[str, int] | None:
    """(state, process group) of a process, or None when it is gone."""
    try:
        text = (PROC / pid / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
    return fields[0], int(fields[2])


def members(pgid: int, agent_id: str, task_id: str) -> list[int]:
    """Live processes of group ``pgid`` if one of them was started for that agent's task."""
    marks = {f"TINYTOWN_AGENT_ID={agent_id}".encode(), f"TINYTOWN_TASK_ID={task_id}".encode()}
    found, ours = [], False
    try:
        pids = [p for p in os.listdir(PROC) if p.isdigit()]
    except OSError:
        return []
    for pid in pids:
        stat = _stat(pid)
        if stat is None or stat[1] != pgid or stat[0] == "Z":
            continue
        found.append(int(pid))
        try:
            ours = ours or marks <= set((PROC / pid / "environ").read_bytes().split(b"\0"))
        except OSError:
            pass
    return found if ours else []


def stop(pgid: int, agent_id: str, task_id: str, grace_secs: float = 5.0) -> list[int]:
    """Stop the group if it is that agent's CLI for that task: SIGTERM, then SIGKILL after
    ``grace_secs``. Returns the processes it found (empty: nothing of that CLI is left)."""
    pids = members(pgid, agent_id, task_id)
    if not pids:
        return []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return pids
        deadline = time.monotonic() + grace_secs
        while time.monotonic() < deadline:
            if all((s := _stat(str(p))) is None or s[0] == "Z" for p in pids):
                return pids
            time.sleep(0.05)
    return pids
