"""Finding and stopping a CLI a killed worker left behind: only the group that carries the dead
holder's agent id and the task id, never a stranger that happens to have that group id."""

from __future__ import annotations

import os
import subprocess

from tinytown.worker import orphan_cli

from .worker_support import poll, process_gone


def group(env_extra: dict[str, str], script: str = "sleep 60 & wait") -> subprocess.Popen:
    """A process group of two (sh and a sleep), as a CLI and its child would be."""
    env = {**os.environ, **env_extra}
    return subprocess.Popen(["sh", "-c", script], env=env, start_new_session=True)


def test_the_group_started_for_that_agents_task_is_stopped_whole():
    proc = group({"TINYTOWN_AGENT_ID": "a1", "TINYTOWN_TASK_ID": "t1"})
    try:
        members = poll(
            lambda: len(found := orphan_cli.members(proc.pid, "a1", "t1")) == 2 and found, timeout=5
        )

        stopped = orphan_cli.stop(proc.pid, "a1", "t1", grace_secs=5)

        assert sorted(stopped) == sorted(members)
        proc.wait(timeout=5)
        assert all(process_gone(pid) for pid in members)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()


def test_a_group_of_another_agent_or_task_is_left_alone():
    proc = group({"TINYTOWN_AGENT_ID": "a1", "TINYTOWN_TASK_ID": "t1"})
    try:
        poll(lambda: len(orphan_cli.members(proc.pid, "a1", "t1")) == 2, timeout=5)
        assert orphan_cli.stop(proc.pid, "a1", "other-task") == []
        assert orphan_cli.stop(proc.pid, "other-agent", "t1") == []
        assert orphan_cli.stop(proc.pid + 100000, "a1", "t1") == []  # no such group
        assert proc.poll() is None  # still running
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()


def test_a_released_group_is_left_alone_and_the_leash_leaves_when_let_go():
    proc = group({})
    try:
        leash = orphan_cli.Leash(grace_secs=1)
        leash.attach(proc.pid)
        leash.release()  # the CLI ended (here: as far as the worker knows)
        leash.close()  # the worker ends
        assert leash.proc.returncode == 0
        assert proc.poll() is None
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()


def test_a_leash_let_go_while_guarding_stops_the_group_even_one_that_ignores_sigterm():
    proc = group(
        {"TINYTOWN_AGENT_ID": "a1", "TINYTOWN_TASK_ID": "t1"}, "trap '' TERM; sleep 60 & wait; wait"
    )
    try:
        members = poll(
            lambda: len(found := orphan_cli.members(proc.pid, "a1", "t1")) == 2 and found, timeout=5
        )
        leash = orphan_cli.Leash(grace_secs=1)
        leash.attach(proc.pid)
        leash.close()  # as when the worker dies: its end of the pipe closes
        proc.wait(timeout=10)
        assert poll(lambda: all(process_gone(pid) for pid in members), timeout=10)
        leash.proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()


def test_one_leash_guards_only_the_group_attached_last():
    first, second = group({}), group({})
    try:
        leash = orphan_cli.Leash(grace_secs=1)
        leash.attach(first.pid)
        leash.release()
        leash.attach(second.pid)
        leash.close()
        second.wait(timeout=10)
        leash.proc.wait(timeout=10)
        assert first.poll() is None
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.wait()


def test_a_leash_never_attached_leaves_quietly_when_let_go():
    leash = orphan_cli.Leash(grace_secs=1)
    leash.close()
    assert leash.proc.returncode == 0


def test_earlier_runs_finds_the_groups_running_a_task_whatever_their_agent():
    runs = [
        group({"TINYTOWN_AGENT_ID": "frozen", "TINYTOWN_TASK_ID": "t9"}),
        group({"TINYTOWN_AGENT_ID": "other", "TINYTOWN_TASK_ID": "t8"}),
    ]
    try:
        found = poll(lambda: orphan_cli.earlier_runs("t9") or None, timeout=5)
        assert found == {runs[0].pid: "frozen"}
        assert orphan_cli.earlier_runs("t7") == {}
    finally:
        for proc in runs:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.wait()
