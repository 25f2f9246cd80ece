"""Per-task log files: the next one made ready while idle, named once the CLI runs, appended by
later attempts; nothing left behind by a killed worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tinytown.core import defaults
from tinytown.worker.tasklog import TaskLogs


def first_attempt(folder, header: str = "=== attempt 1\n"):
    """Logs in ``folder`` with the ready file (header written while idle) taken by a task's first attempt."""
    logs = TaskLogs(folder)
    logs.prepare(header)
    log = logs.open("t1", 1, header)
    assert not log.named
    return logs, log


def run_into(log, text: str) -> None:
    """A real child process writing to the log's descriptor, as the CLI does."""
    subprocess.run(["sh", "-c", f"printf '%s' {text!r}"], stdout=log.fd, check=True)


def test_a_first_attempt_writes_into_the_ready_file_which_gets_the_tasks_name(tmp_path):
    logs = TaskLogs(tmp_path / "logs")
    logs.prepare("=== attempt 1\n")
    assert os.listdir(tmp_path / "logs") == []  # ready, header written, but nameless

    log = logs.open("t1", 1, "=== attempt 1\n")
    run_into(log, "hello from the CLI")
    log.name()

    assert (tmp_path / "logs" / "t1.log").read_text() == "=== attempt 1\nhello from the CLI"
    run_into(log, " and more")  # still the same file after naming
    assert log.tail() == "hello from the CLI and more"
    log.close()
    assert (
        tmp_path / "logs" / "t1.log"
    ).read_text() == "=== attempt 1\nhello from the CLI and more"
    assert logs.spare is None
    logs.close()


def test_a_later_attempt_appends_to_the_earlier_log_and_its_tail_is_its_own(tmp_path):
    logs, first = first_attempt(tmp_path)
    run_into(first, "first output")
    first.name()
    first.close()

    logs.prepare("=== attempt 1\n")
    second = logs.open("t1", 2, "=== attempt 2\n")
    assert second.named
    run_into(second, "second output")
    assert second.tail() == "second output"
    second.close()

    assert (
        tmp_path / "t1.log"
    ).read_text() == "=== attempt 1\nfirst output=== attempt 2\nsecond output"
    assert logs.spare is not None  # the ready file waits for the next first attempt
    logs.close()


def test_when_the_name_is_taken_meanwhile_the_output_is_appended_at_close(tmp_path):
    logs, log = first_attempt(tmp_path)
    (tmp_path / "t1.log").write_text("someone else's line\n")
    run_into(log, "mine")
    log.name()
    log.close()
    assert (tmp_path / "t1.log").read_text() == "someone else's line\n=== attempt 1\nmine"
    logs.close()


def test_the_tail_is_the_last_bytes_of_this_attempt(tmp_path):
    logs, log = first_attempt(tmp_path, "header\n")
    run_into(log, "x" * (defaults.RESULT_TAIL_BYTES + 100) + "END")
    tail = log.tail()
    assert len(tail) == defaults.RESULT_TAIL_BYTES and tail.endswith("END")
    log.close()
    logs.close()


def test_without_a_ready_file_logs_are_opened_by_name(tmp_path):
    logs = TaskLogs(tmp_path)
    logs.close()  # as where O_TMPFILE is unavailable
    logs.prepare("h\n")
    log = logs.open("t1", 1, "h\n")
    assert (tmp_path / "t1.log").read_text() == "h\n"
    run_into(log, "out")
    assert log.tail() == "out"
    log.close()


def test_a_ready_file_with_another_header_is_not_used(tmp_path):
    logs = TaskLogs(tmp_path)
    logs.prepare("=== attempt 1 by old-name\n")
    log = logs.open("t1", 1, "=== attempt 1 by new-name\n")  # e.g. the agent registered again
    run_into(log, "out")
    log.close()
    assert (tmp_path / "t1.log").read_text() == "=== attempt 1 by new-name\nout"
    logs.prepare("=== attempt 1 by new-name\n")  # the stale one is replaced
    assert logs.spare_header == b"=== attempt 1 by new-name\n"
    second = logs.open("t2", 1, "=== attempt 1 by new-name\n")
    assert not second.named
    second.close()
    logs.close()


def test_a_killed_worker_leaves_no_file_behind(tmp_path):
    code = (
        "import sys, time; from pathlib import Path; from tinytown.worker.tasklog import TaskLogs;"
        "logs = TaskLogs(Path(sys.argv[1])); logs.prepare('h'); print('ready', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert logs_in(proc.pid, tmp_path)  # the process holds an (unnamed) file in the folder
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert os.listdir(tmp_path) == []


def logs_in(pid: int, folder) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        targets = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        if any(t.startswith(str(folder)) and "(deleted)" in t for t in targets):
            return True
        time.sleep(0.01)
    return False


def test_a_cli_that_truncates_its_output_leaves_an_empty_tail_not_an_error(tmp_path):
    logs, log = first_attempt(tmp_path, "=== attempt 1\n")
    subprocess.run(
        ["sh", "-c", ": > /dev/stdout"], stdout=log.fd, check=True
    )  # reopens fd 1 with O_TRUNC
    assert os.fstat(log.fd).st_size == 0
    assert log.tail() == ""
    log.close()
    logs.close()


def test_output_written_through_a_reopened_stdout_is_appended_not_overwritten(tmp_path):
    logs, log = first_attempt(tmp_path, "h\n")
    subprocess.run(["sh", "-c", "printf one >> /dev/stdout; printf two"], stdout=log.fd, check=True)
    log.name()
    assert (tmp_path / "t1.log").read_text() == "h\nonetwo"
    log.close()
    logs.close()
