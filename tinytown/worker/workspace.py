"""A task's git workspace: where the coding CLI works when the task carries a ``repo``.

The worker keeps a persistent directory per repository under ``[agent].workspace_dir`` (a
volume in containers): a shallow clone the first time, a fetch after. Each task gets the branch
``tt/<short task id>`` — started from the task's ``base_branch`` (default: the remote's default
branch), or from that branch on the remote when an earlier attempt pushed work in progress. When
the CLI exits, whatever it left uncommitted is committed with a message naming the task, and the
branch is pushed when the task asks for it. On a drain timeout a "WIP" commit is pushed before
the task is handed back, so the next attempt continues from it.

Two workers of one town on one machine never share a checkout: each holds an exclusive lock on
the directory it uses, and a second worker takes the next free slot (``<name>.1``, …).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tinytown.core import defaults
from tinytown.core.errors import TinytownError
from tinytown.core.inputs import printable
from tinytown.core.records import Task

BRANCH_PREFIX = "tt/"
SHORT_ID_CHARS = 8
_MAX_SLOTS = 64
_SCP_LIKE = re.compile(r"^[\w.-]+@[\w.-]+:")  # git@github.com:owner/repo.git


class GitError(TinytownError):
    """A git command failed; the message carries the command and the end of its output."""


@dataclass
class Workspace:
    path: Path
    branch: str
    remote: str
    continued: bool  # started from the branch an earlier attempt pushed
    _lock: IO | None = None

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file releases the flock
            self._lock = None


def branch_for(task_id: str) -> str:
    return BRANCH_PREFIX + task_id.replace("-", "")[:SHORT_ID_CHARS]


def remote_url(repo: str, town_root: Path) -> str:
    """A URL git can shallow-clone: local paths (relative to the town) become ``file://`` URLs."""
    if "://" in repo or _SCP_LIKE.match(repo):
        return repo
    path = Path(repo).expanduser()
    path = path if path.is_absolute() else town_root / path
    return path.resolve().as_uri()


def _slot_name(repo: str) -> str:
    base = re.sub(r"\.git$", "", repo.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]) or "repo"
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", base)[:40]
    return f"{base}-{hashlib.sha1(repo.encode(), usedforsecurity=False).hexdigest()[:8]}"


def git(
    args: list[str], cwd: Path, *, timeout: float = defaults.GIT_TIMEOUT_SECS, check: bool = True
) -> subprocess.CompletedProcess:
    """Run git without prompts; raise GitError with the command and its output when it fails."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true"}
    try:
        # git from PATH (where the operator installed it); an argument list, no shell
        proc = subprocess.run(  # nosec B603 B607
            ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise GitError(f"git {' '.join(args)} took longer than {timeout:.0f} s in {cwd}") from None
    if check and proc.returncode != 0:
        output = (proc.stderr or proc.stdout).strip()[-600:]
        raise GitError(f"git {' '.join(args)} failed (exit {proc.returncode}) in {cwd}: {output}")
    return proc


def _lock_slot(root: Path, name: str) -> tuple[Path, IO]:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(_MAX_SLOTS):
        slot = root / (name if i == 0 else f"{name}.{i}")
        handle = open(root / f".{slot.name}.lock", "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        return slot, handle
    raise TinytownError(f"all {_MAX_SLOTS} workspace slots for {name} in {root} are in use")


def open_workspace(root: Path, task: Task, town_root: Path) -> Workspace:
    """Clone or fetch the task's repository and check out its branch, ready for the CLI."""
    if not task.repo:
        raise ValueError("open_workspace needs a task with a repo")
    remote = remote_url(task.repo, town_root)
    path, lock = _lock_slot(root, _slot_name(remote))
    ws = Workspace(
        path=path, branch=branch_for(task.id), remote=remote, continued=False, _lock=lock
    )
    try:
        if not (path / ".git").exists():
            clone = ["clone", "--quiet", "--depth", "1"]
            if task.base_branch:
                clone += ["--branch", task.base_branch]
            git([*clone, remote, str(path)], cwd=root)
        else:
            git(["remote", "set-url", "origin", remote], cwd=path)
        pushed_before = ["fetch", "--quiet", "--depth", "1", "origin", f"refs/heads/{ws.branch}"]
        if git(pushed_before, cwd=path, check=False).returncode == 0:
            ws.continued = True
        else:
            git(
                ["fetch", "--quiet", "--depth", "1", "origin", task.base_branch or "HEAD"], cwd=path
            )
        git(["checkout", "--quiet", "--force", "-B", ws.branch, "FETCH_HEAD"], cwd=path)
        git(["clean", "-ffdxq"], cwd=path)
    except BaseException:
        ws.close()
        raise
    return ws


def _identity(path: Path, agent_name: str) -> list[str]:
    """``-c user.name/email`` when git has no identity configured (as in a fresh container)."""
    configured = git(["config", "user.email"], cwd=path, check=False).stdout.strip()
    if configured or os.environ.get("GIT_AUTHOR_EMAIL"):
        return []
    return ["-c", f"user.name={agent_name}", "-c", f"user.email={agent_name}@tinytown.invalid"]


def commit_message(task: Task, *, wip: bool = False) -> str:
    first = printable((task.description.strip().splitlines() or [""])[0][:72])
    if wip:
        return f"WIP: tt task {task.id} (handed back on drain timeout)\n\n{first}\n"
    return f"tt: task {task.id}: {first}\n"


def commit(ws: Workspace, task: Task, *, agent_name: str, push: bool, wip: bool = False) -> str:
    """Commit what the CLI left uncommitted, push when asked; returns the head commit."""
    git(["add", "--all"], cwd=ws.path)
    if git(["diff", "--cached", "--quiet"], cwd=ws.path, check=False).returncode != 0:
        message = commit_message(task, wip=wip)
        identity = _identity(ws.path, agent_name)
        git([*identity, "commit", "--quiet", "--no-verify", "-m", message], cwd=ws.path)
    head = git(["rev-parse", "HEAD"], cwd=ws.path).stdout.strip()
    if push:
        git(["push", "--quiet", "origin", f"HEAD:refs/heads/{ws.branch}"], cwd=ws.path)
    return head
