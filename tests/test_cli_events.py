"""``tt events`` through the real console script: lines for a person, JSON lines, paging, the
mission filter, refused arguments, and ``--follow`` printing an event appended after it began."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone

from tinytown.core import events as ev
from tinytown.core.clock import now, to_rfc3339

from .conftest import CONFIG_ENV, tt_executable

LINE = re.compile(r"^\d\d:\d\d:\d\d  [a-z_]+ +\S+ +")
KOLKATA = timezone(timedelta(hours=5, minutes=30))


def note(town, text: str, mission_id: str | None = None, at: datetime | None = None) -> str:
    return town.events.append(
        ev.event(ev.MISSION_EVENT, text, to_rfc3339(at or now()), mission_id=mission_id)
    )


def test_help_describes_the_command_and_its_options(run_tt):
    out = run_tt("events", "--help").stdout
    assert out.startswith("usage: tt events")
    for option in ("--follow", "--mission", "--after", "--limit", "--json", "Ctrl-C"):
        assert option in out


def test_an_empty_town_has_no_events(run_tt):
    result = run_tt("events")
    assert result.returncode == 0 and result.stdout == "No events\n"
    assert run_tt("events", "--json").stdout == ""


def test_each_event_is_one_line_with_local_time_type_short_id_states_and_message(run_tt, town):
    task = town.tasks.add("fix the login test")
    town.tasks.cancel(task.id, "duplicate")
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    note(town, "line one\nline\ttwo\x1b[0m", at=at)
    result = run_tt("events", env={"TZ": "IST-5:30"})  # POSIX: UTC+5:30, no tz database needed
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and all(LINE.match(line) for line in lines), lines
    created, cancelled, noted = lines
    assert created.split()[1:4] == ["task_created", task.id[:8], "→pending"]
    assert cancelled.split()[1:4] == ["task_cancelled", task.id[:8], "pending→cancelled"]
    assert cancelled.endswith(f"task {task.id} pending -> cancelled")
    assert noted == "08:34:05  mission_event" + " " * 11 + "-" + " " * 28 + "line one line two [0m"
    assert at.astimezone(KOLKATA).strftime("%H:%M:%S") == "08:34:05"
    assert "\x1b" not in result.stdout and "{" not in result.stdout and "'" not in result.stdout


def test_json_prints_each_document_on_one_line_with_its_id(run_tt, town):
    ids = [note(town, f"n{i}") for i in range(3)]
    result = run_tt("events", "--json")
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    assert [d["id"] for d in docs] == ids and [d["message"] for d in docs] == ["n0", "n1", "n2"]
    assert all(d["event_type"] == ev.MISSION_EVENT and d["timestamp"] for d in docs)


def test_limit_and_after_page_through_and_say_where_to_go_on(run_tt, town):
    ids = [note(town, f"n{i}") for i in range(3)]
    first = run_tt("events", "--limit", "2", "--json")
    assert [json.loads(x)["id"] for x in first.stdout.splitlines()] == ids[:2]
    assert f"--after {ids[1]}" in first.stderr
    rest = run_tt("events", "--after", ids[1], "--json")
    assert [json.loads(x)["id"] for x in rest.stdout.splitlines()] == ids[2:]
    assert rest.stderr == ""
    assert run_tt("events", "--after", "$").stdout == "No events\n"


def test_mission_shows_only_that_missions_events(run_tt, town):
    mission = str(uuid.uuid4())
    note(town, "town-wide")
    note(town, "mine", mission)
    result = run_tt("events", "--mission", mission.upper(), "--json")
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(d["message"], d["mission_id"]) for d in docs] == [("mine", mission)]
    assert run_tt("events", "--mission", str(uuid.uuid4())).stdout == "No events\n"


def test_bad_arguments_exit_2_with_one_line_naming_them(run_tt):
    for args, named in [
        (("--after", "abc"), "--after"),
        (("--after", "18446744073709551616-0"), "--after"),
        (("--mission", "nope"), "--mission"),
        (("--limit", "0"), "--limit"),
        (("--limit", "1001"), "--limit"),
        (("--limit", "x"), "--limit"),
    ]:
        result = run_tt("events", *args)
        assert result.returncode == 2, args
        assert len(result.stderr.splitlines()) == 1 and named in result.stderr, result.stderr


# --- --follow ---------------------------------------------------------------------------------


def follow(town_dir, *args: str) -> tuple[subprocess.Popen, queue.Queue]:
    """``tt events --follow`` running, and a queue of the lines it prints."""
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_ENV}
    # Ctrl-C at a terminal: SIGINT as the default action, even when this test run was started
    # in the background with SIGINT ignored (which exec passes on); tt keeps Python's default.
    shim = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"
    proc = subprocess.Popen(
        [sys.executable, "-c", shim, tt_executable(), "events", "--follow", *args],
        cwd=town_dir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    return proc, lines


def next_line(lines: queue.Queue, timeout: float = 15.0) -> str:
    return lines.get(timeout=timeout).rstrip("\n")


def test_follow_prints_events_as_they_are_appended_until_terminated(town_dir, town):
    note(town, "before")
    proc, lines = follow(town_dir)
    try:
        assert next_line(lines).endswith("before")  # it runs and has read what was there
        appended = time.monotonic()
        task = town.tasks.add("arrives while following")
        line = next_line(lines)
        assert time.monotonic() - appended < 2.0  # a blocking read, not a slow poll
        assert line.split()[1:4] == ["task_created", task.id[:8], "→pending"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGTERM


def test_follow_json_from_now_on_and_ctrl_c_exits_130(town_dir, town):
    note(town, "old news")
    proc, lines = follow(town_dir, "--after", "$", "--json")
    try:
        sent: dict[str, str] = {}
        deadline = time.monotonic() + 15
        while lines.empty() and time.monotonic() < deadline:  # until it has started and prints
            text = f"fresh {len(sent)}"
            sent[note(town, text)] = text
            time.sleep(0.3)
        doc = json.loads(next_line(lines))
        assert doc["message"] == sent[doc["id"]]  # a new event, never the old news
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 130
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
