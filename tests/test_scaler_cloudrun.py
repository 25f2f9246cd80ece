"""The Cloud Run driver (``python -m tinytown.scaler.cloudrun``): it executes the worker job with
one task per worker the scaling signal wants beyond the job's unfinished tasks.

Pure counting first; then the command itself, run as deploy/cloudrun/scaler-job.yaml runs it,
against two real HTTP servers on loopback: ``FakeTownhall`` (canned ``/api/scaling``) and a
stand-in for Google's endpoints (the metadata server's token and the Cloud Run Admin API v2's
execution list and ``:run``), which records what it was asked. No network, no cloud.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tinytown.scaler.cloudrun import unfinished_tasks, workers_to_start
from tinytown.scaler.errors import ExitStatus
from tinytown.scaler.wire import parse_signal

from .scaler_stack import FakeTownhall

ROOT = Path(__file__).resolve().parent.parent
JOB = "projects/p/locations/europe-west1/jobs/tinytown-agent-worker"
TOKEN = "ya29.test-token"


def signal_body(desired: int, version: str = "0123456789abcdef") -> dict:
    return {
        "town": "t",
        "timestamp": "2027-01-15T08:00:00+00:00",
        "queue_depth": desired,
        "pending_tasks": desired,
        "in_flight_tasks": 0,
        "active_agents": 0,
        "cold_agents": 0,
        "desired_agents": desired,
        "max_agents": 10,
        "scaling_recommendation": "scale_up" if desired else "steady",
        "version": version,
    }


def execution(tasks: int, succeeded=0, failed=0, cancelled=0, running=0, done=False) -> dict:
    body = {
        "name": f"{JOB}/executions/x",
        "taskCount": tasks,
        "runningCount": running,
        "succeededCount": succeeded,
        "failedCount": failed,
        "cancelledCount": cancelled,
    }
    if done:
        body["completionTime"] = "2027-01-15T07:00:00Z"
    return body


# --- pure --------------------------------------------------------------------------------------


def test_unfinished_tasks_counts_tasks_of_executions_not_yet_completed():
    executions = [
        execution(3, succeeded=1),  # two still starting or running
        execution(2, failed=1, cancelled=1),  # all done, completionTime not set yet
        execution(4, succeeded=4, done=True),
        {"taskCount": 1},  # just created: no counts yet
    ]
    assert unfinished_tasks(executions) == 3


@pytest.mark.parametrize(
    "desired, unfinished, cap, start",
    [(0, 0, 10, 0), (3, 0, 10, 3), (3, 2, 10, 1), (3, 5, 10, 0), (12, 0, 10, 10), (12, 8, 10, 2)],
)
def test_workers_to_start_is_the_clamped_signal_less_the_unfinished_tasks(
    desired, unfinished, cap, start
):
    assert workers_to_start(parse_signal(signal_body(desired)), unfinished, cap) == start


# --- the command ---------------------------------------------------------------------------------


class FakeGoogle:
    """The metadata server's token and the Admin API's executions list and ``:run``."""

    def __init__(self):
        self.executions: list[dict] = []
        self.page_size = 2  # the command asks for 100; pages of 2 make it follow nextPageToken
        self.status = 200
        self.runs: list[tuple[str, dict, str | None]] = []  # (path, body, Authorization)
        self.lists: list[str | None] = []  # Authorization of each list call
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                url = urlsplit(self.path)
                if url.path.endswith("/service-accounts/default/token"):
                    if self.headers.get("Metadata-Flavor") != "Google":
                        return self.reply(403, {"error": "Metadata-Flavor missing"})
                    return self.reply(200, {"access_token": TOKEN, "expires_in": 3599})
                if url.path == f"/v2/{JOB}/executions":
                    fake.lists.append(self.headers.get("Authorization"))
                    if fake.status != 200:
                        return self.reply(fake.status, {"error": {"status": "PERMISSION_DENIED"}})
                    start = int(parse_qs(url.query).get("pageToken", ["0"])[0])
                    page = fake.executions[start : start + fake.page_size]
                    body = {"executions": page}
                    if start + fake.page_size < len(fake.executions):
                        body["nextPageToken"] = str(start + fake.page_size)
                    return self.reply(200, body)
                self.reply(404, {"error": self.path})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.runs.append((self.path, body, self.headers.get("Authorization")))
                fake.executions.append(execution(body["overrides"]["taskCount"]))  # as Cloud Run
                self.reply(200, {"name": "projects/p/locations/europe-west1/operations/op-1"})

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def google():
    fake = FakeGoogle()
    yield fake
    fake.close()


@pytest.fixture
def townhall():
    fake = FakeTownhall()
    yield fake
    fake.close()


def driver(townhall: FakeTownhall, google: FakeGoogle, *args: str, **env: str):
    """``python -P -m tinytown.scaler.cloudrun --once`` with the job's environment."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TINYTOWN_")}
    environ.update(
        TINYTOWN_CLOUDRUN_JOB=JOB,
        TINYTOWN_CLOUDRUN_TOWNHALL_URL=townhall.url,
        TINYTOWN_CLOUDRUN_API=google.url,
        TINYTOWN_CLOUDRUN_METADATA=google.url,
    )
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-P", "-m", "tinytown.scaler.cloudrun", *(args or ("--once",))],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_it_executes_the_job_with_one_task_per_worker_the_unfinished_tasks_do_not_cover(
    townhall, google
):
    townhall.routes["/api/scaling"] = (200, signal_body(desired=4))
    google.executions = [execution(2, succeeded=1), execution(3, succeeded=3, done=True)]

    result = driver(townhall, google)

    assert result.returncode == 0, result.stderr
    ((path, body, auth),) = google.runs
    assert (path, body, auth) == (
        f"/v2/{JOB}:run",
        {"overrides": {"taskCount": 3}},
        f"Bearer {TOKEN}",
    )
    assert google.lists == [f"Bearer {TOKEN}"]
    assert "event=execution_started" in result.stderr and "tasks=3" in result.stderr


def test_it_counts_unfinished_tasks_across_every_page_of_executions(townhall, google):
    townhall.routes["/api/scaling"] = (200, signal_body(desired=3))
    google.executions = [execution(1) for _ in range(5)]  # three pages of two

    result = driver(townhall, google)

    assert result.returncode == 0, result.stderr
    assert len(google.lists) == 3
    assert google.runs == []  # five unfinished tasks already cover three


def test_in_a_loop_it_passes_again_when_the_signal_changes_counting_what_it_started(
    townhall, google
):
    townhall.routes["/api/scaling"] = (200, signal_body(desired=1))
    more = (200, signal_body(desired=3, version="fedcba9876543210"))
    for wait in range(26):  # the long-poll: answered after a moment with the new signal
        for since in ("0123456789abcdef", "fedcba9876543210"):
            path = f"/api/scaling?wait={wait}&since={since}"
            townhall.routes[path], townhall.delays[path] = more, 0.5

    result = driver(townhall, google, "--for-secs", "5")

    assert result.returncode == 0, result.stderr
    # 1 for the first signal; then 2 more for 3, the first execution's task counted as unfinished
    assert [body["overrides"]["taskCount"] for _, body, _ in google.runs] == [1, 2]
    assert any("wait=" in path for path in townhall.gets)


def test_it_starts_nothing_and_exits_4_when_the_signal_cannot_be_read(townhall, google):
    townhall.routes["/api/scaling"] = (503, {"title": "Redis unavailable"})

    result = driver(townhall, google)

    assert result.returncode == ExitStatus.TOWNHALL_UNAVAILABLE == 4
    assert google.runs == [] and google.lists == []
    assert "event=signal_unavailable" in result.stderr and "answered 503" in result.stderr


def test_it_starts_nothing_and_exits_5_naming_the_role_when_cloud_run_refuses(townhall, google):
    townhall.routes["/api/scaling"] = (200, signal_body(desired=2))
    google.status = 403

    result = driver(townhall, google)

    assert result.returncode == ExitStatus.DOCKER_UNAVAILABLE == 5
    assert google.runs == []
    assert "answered 403" in result.stderr and "roles/run.developer" in result.stderr


def test_it_caps_the_workers_it_starts_at_max_workers(townhall, google):
    townhall.routes["/api/scaling"] = (200, signal_body(desired=9))

    result = driver(townhall, google, TINYTOWN_CLOUDRUN_MAX_WORKERS="2")

    assert result.returncode == 0, result.stderr
    assert [body for _, body, _ in google.runs] == [{"overrides": {"taskCount": 2}}]


def test_a_bad_job_name_is_a_configuration_error_that_names_the_expected_form(townhall, google):
    result = driver(townhall, google, TINYTOWN_CLOUDRUN_JOB="tinytown-agent-worker")

    assert result.returncode == ExitStatus.CONFIG_ERROR == 3
    assert "expected projects/PROJECT/locations/REGION/jobs/JOB" in result.stderr
    assert townhall.gets == []
