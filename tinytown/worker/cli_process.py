"""The coding CLI as a process: what it sees, the prompt on its stdin, and its process group.

The worker starts each CLI as ``sh -c COMMAND`` in a session of its own, so the CLI's process
group (whose id is the ``sh``'s pid) holds everything it starts. A task timeout, a drain or a
cancel stops the whole group, and so does the CLI's own exit for what it leaves running: nothing
of a task outlives it. (A CLI whose worker died is stopped by :mod:`tinytown.worker.orphan_cli`.)
"""

from __future__ import annotations

import ipaddress
import os
import select
import shlex
import shutil
import signal
import subprocess
import threading
import time

from tinytown.config import Config
from tinytown.core import defaults

GROUP_POLL_SECS = 0.05  # how often a group being stopped is looked at during its grace period


def base_env(config: Config, agent_id: str, agent_name: str) -> dict[str, str]:
    """The environment every task's CLI gets besides its preset's ``env``, its task id and its
    attempt: the worker's own, plus who and where it is."""
    return {
        **os.environ,
        "TINYTOWN_AGENT_ID": agent_id,
        "TINYTOWN_AGENT_NAME": agent_name,
        "TINYTOWN_URL": townhall_url(config),
        "TINYTOWN_TOWN_DIR": str(config.root),
    }


_shells: dict[str | None, str | None] = {}


def shell(env: dict[str, str]) -> str | None:
    """The ``sh`` that ``Popen(["sh", ...], env=env)`` would run, looked up once per ``PATH``:
    given as ``executable``, the child execs it at once instead of trying each ``PATH`` entry
    in turn (each miss a failed ``execve`` while the worker waits). None: not found."""
    path = env.get("PATH")
    if path not in _shells:
        _shells[path] = shutil.which("sh", path=os.pathsep.join(os.get_exec_path(env)))
    return _shells[path]


# Words a command line may start with that are not a program on PATH (run by sh itself).
_SHELL_WORDS = frozenset(
    "! { ( . : [ [[ alias bg break case cd command continue eval exec exit export false fg for "
    "function getopts hash if read readonly return set shift source test times trap true type "
    "ulimit umask unalias unset until wait while".split()
)
_programs: dict[tuple[str, str | None], str | None] = {}


def missing_program(command: str, path: str | None) -> str | None:
    """The program ``command`` starts when it is a plain name (or path) that cannot be run with
    this ``PATH``, else None: a CLI that is not installed fails at once with that said, instead
    of exiting 127 attempt after attempt. A line that starts with a shell word, a variable
    assignment or anything ``sh`` would read first is not judged (None). Looked up once per
    (command, PATH)."""
    key = (command, path)
    if key not in _programs:
        try:
            first = shlex.split(command)[0] if command.strip() else ""
        except ValueError:
            first = ""
        plain = first and first not in _SHELL_WORDS and not set(first) & set("=$`*?~;&|<>()")
        if not plain:
            _programs[key] = None
        elif "/" in first:
            _programs[key] = None if os.access(first, os.X_OK) else first
        else:
            search = path if path is not None else os.defpath
            _programs[key] = None if shutil.which(first, path=search) else first
    return _programs[key]


def not_installed(cli: str, program: str) -> str:
    return (
        f"the coding CLI {cli!r} cannot start on this worker: {program!r} is not on its PATH "
        f"(install it in the worker's image, or fix [agent_clis.{cli}] command)"
    )


def _every_interface(bind: str) -> bool:
    """``0.0.0.0``, ``::`` or unset: a townhall bound there is reached on loopback."""
    if not bind:
        return True
    try:
        return ipaddress.ip_address(bind).is_unspecified
    except ValueError:  # a host name
        return False


def townhall_url(config: Config) -> str:
    """``TINYTOWN_URL``, else the town's own townhall as seen from this host."""
    if os.environ.get("TINYTOWN_URL"):
        return os.environ["TINYTOWN_URL"]
    th = config.townhall
    host = "127.0.0.1" if _every_interface(th.bind) else th.bind
    if ":" in host:  # an IPv6 address goes in brackets in a URL
        host = f"[{host}]"
    scheme = "https" if th.tls.enabled else "http"
    return f"{scheme}://{host}:{th.rest_port}"


def feed_prompt(stdin, prompt: bytes) -> None:
    """Write the prompt to the CLI's stdin and close it (a CLI that never reads it is fine).
    Run in a thread of its own: a prompt larger than the pipe waits for the CLI to read it."""
    try:
        stdin.write(prompt)
        stdin.close()
    except (BrokenPipeError, ValueError, OSError):
        pass


def give_prompt(stdin, prompt: bytes) -> None:
    """Write the prompt to the CLI's stdin and close it, without waiting on the CLI: what the
    pipe takes at once (all of a usual prompt) is written here, and only a rest that does not
    fit is left to a thread (:func:`feed_prompt`), so most tasks start no thread for it."""
    fd = stdin.fileno()
    written = 0
    try:
        os.set_blocking(fd, False)
        try:
            written = os.write(fd, prompt) if prompt else 0
        except BlockingIOError:
            pass
        finally:
            os.set_blocking(fd, True)
    except OSError:  # the CLI is gone already (EPIPE): nothing to give it
        written = len(prompt)
    if written >= len(prompt):
        try:
            stdin.close()
        except OSError:
            pass
        return
    rest = (stdin, prompt[written:])
    threading.Thread(target=feed_prompt, args=rest, name="prompt", daemon=True).start()


class ExitWatch:
    """Waits for the CLI's process to exit, in slices, and wakes the moment it does: on a pidfd
    (Linux 5.3+), so no thread per task; elsewhere a thread blocked in ``wait()``."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.poller, self.fd, self.exited = proc, None, -1, None
        try:
            self.fd = os.pidfd_open(proc.pid)  # (not reaped by anyone yet: still its process)
            self.poller = select.poll()
            self.poller.register(self.fd, select.POLLIN)
        except (AttributeError, OSError):
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1
            self.exited = threading.Event()
            threading.Thread(
                target=lambda: (proc.wait(), self.exited.set()), name="cli-wait", daemon=True
            ).start()

    def wait(self, secs: float) -> bool:
        """Whether the process exited within ``secs``."""
        if self.poller is None:
            return self.exited.wait(secs)
        return bool(self.poller.poll(secs * 1000))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Send ``sig`` to the CLI's whole process group (nothing if it is gone)."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def group_alive(proc: subprocess.Popen) -> bool:
    """Whether anything of the CLI's process group still runs (its leader included)."""
    try:
        os.killpg(proc.pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def stop_group(proc: subprocess.Popen) -> int | None:
    """SIGTERM the CLI's whole process group; SIGKILL what is left of it after the grace period.
    Returns the CLI's exit code.

    The group outlives ``sh`` (its leader), so wait for every member, not only the leader.
    """
    signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + defaults.CLI_STOP_GRACE_SECS
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader so it does not count as a member
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(GROUP_POLL_SECS)
    signal_group(proc, signal.SIGKILL)
    return proc.wait()
