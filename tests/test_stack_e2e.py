"""compose.yaml end to end, as a user runs it: build the images, ``compose up``, read the
bootstrap key, submit work over REST, and watch the scaler start workers that do it and retire.

One stack for the module (``tests/compose_stack.py``): Redis, townhall and the scaler from
compose.yaml, the images built from this checkout by the compose tool, the scaler starting real
agent-worker containers on the stack's network. The coding CLI is ``tests/fake_cli.py``, put on
the town's workspace volume and named in its tinytown.toml the way a user adds a CLI: ``compose
exec`` into the townhall, then restart it. The tests run in file order, each on what the one
before left (the key, the tasks and missions submitted).

Skipped when no Docker engine, compose tool or Redis stand-in image is there, unless
``TINYTOWN_REQUIRE_DOCKER=1`` (CI), which makes that a failure. ``bash .ci/docker-engine.sh``
provides all three. About a minute and a half here with a warm build cache.
"""

from __future__ import annotations

import os

import docker.errors
import pytest

from .compose_stack import (
    DOCKER_SOCKET,
    KEY_FILE,
    REDIS_IMAGE,
    ComposeStack,
    compose_command,
    wait_for,
)
from .docker_support import ENGINE_SETUP_HINT, REPO_ROOT, docker_client_or_skip_reason

pytestmark = [pytest.mark.docker, pytest.mark.slow]

FAKE_CLI = REPO_ROOT / "tests" / "fake_cli.py"
# What a user appends to /workspace/tinytown.toml for a CLI of their own; here the fake one, and
# short worker timings so that workers retire within seconds.
TOWN_TABLES = """
[agent]
idle_timeout_secs = 3
heartbeat_interval_secs = 1

[agent_clis.fake]
command = "python /workspace/fake_cli.py"
"""
WORKER_START_TIMEOUT_SECS = 60.0
WORK_DONE_TIMEOUT_SECS = 90.0
SCALE_TO_ZERO_TIMEOUT_SECS = 60.0
RESTART_TIMEOUT_SECS = 60.0


def missing(what: str) -> None:
    if os.environ.get("TINYTOWN_REQUIRE_DOCKER") == "1":
        pytest.fail(f"TINYTOWN_REQUIRE_DOCKER=1 but {what}; {ENGINE_SETUP_HINT}", pytrace=False)
    pytest.skip(f"{what}; {ENGINE_SETUP_HINT}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    engine = docker_client_or_skip_reason()
    if isinstance(engine, str):
        pytest.skip(engine)
    command = compose_command()
    if command is None:
        missing("neither `docker compose` nor `docker-compose` answers")
    if not DOCKER_SOCKET.exists():
        missing(f"no Docker socket at {DOCKER_SOCKET} for compose.yaml's scaler to mount")
    try:
        engine.images.get(REDIS_IMAGE)
    except docker.errors.ImageNotFound:
        missing(f"the Redis stand-in image {REDIS_IMAGE} is missing")
    stack = ComposeStack(command, tmp_path_factory.mktemp("compose"), engine)
    try:
        stack.build()
        stack.up()
        stack.read_key()
        configure_the_fake_cli(stack)
        yield stack
    finally:
        stack.remove()
        engine.close()


def configure_the_fake_cli(stack: ComposeStack) -> None:
    """Put the CLI on the workspace volume, add its table to tinytown.toml, restart townhall."""
    stack.compose(
        "exec",
        "-T",
        "townhall",
        "sh",
        "-c",
        "cat > /workspace/fake_cli.py",
        input=FAKE_CLI.read_text(),
    )
    stack.compose(
        "exec", "-T", "townhall", "sh", "-c", "cat >> /workspace/tinytown.toml", input=TOWN_TABLES
    )
    restart(stack, "townhall")


def restart(stack: ComposeStack, service: str) -> None:
    before = stack.service(service).attrs["State"]["StartedAt"]
    stack.compose("restart", service)
    after = stack.service(service).attrs["State"]["StartedAt"]
    assert after != before, f"{service} was not restarted"
    wait_for(
        stack.ready,
        timeout=RESTART_TIMEOUT_SECS,
        what=f"townhall ready after restarting {service}",
        stack=stack,
    )


def submit_task(stack: ComposeStack, description: str) -> str:
    answer = stack.api("POST", "/v1/backlog", {"description": description, "cli": "fake"})
    assert answer.status_code == 201, answer.text
    return answer.json()["task_id"]


def submit_mission(stack: ComposeStack, title: str) -> str:
    items = [
        {"key": "plan", "title": f"{title}: plan [print planned]", "cli": "fake"},
        {
            "key": "build",
            "title": f"{title}: build [print built]",
            "cli": "fake",
            "depends_on": ["plan"],
        },
    ]
    answer = stack.api("POST", "/v1/missions", {"title": title, "items": items})
    assert answer.status_code == 201, answer.text
    return answer.json()["mission_id"]


def task(stack: ComposeStack, task_id: str) -> dict:
    answer = stack.api("GET", f"/v1/tasks/{task_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()


def mission(stack: ComposeStack, mission_id: str) -> dict:
    """``GET /v1/missions/{id}``: the mission, its work items and their summary."""
    answer = stack.api("GET", f"/v1/missions/{mission_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()


def completed(stack: ComposeStack, tasks: list[str], missions: list[str]) -> bool:
    return all(task(stack, t)["state"] == "Completed" for t in tasks) and all(
        mission(stack, m)["mission"]["state"] == "completed" for m in missions
    )


def wait_for_zero_workers(stack: ComposeStack) -> None:
    wait_for(
        lambda: stack.workers() and not stack.workers(running_only=True),
        timeout=SCALE_TO_ZERO_TIMEOUT_SECS,
        what="every worker container to retire (idle exit)",
        stack=stack,
    )
    exits = {w.name: w.attrs["State"]["ExitCode"] for w in stack.workers()}
    assert set(exits.values()) == {0}, exits


# --- the tests, in order -----------------------------------------------------------------------


def test_the_bootstrap_key_is_written_once_0600_on_the_secrets_volume_and_opens_the_api(stack):
    mode = stack.compose("exec", "-T", "townhall", "stat", "-c", "%a %U", KEY_FILE).split()
    assert mode == ["600", "tinytown"]
    assert len(stack.key) == 64
    # Read before the fixture restarted townhall: the restart kept it.
    assert stack.compose("exec", "-T", "townhall", "cat", KEY_FILE).strip() == stack.key
    assert stack.api("GET", "/v1/tasks", key="").status_code == 401
    assert stack.api("GET", "/v1/tasks").status_code == 200
    # Townhall says where the key is, never what it is.
    logs = stack.service("townhall").logs().decode(errors="replace")
    assert f"key_file={KEY_FILE}" in logs and stack.key not in logs
    # The scaler reads it (read-only); the workers' town directory does not hold it.
    scaler_mounts = {m["Destination"]: m["RW"] for m in stack.service("scaler").attrs["Mounts"]}
    assert scaler_mounts["/run/tinytown"] is False
    assert stack.key not in stack.compose(
        "exec", "-T", "townhall", "cat", "/workspace/tinytown.toml"
    )


def test_a_task_and_a_two_item_mission_are_done_by_workers_the_scaler_starts_and_retires(stack):
    assert stack.workers() == []  # nothing runs while nothing is queued

    task_id = submit_task(stack, "first task [print hello from a worker]")
    mission_id = submit_mission(stack, "first mission")

    wait_for(
        lambda: stack.workers(),
        timeout=WORKER_START_TIMEOUT_SECS,
        what="the scaler to start a worker container",
        stack=stack,
    )
    wait_for(
        lambda: completed(stack, [task_id], [mission_id]),
        timeout=WORK_DONE_TIMEOUT_SECS,
        what="the task and both mission items to complete",
        stack=stack,
    )
    done = task(stack, task_id)
    assert done["result"] == "hello from a worker\n"
    agents = {w.labels["tinytown.agent_id"] for w in stack.workers()}
    assert done["assigned_to"] in agents  # a worker the scaler started did it
    for worker in stack.workers():  # on the stack's network, where redis and townhall are
        assert set(worker.attrs["NetworkSettings"]["Networks"]) == {stack.stack}
    assert mission(stack, mission_id)["summary"]["done"] == 2

    wait_for_zero_workers(stack)
    stack.submitted = ([task_id], [mission_id])


def test_acknowledged_work_survives_restarts_of_townhall_and_redis_and_scales_from_zero(stack):
    earlier_tasks, earlier_missions = stack.submitted
    earlier_workers = {w.id for w in stack.workers()}
    # With the scaler stopped, what is submitted now stays queued across both restarts.
    stack.compose("stop", "scaler")
    task_id = submit_task(stack, "after the restarts [print still here]")
    mission_id = submit_mission(stack, "second mission")
    assert task(stack, task_id)["state"] == "Pending"

    restart(stack, "townhall")
    appendonly = stack.compose("exec", "-T", "redis", "redis-cli", "config", "get", "appendonly")
    assert appendonly.split() == ["appendonly", "yes"]
    restart(stack, "redis")  # the append-only file brings everything back

    assert task(stack, task_id)["state"] == "Pending"
    assert mission(stack, mission_id)["mission"]["state"] == "running"
    assert completed(stack, earlier_tasks, earlier_missions)
    assert stack.workers(running_only=True) == []

    stack.compose("start", "scaler")
    wait_for(
        lambda: stack.workers(running_only=True) or completed(stack, [task_id], [mission_id]),
        timeout=WORKER_START_TIMEOUT_SECS,
        what="the scaler to start a worker from zero",
        stack=stack,
    )
    wait_for(
        lambda: completed(stack, [task_id], [mission_id]),
        timeout=WORK_DONE_TIMEOUT_SECS,
        what="the queued task and mission to complete after the restarts",
        stack=stack,
    )
    done = task(stack, task_id)
    assert done["result"] == "still here\n"
    new_agents = {
        w.labels["tinytown.agent_id"] for w in stack.workers() if w.id not in earlier_workers
    }
    assert done["assigned_to"] in new_agents  # a worker started after the restarts did it
    wait_for_zero_workers(stack)
