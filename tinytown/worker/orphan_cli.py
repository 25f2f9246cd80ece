"""A coding CLI left running by a worker that was killed outright: stopped by its leash, or
found and stopped by the worker that takes its task over.

A worker runs its CLI in a process group of its own, so that a task timeout or a drain can stop
the whole tree. The flip side: when the worker itself is killed with SIGKILL outside a container
(nothing then takes the group down with it), the CLI goes on working — and spending — on a task
that another worker may run again.

Two defences:

- **The leash** (:class:`Leash`). Each worker starts one small watchdog (``sh``, in a session of
  its own) that reads a pipe whose other end only the worker holds. Right after a CLI starts, the
  worker writes the CLI's process group into it; when the CLI ends, ``done``. If the worker dies
  while a CLI runs, the kernel closes its end of the pipe, the watchdog reads end-of-file and
  stops the CLI's group (SIGTERM, SIGKILL after the grace period).
- **The take-over check** (:func:`stop`), for a CLI whose leash is gone too (both killed, or the
  leash died mid-task), or whose worker is alive but frozen (SIGSTOP, ``docker pause``: the
  leash sees nothing) and was judged dead. A worker records its CLI's process group and host on
  its agent record, and a worker that takes a task over from a dead holder on the same host
  stops what is left of that group first. A process group id can be reused after its processes
  are gone, so a group is stopped only if one of its processes still carries the dead holder's
  agent id and the task id in its environment (``TINYTOWN_AGENT_ID``, ``TINYTOWN_TASK_ID``,
  which every CLI gets). Linux only (``/proc``); elsewhere nothing is found.

A task that recovery gave back to the backlog (rather than a worker taking its entry over)
names no holder, so before any retry of a task the worker looks for a process of this host
running that task (:func:`earlier_runs`) and stops its group the same way.

Neither covers a worker killed in the microseconds between starting its CLI and telling its leash
(the group reaches the agent record only after that).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import time
from collections.abc import Callable
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


def earlier_runs(task_id: str) -> dict[int, str]:
    """Process groups on this host running ``task_id`` for some agent (a CLI's environment says
    ``TINYTOWN_TASK_ID``): group → that agent's id. Reads every process's environment: called
    only before a retry of the task starts, never on a first attempt's way."""
    mark = f"TINYTOWN_TASK_ID={task_id}".encode()
    found: dict[int, str] = {}
    try:
        pids = [p for p in os.listdir(PROC) if p.isdigit()]
    except OSError:
        return found
    for pid in pids:
        try:
            env = (PROC / pid / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if mark in env and (stat := _stat(pid)) is not None and stat[0] != "Z":
            agent = next((e[18:] for e in env if e.startswith(b"TINYTOWN_AGENT_ID=")), b"")
            found.setdefault(stat[1], agent.decode(errors="replace"))
    return found


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


# $1: the grace period in whole seconds. Each line is a process group to guard from then on, or
# "done" (nothing to guard). At end-of-file (the worker has ended, however) the group guarded last,
# if any, is stopped: SIGTERM, then SIGKILL to what is left after the grace period (looked at every
# 0.1 s, so a group gone early is not signalled again: its id could be reused).
_LEASH = (
    'g=; while read -r line; do if [ "$line" = done ]; then g=; else g=$line; fi; done; '
    '[ -n "$g" ] || exit 0; '
    'kill -s TERM -- "-$g" 2>/dev/null || exit 0; '
    'i=0; while [ "$i" -lt $(( $1 * 10 )) ]; do '
    'kill -s 0 -- "-$g" 2>/dev/null || exit 0; sleep 0.1; i=$((i + 1)); done; '
    'kill -s KILL -- "-$g" 2>/dev/null'
)


class Leash:
    """The watchdog that stops the running CLI's process group if this worker dies.

    One per worker, for its whole life: each CLI is :meth:`attach`-ed right after it starts and
    :meth:`release`-d when it ends — a write each, no process started per task.
    """

    def __init__(self, grace_secs: float = 5.0):
        self.guarding = False
        # Neither end is inherited by other children (PEP 446).
        read_end, self._write_end = os.pipe()
        grace = str(max(1, math.ceil(grace_secs)))
        try:
            # POSIX sh from PATH running the fixed _LEASH script; grace is an integer argument
            self.proc = subprocess.Popen(  # nosec B603 B607
                ["sh", "-c", _LEASH, "tinytown-leash", grace],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError:
            os.close(self._write_end)
            raise
        finally:
            os.close(read_end)

    def attach(self, pgid: int) -> None:
        """Guard the process group ``pgid`` from now on (OSError if the watchdog is gone)."""
        os.write(self._write_end, f"{pgid}\n".encode())
        self.guarding = True

    def release(self) -> None:
        """The CLI has ended: nothing to guard until the next :meth:`attach`."""
        os.write(self._write_end, b"done\n")
        self.guarding = False

    def close(self) -> None:
        """Let go of the pipe: the watchdog stops the group it still guards (as if this worker had
        died), or just leaves; then it is waited for (not while it stops a group: it finishes that
        on its own)."""
        if self._write_end < 0:
            return
        os.close(self._write_end)
        self._write_end = -1
        if not self.guarding:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover - it leaves at end-of-file
                self.proc.kill()
                self.proc.wait()


class WorkerLeash:
    """A worker's hold on its one :class:`Leash`: started once, off any task's path, and kept for
    the worker's whole life. A leash that died is replaced once, when the next CLI starts.
    Failures are logged, never fatal: without a leash the task runs all the same."""

    def __init__(self, log: Callable[..., None], grace_secs: float):
        self.log, self.grace_secs = log, grace_secs
        self.leash: Leash | None = None

    def start(self, task_id: str | None = None) -> Leash | None:
        """The leash, started if there is none yet; None, logged, if it cannot be."""
        if self.leash is None:
            try:
                self.leash = Leash(grace_secs=self.grace_secs)
            except OSError as err:
                self.log("cli_leash_failed", task=task_id, detail=str(err))
        return self.leash

    def attach(self, pgid: int, task_id: str) -> Leash | None:
        """Put the leash on the CLI just started (process group ``pgid``): it stops the group if
        the worker dies while the CLI runs. Returns the leash, or None (logged) if there is none."""
        for attempt in (1, 2):
            leash = self.start(task_id)
            if leash is None:
                return None
            try:
                leash.attach(pgid)
                return leash
            except OSError as err:  # it died (EPIPE)
                leash.close()
                self.leash = None
                self.log(
                    "cli_leash_replaced" if attempt == 1 else "cli_leash_failed",
                    task=task_id,
                    detail=str(err),
                )
        return None

    def release(self) -> None:
        """The CLI has ended. (A leash that died meanwhile is replaced at the next start.)"""
        if self.leash is not None:
            with contextlib.suppress(OSError):
                self.leash.release()

    def close(self) -> None:
        """The worker ends: a CLI still running (after an error) is stopped by the leash."""
        if self.leash is not None:
            self.leash.close()
