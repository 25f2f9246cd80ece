"""scaler.py against a real Docker engine, a real townhall (gunicorn), real Redis and the real
agent-worker image built from this repository's Dockerfile.

Every test gets its own town (a unique name, so the containers the scaler starts carry their own
``tinytown.town`` label), its own townhall process and scaler state file, on one managed Redis
over TCP shared by the module. Workers run with host networking and reach that Redis on
127.0.0.1; their coding CLI is ``tests/fake_cli.py`` (``[sleep N]`` in a task description makes
it take N seconds). Passes run in-process through ``Scaler.run_pass`` or as ``python scaler.py
--once`` where the exit code or the printed JSON is the behaviour under test.

Where a test needs townhall to say something on cue (an agent that turns busy between the plan
and the drain, a container whose agent is missing) it uses a ``FakeTown``: a canned townhall over
real HTTP, which also receives the notification webhook, and workers that are a plain command in
the worker image (``sleep 300``, ``exit 3``).

Skipped only when no Docker engine answers (``bash .ci/docker-engine.sh`` starts one; CI does).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import docker
import docker.errors
import pytest
import requests

from tinytown.core.clock import parse_rfc3339
from tinytown.missions.start import start_mission

from .docker_support import (
    BASE_IMAGE,
    STAGE_LABEL,
    build_image,
    docker_client_or_skip_reason,
    remove_stale_stages,
)
from .scaler_stack import (
    HEARTBEATING_COMMAND,
    FakeTown,
    ScalerTown,
    TcpRedis,
    agent_item,
    free_port,
)
from .worker_support import poll

pytestmark = pytest.mark.docker

IMAGE = f"tinytown-agent-worker:scaler-test-{os.getpid()}"
TASK_DONE_TIMEOUT_SECS = 60.0
IDLE_EXIT_TIMEOUT_SECS = 30.0


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine():
    client = docker_client_or_skip_reason()
    if isinstance(client, str):
        pytest.skip(client)
    yield client
    client.close()


@pytest.fixture(scope="module")
def worker_image(engine):
    """The agent-worker image, built once for this module (labelled tinytown.test=1)."""
    build_image("agent-worker", IMAGE)
    yield IMAGE
    try:
        engine.images.remove(IMAGE, force=True)
    except docker.errors.NotFound:
        pass


@pytest.fixture(scope="module")
def tcp_redis(tmp_path_factory):
    redis = TcpRedis(tmp_path_factory.mktemp("scaler-redis")).start()
    yield redis
    redis.stop()


@pytest.fixture
def make_town(tmp_path, engine, worker_image, tcp_redis):
    """Factory: a started town (townhall up); its containers are removed by label afterwards."""
    towns: list[ScalerTown] = []

    def make(**agent) -> ScalerTown:
        town = ScalerTown(tmp_path / f"town{len(towns) + 1}", tcp_redis.url, worker_image, agent)
        towns.append(town)
        return town.start()

    yield make
    for town in towns:
        town.stop(engine)


@pytest.fixture
def fake_town(tmp_path, engine, worker_image):
    """Factory: a FakeTown whose workers run ``command``; its containers and volumes are removed
    by label afterwards."""
    towns: list[FakeTown] = []

    def make(command: str = "sleep 300") -> FakeTown:
        town = FakeTown(tmp_path / f"fake{len(towns) + 1}", worker_image, command)
        towns.append(town)
        return town

    yield make
    for town in towns:
        town.stop(engine)


# --- helpers -----------------------------------------------------------------------------------


def local_docker_host() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def write_outposts(path: Path, *outposts: dict) -> Path:
    lines = []
    for outpost in outposts:
        lines.append("[[outposts]]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in outpost.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def one_pass(scaler):
    return scaler.run_pass(time.time())


def started(report) -> list[dict]:
    return [a for a in report.actions if a["action"] == "start"]


def wait_task(town: ScalerTown, task_id: str, state: str, timeout: float = TASK_DONE_TIMEOUT_SECS):
    def reached():
        task = town.town.tasks.get(task_id)
        return task if task.state == state else None

    return poll(reached, timeout=timeout, message=f"task {task_id} to be {state}")


def statuses(town: ScalerTown, engine) -> dict[str, str]:
    return {c.id: c.status for c in town.containers(engine)}


def wait_exited(town, engine, count: int, timeout: float = IDLE_EXIT_TIMEOUT_SECS):
    def exited():
        found = [c for c in town.containers(engine) if c.status == "exited"]
        return found if len(found) >= count else None

    return poll(exited, timeout=timeout, message=f"{count} container(s) to exit")


def agent_of(container) -> str:
    return container.labels["tinytown.agent_id"]


def stop_worker_process(container) -> int:
    """SIGSTOP the worker inside a running container (tini's child): the container stays
    ``running`` while its heartbeats stop, like a hung worker. Returns the host PID."""
    container.reload()
    init_pid = container.attrs["State"]["Pid"]
    children = Path(f"/proc/{init_pid}/task/{init_pid}/children").read_text().split()
    assert children, f"container {container.name} has no worker process under its init"
    pid = int(children[0])
    os.kill(pid, signal.SIGSTOP)
    return pid


def recommendation(town: ScalerTown) -> str:
    return requests.get(town.townhall.url + "/api/scaling", timeout=5).json()[
        "scaling_recommendation"
    ]


def heartbeat_age_secs(town: ScalerTown, agent_id: str) -> float:
    agent = town.town.agents.get(agent_id)
    return time.time() - parse_rfc3339(agent.last_heartbeat).timestamp()


def docker_health(container) -> str | None:
    """The container's Docker health now: starting, healthy, unhealthy, or None (no healthcheck)."""
    container.reload()
    return (container.attrs["State"].get("Health") or {}).get("Status")


def wait_health(container, status: str, timeout: float = 30.0) -> None:
    poll(
        lambda: docker_health(container) == status,
        timeout=timeout,
        interval=0.2,
        message=f"container {container.name} to be {status} by Docker",
    )


def started_container(town, engine, start: dict):
    return next(c for c in town.containers(engine) if c.id.startswith(start["container_id"]))


# --- scale from zero, back to zero -------------------------------------------------------------


def test_tasks_arriving_with_zero_workers_start_one_container_each_and_the_tasks_complete(
    make_town, engine
):
    town = make_town()
    tasks = [town.town.tasks.add(f"task {i} [sleep 1]") for i in range(2)]
    assert town.containers(engine) == []

    report = one_pass(town.scaler())

    assert report.exit_status == 0, report.error
    assert [(a["outpost"], a["ok"]) for a in started(report)] == [("local", True), ("local", True)]
    containers = town.containers(engine)
    assert len(containers) == 2
    for c in containers:
        assert c.labels["tinytown.role"] == "agent-worker"
        assert c.labels["tinytown.outpost"] == "local"
    agent_ids = {agent_of(c) for c in containers}
    assert agent_ids == {a["agent_id"] for a in started(report)}
    for task in tasks:
        done = wait_task(town, task.id, "completed")
        assert done.assigned_to in agent_ids  # run by a worker the scaler started


def test_idle_workers_exit_zero_by_themselves_and_exited_containers_beyond_keep_are_removed(
    make_town, engine
):
    town = make_town()  # idle_timeout_secs = 3
    tasks = [town.town.tasks.add(f"task {i} [sleep 0]") for i in range(2)]
    assert len(started(one_pass(town.scaler()))) == 2
    for task in tasks:
        wait_task(town, task.id, "completed")

    exited = wait_exited(town, engine, 2)
    assert [c.attrs["State"]["ExitCode"] for c in exited] == [0, 0]
    assert {town.town.agents.get(agent_of(c)).state for c in exited} == {"stopped"}

    report = one_pass(town.scaler(keep_exited=1))

    assert report.exit_status == 0, report.error
    removed = [a["container_id"] for a in report.actions if a["action"] == "remove" and a["ok"]]
    assert len(removed) == 1 and started(report) == []
    left = town.containers(engine)
    assert len(left) == 1 and left[0].id[:12] not in removed

    report = one_pass(town.scaler(keep_exited=0))
    assert [a["action"] for a in report.actions] == ["remove"]
    assert town.containers(engine) == []


def test_a_mission_with_no_worker_running_scales_workers_from_zero_and_back(make_town, engine):
    """The mission's first item is pending work like any other: the scaler starts a worker for
    it, townhall's dispatcher queues the next item the moment the first is done, and once the
    mission completed the idle workers exit and the scaler removes them: zero again."""
    town = make_town()  # idle_timeout_secs = 3
    mission, _ = start_mission(
        town.town,
        items=[
            {"key": "first", "title": "First [sleep 0.5]"},
            {"key": "second", "title": "Second [sleep 0.5]", "depends_on": ["first"]},
        ],
    )
    assert town.containers(engine) == []
    poll(
        lambda: recommendation(town) == "scale_up",
        timeout=20,
        message="the mission's first item to show as queued work in /api/scaling",
    )
    deadline = time.monotonic() + 2 * TASK_DONE_TIMEOUT_SECS
    while town.town.missions.get(mission.id).state == "running":
        assert time.monotonic() < deadline, town.town.missions.work_items(mission.id)
        report = one_pass(town.scaler())  # as the scaler's loop does, every half second here
        assert report.exit_status == 0, report.error
        time.sleep(0.5)
    assert town.town.missions.get(mission.id).state == "completed"
    agents = {agent_of(c) for c in town.containers(engine)}
    items = town.town.missions.work_items(mission.id)
    assert {town.town.tasks.get(i["task_id"]).assigned_to for i in items} <= agents
    # each worker learnt its outpost from the scaler (TINYTOWN_OUTPOST; docs/cost.md)
    assert {town.town.agents.get(a).outpost for a in agents} == {"local"}

    wait_exited(town, engine, len(agents))
    report = one_pass(town.scaler(keep_exited=0))
    assert report.exit_status == 0 and started(report) == []
    assert town.containers(engine) == []


def test_dry_run_prints_the_starts_it_would_make_and_creates_nothing(make_town, engine):
    town = make_town()
    for i in range(2):
        town.town.tasks.add(f"task {i}")

    text = town.cli("--once", "--dry-run", *town.cli_args())
    line = town.cli("--once", "--dry-run", "--json", *town.cli_args())

    assert text.returncode == 0, text.stderr
    assert "plan: target=2 live=0 start=local,local drain=0" in text.stdout
    assert line.returncode == 0, line.stderr
    report = json.loads(line.stdout)
    assert (report["dry_run"], report["plan"]["starts"], report["actions"]) == (
        True,
        ["local", "local"],
        [],
    )
    assert town.containers(engine) == [] and town.volumes(engine) == []
    assert not town.state_file.exists()


# --- the shared workspace volume ---------------------------------------------------------------


def test_workers_share_the_towns_workspace_volume_which_outlives_each_of_them(fake_town, engine):
    # Each worker appends its agent id to a file in the workspace, prints it and exits 0.
    town = fake_town(
        "sh -c 'echo $TINYTOWN_AGENT_ID >> /workspace/.tt/seen; cat /workspace/.tt/seen'"
    )
    town.signal(desired=1)
    scaler = town.scaler(workspace_volume=None, keep_exited=0)  # None: the default volume

    (first,) = started(one_pass(scaler))
    wait_exited(town, engine, 1)
    report = one_pass(scaler)  # removes the first container, starts a second
    (second,) = started(report)
    assert [a["container_id"] for a in report.actions if a["action"] == "remove"] == [
        first["container_id"]
    ]
    (container,) = wait_exited(town, engine, 1)

    assert container.attrs["State"]["ExitCode"] == 0
    assert container.logs().decode().split() == [first["agent_id"], second["agent_id"]]
    (volume,) = town.volumes(engine)
    assert volume.name == f"tinytown-{town.name}-workspace"
    assert volume.attrs["Labels"]["tinytown.role"] == "workspace"
    assert [(m["Name"], m["Destination"]) for m in container.attrs["Mounts"]] == [
        (volume.name, "/workspace/.tt")
    ]


# --- safety ------------------------------------------------------------------------------------


def test_a_worker_holding_a_task_is_never_drained_even_when_the_scaler_wants_zero(
    make_town, engine
):
    town = make_town(idle_timeout_secs=60)  # the idle worker stays until it is drained
    long = town.town.tasks.add("long [sleep 12]")
    short = town.town.tasks.add("short [sleep 0]")
    assert len(started(one_pass(town.scaler()))) == 2
    wait_task(town, short.id, "completed")
    busy_agent = wait_task(town, long.id, "running").assigned_to
    busy = next(c for c in town.containers(engine) if agent_of(c) == busy_agent)
    idle = next(c for c in town.containers(engine) if agent_of(c) != busy_agent)
    wait_health(idle, "healthy")  # the container's own word that its worker is alive
    poll(
        lambda: recommendation(town) == "scale_down",
        timeout=10,
        message="townhall to recommend scale_down (1 task in flight, 2 agents)",
    )

    # Target 0, no cooldown, no hysteresis: the most eager scale-down there is.
    eager = town.scaler(max_workers=0, scale_down_cooldown_secs=0, scale_down_after_passes=1)
    drained = []
    for _ in range(3):
        report = one_pass(eager)
        drained += [a["container_id"] for a in report.actions if a["action"] == "drain"]
        busy.reload()
        assert busy.status == "running"
        time.sleep(0.5)

    assert town.town.tasks.get(long.id).state == "running"  # it was busy through every pass
    assert drained == [idle.id[:12]]  # the idle one, once
    done = wait_task(town, long.id, "completed")
    assert done.assigned_to == busy_agent and done.attempts == 1  # never interrupted
    idle.reload()
    assert idle.status == "exited" and idle.attrs["State"]["ExitCode"] == 0  # drained cleanly


def test_townhall_down_means_nothing_is_started_drained_or_removed_and_once_exits_4(
    make_town, engine
):
    town = make_town()
    long = town.town.tasks.add("long [sleep 120]")
    town.town.tasks.add("short [sleep 0]")
    assert len(started(one_pass(town.scaler()))) == 2
    wait_task(town, long.id, "running")
    wait_exited(town, engine, 1)  # the other worker idled out
    town.town.tasks.add("one more")  # would need a start
    before = statuses(town, engine)
    assert sorted(before.values()) == ["exited", "running"]

    town.townhall.stop()
    # Settings that would remove the exited container, drain or restart the running one and
    # start another if the pass acted at all.
    result = town.cli(
        "--once",
        "--json",
        *town.cli_args(
            keep_exited=0,
            max_workers=0,
            scale_down_cooldown_secs=0,
            scale_down_after_passes=1,
            start_grace_secs=0,
            unhealthy_after_secs=1,
            restart_after_failures=1,
        ),
    )

    assert result.returncode == 4, result.stderr
    line = json.loads(result.stdout)
    assert line["actions"] == [] and line["plan"] is None
    assert "/api/scaling" in line["error"]
    assert "event=signal_unavailable" in result.stderr
    assert statuses(town, engine) == before


def test_a_worker_that_takes_a_task_between_the_plan_and_the_drain_is_not_drained(
    fake_town, engine
):
    town = fake_town(HEARTBEATING_COMMAND)
    town.signal(desired=1)
    (start,) = started(one_pass(town.scaler()))
    agent_id = start["agent_id"]
    wait_health(started_container(town, engine, start), "healthy")  # Docker would allow the drain
    town.signal(desired=0, recommendation="scale_to_zero")
    # The plan's read sees it Idle; the read just before SIGTERM sees it Working.
    town.agents([agent_item(agent_id)], [agent_item(agent_id, "Working", "t-1")])

    report = one_pass(town.scaler(scale_down_cooldown_secs=0, scale_down_after_passes=1))

    assert [w["agent_id"] for w in report.plan["drains"]] == [agent_id]  # the plan chose it
    assert [(a["action"], a["reason"]) for a in report.actions] == [
        ("drain_skipped", "agent Working with task t-1")
    ]
    (container,) = town.containers(engine)
    assert container.status == "running"


# --- outposts ----------------------------------------------------------------------------------


def test_an_unreachable_outpost_is_skipped_by_its_breaker_and_the_next_one_takes_the_start(
    make_town, engine, tmp_path
):
    town = make_town()
    config = write_outposts(
        tmp_path / "outposts.toml",
        {"name": "gone", "docker_host": f"tcp://127.0.0.1:{free_port()}", "max_workers": 5},
        {"name": "local", "docker_host": local_docker_host(), "max_workers": 5},
    )
    task = town.town.tasks.add("task [sleep 30]")

    report = one_pass(town.scaler(config))

    assert report.exit_status == 0, report.error
    assert [(a["outpost"], a["ok"]) for a in started(report)] == [("local", True)]
    gone = report.outposts[0]
    assert (gone["name"], gone["reachable"], gone["breaker_failures"]) == ("gone", False, 1)
    assert gone["breaker_open_until"] is not None
    assert [c.labels["tinytown.outpost"] for c in town.containers(engine)] == ["local"]
    wait_task(town, task.id, "running")

    town.town.tasks.add("another [sleep 0]")  # the first worker is busy: a second one is due
    report = one_pass(town.scaler(config))  # within the backoff: not even contacted
    assert report.outposts[0]["reachable"] is None and report.outposts[1]["reachable"] is True
    assert [a["outpost"] for a in started(report)] == ["local"]


def test_the_first_outpost_takes_new_workers_until_its_max_workers_then_the_next(
    make_town, engine, tmp_path
):
    town = make_town()
    config = write_outposts(
        tmp_path / "outposts.toml",
        {"name": "near", "docker_host": local_docker_host(), "max_workers": 1},
        {"name": "far", "docker_host": local_docker_host(), "max_workers": 5},
    )
    for i in range(3):
        town.town.tasks.add(f"task {i} [sleep 5]")

    report = one_pass(town.scaler(config))

    assert report.exit_status == 0, report.error
    assert [a["outpost"] for a in started(report)] == ["near", "far", "far"]
    by_outpost = sorted(c.labels["tinytown.outpost"] for c in town.containers(engine))
    assert by_outpost == ["far", "far", "near"]
    assert [(o["name"], o["live"]) for o in report.outposts] == [("near", 0), ("far", 0)]
    report = one_pass(town.scaler(config))  # counted now: full, nothing more to start
    assert [(o["name"], o["live"]) for o in report.outposts] == [("near", 1), ("far", 2)]
    assert started(report) == []


# --- cost --------------------------------------------------------------------------------------


def test_the_cost_cap_stops_new_starts_and_json_and_status_report_the_cost(
    make_town, engine, tmp_path
):
    town = make_town()
    config = write_outposts(
        tmp_path / "priced.toml", {"name": "local", "max_workers": 5, "cost_per_hour": 1.5}
    )
    for i in range(3):
        town.town.tasks.add(f"task {i} [sleep 60]")
    args = town.cli_args(config, cost_cap_hourly=3.0)

    first = town.cli("--once", "--json", *args)

    assert first.returncode == 0, first.stderr
    line = json.loads(first.stdout)
    assert [a["action"] for a in line["actions"]] == ["start", "start"]
    assert line["plan"]["unplaced"] == 1
    assert line["plan"]["unplaced_reason"].startswith("cost cap reached")
    assert line["cost"]["hourly"] == 3.0 and line["cost"]["cap_hourly"] == 3.0
    assert len(town.containers(engine)) == 2
    assert {c.labels["tinytown.cost_per_hour"] for c in town.containers(engine)} == {"1.5"}

    again = json.loads(town.cli("--once", "--json", *args).stdout)
    assert again["actions"] == [] and again["plan"]["unplaced"] == 1
    assert len(town.containers(engine)) == 2

    poll(
        lambda: town.town.tasks.counts().get("running") == 2,
        timeout=20,
        message="both workers to take a task",
    )
    status = town.cli("status", "--json", *args)
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["cost"]["hourly"] == 3.0 and report["cost"]["cap_hourly"] == 3.0
    assert len(report["containers"]) == 2
    assert all(
        row["cost_so_far"] >= 0 and row["agent_state"] == "Working" for row in report["containers"]
    )


# --- health ------------------------------------------------------------------------------------

HEALTH = {
    "start_grace_secs": 1,
    "unhealthy_after_secs": 2,
    "restart_after_failures": 3,
    "restart_timeout_secs": 1,
}


def a_hung_worker(town: ScalerTown, engine, **settings):
    """One worker that finished its task and then stopped heartbeating (its process stopped):
    townhall sees its heartbeat go stale, and Docker its health file, so both call it dead."""
    task = town.town.tasks.add("task [sleep 0]")
    assert len(started(one_pass(town.scaler(**settings)))) == 1
    wait_task(town, task.id, "completed")
    (container,) = town.containers(engine)
    wait_health(container, "healthy")
    stop_worker_process(container)
    poll(
        lambda: (
            heartbeat_age_secs(town, agent_of(container)) > HEALTH["unhealthy_after_secs"] + 0.5
        ),
        timeout=10,
        message="the heartbeat to go stale",
    )
    wait_health(container, "unhealthy")
    return container


def test_a_worker_that_stops_heartbeating_is_restarted_after_three_failing_passes(
    make_town, engine
):
    town = make_town(idle_timeout_secs=120)
    container = a_hung_worker(town, engine)
    container.reload()
    first_start = container.attrs["State"]["StartedAt"]
    scaler = town.scaler(**HEALTH)

    for failing in (1, 2):
        report = one_pass(scaler)
        assert report.plan["restarts"] == [] and report.actions == [], f"pass {failing}"

    report = one_pass(scaler)

    # Both witnesses: townhall's stale heartbeat and the container's own Docker health.
    (action,) = report.actions
    assert (action["action"], action["ok"], action["container_id"]) == (
        "restart",
        True,
        container.id[:12],
    )
    assert "heartbeat" in action["reason"] and "Docker health unhealthy" in action["reason"]
    container.reload()
    assert container.status == "running" and container.attrs["State"]["StartedAt"] != first_start
    poll(
        lambda: (
            heartbeat_age_secs(town, agent_of(container)) < 1.5
            and town.town.agents.get(agent_of(container)).state == "idle"
        ),
        timeout=20,
        message="the restarted worker to serve (Idle, heartbeating) again",
    )


def test_a_failed_restart_marks_the_worker_and_runs_the_notify_command(make_town, engine, tmp_path):
    town = make_town(idle_timeout_secs=120)
    extra = tmp_path / "extra"
    extra.mkdir()
    event_file, env_file = tmp_path / "event.json", tmp_path / "event.env"
    settings = {
        **HEALTH,
        "volumes": town.settings()["volumes"] + [f"{extra}:/extra"],
        "notify_command": f"sh -c 'cat > {event_file}; printf %s \"$TINYTOWN_EVENT\" > {env_file}'",
    }
    container = a_hung_worker(town, engine, **settings)
    # The container can no longer start: its mount source became a file.
    extra.rmdir()
    extra.write_text("not a directory\n")
    scaler = town.scaler(**settings)

    reports = [one_pass(scaler) for _ in range(3)]

    assert [a["action"] for r in reports[:2] for a in r.actions] == []
    (action,) = reports[2].actions
    assert (action["action"], action["container_id"]) == ("mark_error", container.id[:12])
    assert "restart container" in action["error"]
    event = json.loads(event_file.read_text())
    assert event["event"] == env_file.read_text() == "worker_restart_failed"
    assert (event["container_id"], event["agent_id"], event["town"]) == (
        container.id,
        agent_of(container),
        town.name,
    )

    after = one_pass(scaler)  # marked: neither judged nor restarted again, nor counted as live
    assert after.plan["restarts"] == [] and after.plan["live"] == 0
    assert [a["action"] for a in after.actions] == []


def a_worker_given_up_on(town: FakeTown, engine, **settings):
    """One running container whose agent townhall does not know and which Docker reports
    unhealthy (it writes no health file), given up on at once: with no restarts allowed, the
    first failed health check marks it in error and notifies."""
    town.signal(desired=1)
    eager = {"start_grace_secs": 0, "restart_after_failures": 1, "max_restarts": 0, **settings}
    (start,) = started(one_pass(town.scaler(**eager)))
    wait_health(started_container(town, engine, start), "unhealthy")
    report = one_pass(town.scaler(**eager))
    assert [a["action"] for a in report.actions] == ["mark_error"], report.actions
    return start, eager


GIVEN_UP_REASON = "agent not registered; Docker health unhealthy after 0 restarts"


def test_status_shows_a_worker_marked_in_error_in_text_and_json(fake_town, engine):
    town = fake_town()
    start, settings = a_worker_given_up_on(town, engine)

    text = town.cli("status", *town.cli_args(**settings))
    as_json = town.cli("status", "--json", *town.cli_args(**settings))

    assert text.returncode == as_json.returncode == 0, text.stderr
    (row,) = json.loads(as_json.stdout)["containers"]
    assert row["container_id"] == start["container_id"]
    assert row["marked_error"]["reason"] == GIVEN_UP_REASON
    assert f"{start['name']}: marked in error at " in text.stdout
    assert GIVEN_UP_REASON in text.stdout
    assert f"docker rm -f {start['name']}" in text.stdout


def test_a_worker_given_up_on_is_posted_to_the_notify_webhook(fake_town, engine):
    town = fake_town()
    start, _ = a_worker_given_up_on(town, engine, notify_webhook=town.townhall.url + "/hook")

    # townhall hears first (POST /v1/agents/<id>/unhealthy), then the scaler's own hook runs
    report, (path, headers, body) = town.townhall.posts
    assert report[0] == f"/v1/agents/{start['agent_id']}/unhealthy"
    assert json.loads(report[2])["reason"].startswith(GIVEN_UP_REASON)
    assert path == "/hook" and headers["Content-Type"] == "application/json"
    event = json.loads(body)
    assert {
        k: event[k]
        for k in (
            "event",
            "town",
            "outpost",
            "container_name",
            "agent_id",
            "reason",
            "error",
            "restarts",
        )
    } == {
        "event": "worker_restarts_exhausted",
        "town": town.name,
        "outpost": "local",
        "container_name": start["name"],
        "agent_id": start["agent_id"],
        "reason": GIVEN_UP_REASON,
        "error": None,
        "restarts": 0,
    }
    assert event["container_id"].startswith(start["container_id"])
    assert parse_rfc3339(event["timestamp"])


# --- evidence: townhall and the container must agree -------------------------------------------

EAGER = {
    "start_grace_secs": 0,
    "restart_after_failures": 1,
    "scale_down_cooldown_secs": 0,
    "scale_down_after_passes": 1,
}


def two_healthy_workers(town: FakeTown, engine) -> list:
    """Two running containers whose workers heartbeat as far as Docker can tell (healthy)."""
    town.signal(desired=2)
    starts = started(one_pass(town.scaler()))
    containers = [started_container(town, engine, s) for s in starts]
    for c in containers:
        wait_health(c, "healthy")
    return containers


def test_workers_get_a_docker_healthcheck_that_their_heartbeats_keep_healthy(make_town, engine):
    town = make_town(idle_timeout_secs=60)
    town.town.tasks.add("task [sleep 0]")
    assert len(started(one_pass(town.scaler()))) == 1
    (container,) = town.containers(engine)

    wait_health(container, "healthy")

    check = container.attrs["Config"]["Healthcheck"]
    assert check["Test"] == ["CMD", "python", "-P", "-m", "tinytown.worker.health_file"]
    assert check["Interval"] == 1_000_000_000  # the workers' heartbeat_interval_secs
    assert "TINYTOWN_HEALTH_FILE=/tmp/tinytown-worker.health" in container.attrs["Config"]["Env"]
    assert container.attrs["State"]["Health"]["Log"][-1]["Output"].startswith(
        "last acknowledged heartbeat"
    )


def test_an_empty_agent_list_while_the_signal_counts_live_agents_restarts_nobody_and_is_logged(
    fake_town, engine
):
    town = fake_town(HEARTBEATING_COMMAND)
    containers = two_healthy_workers(town, engine)
    before = {c.id: c.attrs["State"]["StartedAt"] for c in containers}
    # The broken townhall of issue 10: no agents listed, two counted live and busy.
    town.signal(desired=2, recommendation="steady", active=2, busy=2)
    town.agents([])

    result = town.cli("--once", "--json", *town.cli_args(**EAGER))

    assert result.returncode == 0, result.stderr
    line = json.loads(result.stdout)
    assert line["actions"] == [] and line["plan"]["restarts"] == []
    assert (
        line["plan"]["evidence_inconsistent"][0]
        == "/api/scaling says active_agents=2 but /v1/agents lists 0 live agent(s) (tolerance 1)"
    )
    assert "event=evidence_inconsistent" in result.stderr and "active_agents=2" in result.stderr
    for c in containers:
        c.reload()
        assert c.status == "running" and c.attrs["State"]["StartedAt"] == before[c.id]


def test_idle_agents_while_the_signal_counts_them_busy_are_not_drained(fake_town, engine):
    town = fake_town(HEARTBEATING_COMMAND)
    containers = two_healthy_workers(town, engine)
    # Townhall lists both Idle but counts both busy, and says scale to zero.
    town.signal(desired=0, recommendation="scale_to_zero", active=2, busy=2)
    town.agents([agent_item(agent_of(c)) for c in containers])

    report = one_pass(town.scaler(max_workers=0, **EAGER))

    assert report.exit_status == 0, report.error
    assert report.actions == [] and report.plan["drains"] == []
    assert report.plan["scale_down"]["reason"].startswith(
        "evidence inconsistent: /api/scaling says busy_agents=2"
    )
    assert [statuses(town, engine)[c.id] for c in containers] == ["running", "running"]


def test_a_healthy_container_whose_agent_townhall_calls_dead_is_left_alone(fake_town, engine):
    town = fake_town(HEARTBEATING_COMMAND)
    town.signal(desired=1)
    (start,) = started(one_pass(town.scaler()))
    container = started_container(town, engine, start)
    wait_health(container, "healthy")
    first_start = container.attrs["State"]["StartedAt"]
    stale = agent_item(start["agent_id"])
    stale["last_heartbeat"] = "2020-01-01T00:00:00Z"
    town.signal(desired=1, recommendation="steady", active=1, busy=0)
    town.agents([stale])  # townhall: its heartbeat is years old

    result = town.cli("--once", "--json", *town.cli_args(unhealthy_after_secs=2, **EAGER))
    status = town.cli("status", "--json", *town.cli_args(unhealthy_after_secs=2, **EAGER))

    assert result.returncode == 0, result.stderr
    line = json.loads(result.stdout)
    assert line["actions"] == [] and line["plan"]["restarts"] == []
    (unknown,) = line["plan"]["unknown"]
    assert (unknown["container_id"], unknown["evidence"], unknown["health"]) == (
        start["container_id"],
        "evidence_inconsistent",
        "healthy",
    )
    assert (
        unknown["reason"].startswith("townhall says heartbeat")
        and "Docker health is healthy" in unknown["reason"]
    )
    assert f"event=evidence_inconsistent container={start['container_id']}" in result.stderr
    (row,) = json.loads(status.stdout)["containers"]
    assert row["health"] == "healthy" and row["evidence"]["kind"] == "evidence_inconsistent"
    container.reload()
    assert container.status == "running" and container.attrs["State"]["StartedAt"] == first_start


# --- crash loops -------------------------------------------------------------------------------


def test_workers_exiting_3_at_start_hold_starts_on_the_outpost_and_notify_once(fake_town, engine):
    town = fake_town("sh -c 'echo \"configuration error: no [redis] url\" >&2; exit 3'")
    town.signal(desired=3)
    scaler = town.scaler(notify_webhook=town.townhall.url + "/hook")
    assert len(started(one_pass(scaler))) == 3
    exited = wait_exited(town, engine, 3)
    assert {c.attrs["State"]["ExitCode"] for c in exited} == {3}

    report = one_pass(scaler)

    assert started(report) == []
    (hold,) = report.actions
    assert (hold["action"], hold["exit_code"], hold["exits"]) == ("hold_starts", 3, 3)
    assert report.plan["unplaced"] == 3
    assert report.plan["unplaced_reason"].startswith("local holds starts (3 workers in a row")
    assert report.outposts[0]["starts_held_until"] == hold["until"]
    ((_, _, body),) = town.townhall.posts
    event = json.loads(body)
    assert (event["event"], event["outpost"], event["exit_code"], event["exits"]) == (
        "outpost_crash_loop",
        "local",
        3,
        3,
    )
    assert "configuration error: no [redis] url" in event["log_tail"]

    again = one_pass(scaler)  # still held: no start, no second notification
    assert again.actions == [] and len(town.townhall.posts) == 1
    assert len(town.containers(engine)) == 3


def test_earlier_builds_stage_images_are_pruned_and_the_newest_kept_as_cache(engine):
    import io
    import uuid

    stage = f"test-{uuid.uuid4().hex[:8]}"
    built = []
    try:
        for n in (1, 2, 3):
            dockerfile = (
                f"FROM {BASE_IMAGE}\nLABEL {STAGE_LABEL}={stage}\nLABEL tinytown.test=1 n={n}\n"
            )
            image, _ = engine.images.build(
                fileobj=io.BytesIO(dockerfile.encode()), pull=False, rm=True
            )
            built.append(image.id)
            time.sleep(0.01)

        removed = remove_stale_stages(engine, stage=stage)

        assert sorted(removed) == sorted(built[:2])
        left = engine.images.list(filters={"dangling": True, "label": f"{STAGE_LABEL}={stage}"})
        assert [i.id for i in left] == [built[2]]
    finally:
        for image_id in built:
            try:
                engine.images.remove(image_id, force=True)
            except docker.errors.NotFound:
                pass
