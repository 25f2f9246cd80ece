"""Git workspaces: a task's branch, the commit of what the CLI left, push to a local bare repository."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from tinytown.core.records import Task
from tinytown.worker import workspace

from .test_worker_dispatch import open_town, wait_terminal
from .worker_support import worker_town, workers  # noqa: F401


def git(*args, cwd) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def bare_repo(tmp_path) -> Path:
    """A bare repository with one commit on ``main`` (README.md)."""
    seed, bare = tmp_path / "seed", tmp_path / "origin.git"
    seed.mkdir()
    git("init", "-q", "-b", "main", cwd=seed)
    (seed / "README.md").write_text("hello\n")
    git("add", "-A", cwd=seed)
    git(
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@example.invalid",
        "commit",
        "-q",
        "-m",
        "initial",
        cwd=seed,
    )
    git("clone", "-q", "--bare", str(seed), str(bare), cwd=tmp_path)
    return bare


# -- pure parts ----------------------------------------------------------------------------------


def test_the_branch_is_named_after_the_short_task_id():
    assert workspace.branch_for("0a1b2c3d-4e5f-6789-abcd-ef0123456789") == "tt/0a1b2c3d"


def test_local_paths_become_file_urls_so_clones_can_be_shallow(tmp_path):
    assert workspace.remote_url("repo.git", tmp_path) == (tmp_path / "repo.git").as_uri()
    assert (
        workspace.remote_url("https://example.com/o/r.git", tmp_path)
        == "https://example.com/o/r.git"
    )
    assert workspace.remote_url("git@github.com:o/r.git", tmp_path) == "git@github.com:o/r.git"


def test_commit_messages_name_the_task():
    task = Task(id="abc", description="Fix the parser\nmore detail")
    assert workspace.commit_message(task) == "tt: task abc: Fix the parser\n"
    assert workspace.commit_message(task, wip=True).startswith("WIP: tt task abc")


def test_two_workspaces_of_one_repo_never_share_a_checkout(tmp_path, bare_repo):
    task = Task(id="11111111-2222-3333-4444-555555555555", description="x", repo=str(bare_repo))
    first = workspace.open_workspace(tmp_path / "ws", task, tmp_path)
    second = workspace.open_workspace(tmp_path / "ws", task, tmp_path)
    try:
        assert first.path != second.path
        assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=first.path) == "tt/11111111"
        assert git("rev-parse", "--is-shallow-repository", cwd=first.path) == "true"
    finally:
        first.close()
        second.close()


# -- through a worker ----------------------------------------------------------------------------


def test_a_task_with_a_repo_gets_its_branch_commit_and_push(worker_town, workers, bare_repo):
    root = worker_town()
    town = open_town(root)
    workers.start(root)

    task = town.tasks.add(
        "Add notes [write NOTES.md written by the fake CLI]", repo=str(bare_repo), push=True
    )
    done = wait_terminal(town, task.id)

    assert done.state == "completed"
    branch = workspace.branch_for(task.id)
    assert done.branch == branch
    assert git("rev-parse", branch, cwd=bare_repo) == done.commit  # pushed
    assert git("show", f"{branch}:NOTES.md", cwd=bare_repo) == "written by the fake CLI"
    assert (
        git("log", "-1", "--format=%s", branch, cwd=bare_repo)
        == f"tt: task {task.id}: Add notes [write NOTES.md written by the fake CLI]"
    )
    assert git("rev-parse", f"{branch}~1", cwd=bare_repo) == git("rev-parse", "main", cwd=bare_repo)


def test_commits_the_cli_made_are_kept_and_nothing_is_pushed_unless_asked(
    worker_town, workers, bare_repo
):
    root = worker_town()
    town = open_town(root)
    workers.start(root)

    task = town.tasks.add(
        "[write a.txt one] [commit the CLI's own commit] [write b.txt two]", repo=str(bare_repo)
    )
    done = wait_terminal(town, task.id)

    assert done.state == "completed" and done.commit
    ws_dir = next((root / ".tt" / "workspace").glob("origin-*"))
    subjects = git("log", "--format=%s", "-3", done.commit, cwd=ws_dir).splitlines()
    assert subjects[:2] == [
        f"tt: task {task.id}: [write a.txt one] [commit the CLI's own commit] [write b.txt two]",
        "the CLI's own commit",
    ]
    assert workspace.branch_for(task.id) not in git("branch", "--list", cwd=bare_repo)


def test_the_workspace_persists_and_each_task_starts_clean_from_the_base(
    worker_town, workers, bare_repo
):
    root = worker_town()
    town = open_town(root)
    workers.start(root)

    first = wait_terminal(town, town.tasks.add("[write first.txt 1]", repo=str(bare_repo)).id)
    second = wait_terminal(
        town, town.tasks.add("[write second.txt 2]", repo=str(bare_repo), base_branch="main").id
    )

    slots = list((root / ".tt" / "workspace").glob("origin-*"))
    assert len([s for s in slots if s.is_dir()]) == 1  # reused, not cloned again
    files = git("ls-tree", "--name-only", second.commit, cwd=slots[0]).splitlines()
    assert "second.txt" in files and "first.txt" not in files
    assert first.commit != second.commit


def test_a_drain_timeout_pushes_a_wip_commit_and_the_next_attempt_continues_from_it(
    worker_town, workers, bare_repo
):
    root = worker_town(drain_timeout_secs=1, claim_timeout_secs=2)
    town = open_town(root)
    first = workers.start(root, name="first")
    first.wait_event("agent_state", state="idle")
    task = town.tasks.add(
        "Long job [write progress.txt half done] [sleep-first 60] [write final.txt done]",
        repo=str(bare_repo),
        push=True,
    )
    first.wait_event("cli_started", task=task.id)

    first.signal(signal.SIGTERM)

    assert first.wait_exit(timeout=20) == 0
    branch = workspace.branch_for(task.id)
    wip = git("rev-parse", branch, cwd=bare_repo)
    assert git("log", "-1", "--format=%s", branch, cwd=bare_repo).startswith(
        f"WIP: tt task {task.id}"
    )
    assert git("show", f"{branch}:progress.txt", cwd=bare_repo) == "half done"
    held = town.tasks.get(task.id)
    assert held.state == "running" and held.commit == wip

    second = workers.start(root, name="second")
    done = wait_terminal(town, task.id, timeout=20)
    assert done.state == "completed" and done.assigned_to == second.agent_id
    assert second.wait_event("workspace_ready", task=task.id)["continued"] == "True"
    assert git("rev-parse", f"{branch}~1", cwd=bare_repo) == wip  # built on the WIP commit
    assert git("show", f"{branch}:final.txt", cwd=bare_repo) == "done"


def test_an_unreachable_repository_is_a_failed_attempt_with_the_git_error(
    worker_town, workers, tmp_path
):
    root = worker_town(max_attempts=1)
    town = open_town(root)
    workers.start(root)
    task = town.tasks.add("x", repo=str(tmp_path / "no-such-repo.git"))
    done = wait_terminal(town, task.id)
    assert done.state == "failed" and "workspace: git clone" in done.result
