"""``python scaler.py`` as a real process: help, configuration, exit codes, safety without Docker.

Townhall is either a closed localhost port or a tiny real HTTP server from ``http.server``
(``FakeTownhall``); outposts that must fail point at a closed localhost port. Nothing here needs
a Docker engine.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tinytown.scaler.cli import build_parser
from tinytown.scaler.defaults import SCALE_DOWN_COOLDOWN_SECS
from tinytown.scaler.errors import ExitStatus
from tinytown.scaler.settings import SETTINGS

from .scaler_stack import FakeTownhall

ROOT = Path(__file__).resolve().parent.parent
SCALER = str(ROOT / "scaler.py")
DOCS = ROOT / "docs" / "scaler.md"
HELP_COLUMNS = "100"  # docs/scaler.md holds --help rendered at this width


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TINYTOWN_SCALER_") and k not in ("DOCKER_HOST", "REDIS_URL")
    }
    env.update(COLUMNS=HELP_COLUMNS, **extra)
    return env


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 30):
    return subprocess.run(
        [sys.executable, SCALER, *args],
        capture_output=True,
        text=True,
        env=env or clean_env(),
        timeout=timeout,
    )


@pytest.fixture
def state_file(tmp_path) -> Path:
    return tmp_path / "state" / "state.json"


@pytest.fixture
def dead_outpost_config(tmp_path) -> Path:
    """A config whose only outpost is a Docker endpoint nobody listens on."""
    path = tmp_path / "dead.toml"
    path.write_text(
        f'[[outposts]]\nname = "nowhere"\ndocker_host = "tcp://127.0.0.1:{closed_port()}"\n'
    )
    return path


@pytest.fixture
def townhall():
    server = FakeTownhall()
    yield server
    server.close()


VALID_SIGNAL = {
    "town": "demo",
    "timestamp": "2027-01-15T08:00:00Z",
    "queue_depth": 1,
    "pending_tasks": 1,
    "in_flight_tasks": 0,
    "active_agents": 0,
    "cold_agents": 0,
    "desired_agents": 1,
    "max_agents": 10,
    "scaling_recommendation": "scale_up",
    "idle_agents": 0,
    "busy_agents": 0,
}


def last_json_line(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


# --- help and docs ---------------------------------------------------------------------------
def test_help_exits_0_and_names_every_setting_with_its_environment_variable():
    result = run("--help")
    assert result.returncode == 0
    flat = " ".join(result.stdout.split())
    for setting in SETTINGS:
        assert setting.option in flat
        if setting.env:
            assert setting.env in flat


def test_the_docs_hold_the_current_help_text():
    result = run("--help")
    assert result.stdout.strip() in DOCS.read_text(), (
        "docs/scaler.md is out of date: paste `COLUMNS=100 python scaler.py --help` into it"
    )


def test_the_docs_list_every_exit_code():
    text = DOCS.read_text()
    for status in ExitStatus:
        assert re.search(rf"^\| `{int(status)}` \| `{status.name}`", text, re.M), status.name


def test_every_scaler_flag_in_the_deploy_files_and_docs_exists():
    known = {a for action in build_parser()._actions for a in action.option_strings}
    texts = [p.read_text() for p in (ROOT / "deploy" / "systemd").glob("*")] + [DOCS.read_text()]
    used = set()
    for text in texts:
        used |= set(re.findall(r"`(--[a-z][a-z-]+)", text))  # `--once` in prose
        for line in text.splitlines():  # command lines that run the scaler
            if re.search(r"scaler\.py|tinytown-scaler(\s|$)", line) and "--" in line:
                used |= set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", line))
    assert used and used - known == set()


def test_the_example_config_file_is_valid():
    result = run("--config", str(ROOT / "deploy" / "scaler.example.toml"), "config")
    assert result.returncode == 0, result.stderr
    assert [o["name"] for o in json.loads(result.stdout)["outposts"]][0] == "local"


# --- configuration ---------------------------------------------------------------------------
def test_a_bad_flag_value_exits_3_naming_the_key_value_and_expected_form():
    result = run("--max-workers", "lots", "config")
    assert result.returncode == ExitStatus.CONFIG_ERROR == 3
    assert "max_workers='lots'" in result.stderr and "--max-workers" in result.stderr
    assert "whole number" in result.stderr


def test_a_bad_environment_value_exits_3_naming_the_variable():
    result = run("config", env=clean_env(TINYTOWN_SCALER_INTERVAL_SECS="soon"))
    assert result.returncode == 3
    assert "TINYTOWN_SCALER_INTERVAL_SECS" in result.stderr and "a number" in result.stderr


def test_a_bad_toml_value_exits_3_naming_the_file(tmp_path):
    path = tmp_path / "scaler.toml"
    path.write_text("min_workers = -2\n")
    result = run("--config", str(path), "config")
    assert result.returncode == 3
    assert "min_workers=-2" in result.stderr and str(path) in result.stderr


def test_an_unknown_toml_key_exits_3_listing_the_known_keys(tmp_path):
    path = tmp_path / "scaler.toml"
    path.write_text("max_worker = 3\n")
    result = run("--config", str(path), "config")
    assert result.returncode == 3
    assert "unknown key 'max_worker'" in result.stderr and "max_workers" in result.stderr


def test_a_missing_config_file_exits_3(tmp_path):
    result = run("--config", str(tmp_path / "nope.toml"), "config")
    assert result.returncode == 3 and "cannot read config file" in result.stderr


def test_min_workers_above_max_workers_exits_3():
    result = run("--min-workers", "5", "--max-workers", "2", "config")
    assert result.returncode == 3 and "min_workers" in result.stderr


def test_run_without_an_image_exits_3_saying_how_to_set_it():
    result = run("--once")
    assert result.returncode == 3
    assert "--image" in result.stderr and "TINYTOWN_SCALER_IMAGE" in result.stderr


def test_a_worker_env_may_not_set_the_agent_id():
    result = run("--env", "TINYTOWN_AGENT_ID=x", "config")
    assert result.returncode == 3 and "TINYTOWN_AGENT_ID" in result.stderr


def test_an_unknown_command_is_a_usage_error():
    assert run("explode").returncode == ExitStatus.USAGE == 2


def test_flags_beat_the_environment_which_beats_the_file(tmp_path):
    path = tmp_path / "scaler.toml"
    path.write_text("min_workers = 1\nmax_workers = 7\ninterval_secs = 30\n")
    result = run(
        "--config",
        str(path),
        "--min-workers",
        "2",
        "config",
        env=clean_env(TINYTOWN_SCALER_MIN_WORKERS="3", TINYTOWN_SCALER_MAX_WORKERS="6"),
    )
    config = json.loads(result.stdout)
    assert (
        config["min_workers"],
        config["max_workers"],
        config["interval_secs"],
        config["scale_down_cooldown_secs"],
    ) == (2, 6, 30.0, SCALE_DOWN_COOLDOWN_SECS)


def test_the_config_file_may_come_from_the_environment(tmp_path):
    path = tmp_path / "scaler.toml"
    path.write_text('[container]\nimage = "worker:1"\n')
    result = run("config", env=clean_env(TINYTOWN_SCALER_CONFIG=str(path)))
    assert json.loads(result.stdout)["image"] == "worker:1"


def test_container_env_merges_across_layers_with_the_flag_winning(tmp_path):
    path = tmp_path / "scaler.toml"
    path.write_text(
        '[container]\npass_env = ["REDIS_URL"]\n[container.env]\nA = "file"\nB = "file"\n'
    )
    result = run("--config", str(path), "--env", "B=flag", "--pass-env", "GIT_TOKEN", "config")
    config = json.loads(result.stdout)
    assert config["env"] == {"A": "file", "B": "flag"}
    assert config["pass_env"] == ["REDIS_URL", "GIT_TOKEN"]


def test_workers_share_a_workspace_volume_named_for_the_town_by_default():
    config = json.loads(run("config").stdout)
    assert (config["workspace"], config["workspace_volume"]) == (
        "/workspace/.tt",
        "tinytown-{town}-workspace",
    )


def test_a_workspace_volume_name_docker_would_refuse_exits_3():
    result = run("--workspace-volume", "shared workspace", "config")
    assert result.returncode == 3 and "workspace_volume='shared workspace'" in result.stderr


def test_a_mount_where_the_workspace_volume_goes_exits_3_saying_how_to_opt_out():
    result = run("--volume", "/srv/checkouts:/workspace/.tt", "config")
    assert result.returncode == 3 and "workspace_volume = 'none'" in result.stderr
    assert (
        run(
            "--volume", "/srv/checkouts:/workspace/.tt", "--workspace-volume", "none", "config"
        ).returncode
        == 0
    )


def test_the_api_key_file_is_read_and_the_key_never_printed(tmp_path):
    key = tmp_path / "key"
    key.write_text("tt_secret_value\n")
    result = run("--api-key-file", str(key), "config")
    assert result.returncode == 0
    assert "tt_secret_value" not in result.stdout and '"api_key": "****"' in result.stdout


def test_an_api_key_and_a_key_file_in_the_same_layer_exit_3(tmp_path):
    result = run("--api-key", "k", "--api-key-file", str(tmp_path / "key"), "config")
    assert result.returncode == 3 and "set only one" in result.stderr


def test_an_api_key_flag_overrides_an_api_key_file_from_the_environment(tmp_path):
    result = run(
        "--api-key",
        "k",
        "config",
        env=clean_env(TINYTOWN_SCALER_API_KEY_FILE=str(tmp_path / "missing")),
    )
    assert result.returncode == 0


def test_an_outpost_with_a_bad_docker_host_exits_3(tmp_path):
    path = tmp_path / "scaler.toml"
    path.write_text('[[outposts]]\nname = "vm"\ndocker_host = "http://vm:2375"\n')
    result = run("--config", str(path), "config")
    assert result.returncode == 3 and "outposts[0].docker_host" in result.stderr


# --- safety: townhall unavailable -> nothing done, exit 4 in --once --------------------------
def test_unreachable_townhall_exits_4_and_does_nothing(state_file, dead_outpost_config):
    result = run(
        "--once",
        "--json",
        "--dry-run",
        "--image",
        "worker:1",
        "--url",
        f"http://127.0.0.1:{closed_port()}",
        "--state-file",
        str(state_file),
        "--config",
        str(dead_outpost_config),
    )
    assert result.returncode == ExitStatus.TOWNHALL_UNAVAILABLE == 4
    report = last_json_line(result.stdout)
    assert report["plan"] is None and report["actions"] == []
    assert "signal_unavailable" in result.stderr and "nothing changed" in result.stderr
    assert not state_file.exists()  # --dry-run writes nothing, not even state


def test_unreachable_townhall_without_dry_run_also_exits_4_before_touching_docker(
    state_file, dead_outpost_config
):
    result = run(
        "--once",
        "--json",
        "--image",
        "worker:1",
        "--url",
        f"http://127.0.0.1:{closed_port()}",
        "--state-file",
        str(state_file),
        "--config",
        str(dead_outpost_config),
    )
    assert result.returncode == 4
    assert last_json_line(result.stdout)["outposts"] == []
    assert "outpost_unreachable" not in result.stderr


def test_a_malformed_signal_exits_4_naming_the_bad_field(townhall, state_file):
    townhall.routes["/api/scaling"] = (200, {**VALID_SIGNAL, "desired_agents": "two"})
    result = run(
        "--once",
        "--dry-run",
        "--image",
        "worker:1",
        "--url",
        townhall.url,
        "--state-file",
        str(state_file),
    )
    assert result.returncode == 4
    assert "desired_agents" in result.stderr and "malformed" in result.stderr


def test_a_signal_that_is_not_json_exits_4(townhall, state_file):
    townhall.routes["/api/scaling"] = (200, "<html>proxy error</html>")
    result = run(
        "--once",
        "--dry-run",
        "--image",
        "worker:1",
        "--url",
        townhall.url,
        "--state-file",
        str(state_file),
    )
    assert result.returncode == 4 and "not JSON" in result.stderr


def test_a_non_200_signal_exits_4_with_the_status(townhall, state_file):
    townhall.routes["/api/scaling"] = (503, {"title": "Service Unavailable"})
    result = run(
        "--once",
        "--dry-run",
        "--image",
        "worker:1",
        "--url",
        townhall.url,
        "--state-file",
        str(state_file),
    )
    assert result.returncode == 4 and "answered 503" in result.stderr


def test_a_townhall_serving_another_town_is_refused(townhall, state_file):
    townhall.routes["/api/scaling"] = (200, VALID_SIGNAL)
    result = run(
        "--once",
        "--dry-run",
        "--image",
        "worker:1",
        "--url",
        townhall.url,
        "--town",
        "other",
        "--state-file",
        str(state_file),
    )
    assert result.returncode == 4 and "'demo'" in result.stderr


# --- safety: Docker unavailable -> nothing done, exit 5 in --once ----------------------------
def test_every_outpost_unreachable_exits_5_and_opens_its_breaker(
    townhall, state_file, dead_outpost_config
):
    townhall.routes["/api/scaling"] = (200, VALID_SIGNAL)
    result = run(
        "--once",
        "--json",
        "--image",
        "worker:1",
        "--url",
        townhall.url,
        "--state-file",
        str(state_file),
        "--config",
        str(dead_outpost_config),
    )
    assert result.returncode == ExitStatus.DOCKER_UNAVAILABLE == 5
    report = last_json_line(result.stdout)
    assert report["actions"] == [] and report["outposts"][0]["reachable"] is False
    saved = json.loads(state_file.read_text())
    assert saved["outposts"]["nowhere"]["failures"] == 1


def test_an_outpost_in_backoff_is_not_contacted_on_the_next_pass(
    townhall, state_file, dead_outpost_config
):
    townhall.routes["/api/scaling"] = (200, VALID_SIGNAL)
    args = (
        "--once",
        "--json",
        "--image",
        "worker:1",
        "--url",
        townhall.url,
        "--state-file",
        str(state_file),
        "--config",
        str(dead_outpost_config),
    )
    run(*args)
    result = run(*args)
    assert result.returncode == 5
    assert last_json_line(result.stdout)["outposts"][0]["reachable"] is None
    assert json.loads(state_file.read_text())["outposts"]["nowhere"]["failures"] == 1


def test_status_with_every_outpost_unreachable_exits_5(dead_outpost_config, state_file):
    result = run(
        "status",
        "--json",
        "--url",
        f"http://127.0.0.1:{closed_port()}",
        "--state-file",
        str(state_file),
        "--config",
        str(dead_outpost_config),
    )
    assert result.returncode == 5
    assert json.loads(result.stdout)["outposts"][0]["reachable"] is False


# --- the loop --------------------------------------------------------------------------------
def test_the_loop_survives_an_unreachable_townhall_and_sigterm_ends_it_with_0(state_file):
    proc = subprocess.Popen(
        [
            sys.executable,
            SCALER,
            "--json",
            "--image",
            "worker:1",
            "--interval-secs",
            "0.2",
            "--url",
            f"http://127.0.0.1:{closed_port()}",
            "--state-file",
            str(state_file),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    watchdog = threading.Timer(30, proc.kill)  # a hung scaler fails the test instead of hanging it
    watchdog.start()
    try:
        lines = [proc.stdout.readline() for _ in range(3)]  # three failed passes, still running
        assert all(json.loads(line)["exit_code"] == 4 for line in lines)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        watchdog.cancel()
        proc.kill()
        proc.communicate()


def test_a_second_signal_during_a_pass_ends_the_loop_at_once_with_130(townhall, state_file):
    townhall.routes["/api/scaling"] = (200, VALID_SIGNAL)
    townhall.delays["/api/scaling"] = 60  # the pass hangs reading the signal
    proc = subprocess.Popen(
        [
            sys.executable,
            SCALER,
            "--image",
            "worker:1",
            "--url",
            townhall.url,
            "--http-timeout-secs",
            "120",
            "--state-file",
            str(state_file),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    watchdog = threading.Timer(30, proc.kill)
    watchdog.start()
    try:
        while "/api/scaling" not in townhall.gets:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        while "event=stopping" not in proc.stderr.readline():  # the first one was heard
            pass
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == ExitStatus.INTERRUPTED == 130
    finally:
        watchdog.cancel()
        proc.kill()
        proc.communicate()


def test_the_systemd_loop_unit_runs_the_loop():
    unit = (ROOT / "deploy" / "systemd" / "tinytown-scaler.service").read_text()
    exec_line = next(l for l in unit.splitlines() if l.startswith("ExecStart="))
    argv = shlex.split(exec_line.removeprefix("ExecStart="))
    assert argv[0].endswith("/tinytown-scaler")
    parsed = build_parser().parse_args(argv[1:])
    assert parsed.subcommand == "run" and not parsed.once


def test_status_as_text_says_which_outpost_is_unreachable(dead_outpost_config, state_file):
    result = run(
        "status",
        "--url",
        f"http://127.0.0.1:{closed_port()}",
        "--config",
        str(dead_outpost_config),
        "--state-file",
        str(state_file),
    )
    assert result.returncode == 5
    assert "outpost nowhere: unreachable" in result.stdout


# --- the state file belongs to one town --------------------------------------------------------
def other_towns_state(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "version": 1,
                "town": "elsewhere",
                "updated_at": 1.0,
                "last_scale_up_at": 1.0,
                "surplus_passes": 2,
                "removed_cost": 4.2,
                "outposts": {},
                "containers": {},
                "crash_loops": {},
            }
        )
    )
    return path.read_bytes()


def test_a_state_file_of_another_town_exits_3_and_is_left_unchanged(
    townhall, state_file, dead_outpost_config
):
    townhall.routes["/api/scaling"] = (200, VALID_SIGNAL)
    before = other_towns_state(state_file)
    result = run(
        "--once",
        "--json",
        "--image",
        "worker:1",
        "--url",
        townhall.url,
        "--state-file",
        str(state_file),
        "--config",
        str(dead_outpost_config),
    )
    assert result.returncode == ExitStatus.CONFIG_ERROR == 3
    report = last_json_line(result.stdout)
    assert report["actions"] == [] and report["plan"] is None and report["outposts"] == []
    for part in (
        str(state_file),
        "'elsewhere'",
        "'demo'",
        "--state-file",
        "TINYTOWN_SCALER_STATE_FILE",
        "delete",
    ):
        assert part in report["error"] and part in result.stderr, part
    assert "event=state_other_town" in result.stderr
    assert state_file.read_bytes() == before


def test_the_loop_with_another_towns_state_file_keeps_it_and_does_nothing(townhall, state_file):
    townhall.routes["/api/scaling"] = (200, VALID_SIGNAL)
    before = other_towns_state(state_file)
    proc = subprocess.Popen(
        [
            sys.executable,
            SCALER,
            "--json",
            "--image",
            "worker:1",
            "--interval-secs",
            "0.2",
            "--url",
            townhall.url,
            "--state-file",
            str(state_file),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    watchdog = threading.Timer(30, proc.kill)
    watchdog.start()
    try:
        lines = [json.loads(proc.stdout.readline()) for _ in range(2)]  # still running
        assert [(l["exit_code"], l["actions"]) for l in lines] == [(3, []), (3, [])]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        watchdog.cancel()
        proc.kill()
        proc.communicate()
    assert state_file.read_bytes() == before


def test_without_a_state_file_setting_each_town_gets_its_own(
    townhall, tmp_path, dead_outpost_config
):
    townhall.routes["/api/scaling"] = (200, VALID_SIGNAL)
    elsewhere = tmp_path / "tinytown-scaler" / "state.json"
    before = other_towns_state(elsewhere)  # where every town's state used to go
    result = run(
        "--once",
        "--image",
        "worker:1",
        "--url",
        townhall.url,
        "--config",
        str(dead_outpost_config),
        env=clean_env(XDG_STATE_HOME=str(tmp_path)),
    )
    assert result.returncode == 5  # the pass ran: its only outpost is unreachable
    saved = json.loads((tmp_path / "tinytown-scaler" / "demo" / "state.json").read_text())
    assert saved["town"] == "demo" and saved["outposts"]["nowhere"]["failures"] == 1
    assert elsewhere.read_bytes() == before


@pytest.mark.parametrize("value, expected", [("yes", True), ("false", False), ("1", True)])
def test_trust_townhall_alone_takes_a_yes_or_no(value, expected):
    result = run("--trust-townhall-alone", value, "config")
    assert result.returncode == 0 and json.loads(result.stdout)["trust_townhall_alone"] is expected


def test_trust_townhall_alone_that_is_not_a_yes_or_no_exits_3():
    result = run("config", env=clean_env(TINYTOWN_SCALER_TRUST_TOWNHALL_ALONE="maybe"))
    assert result.returncode == 3 and "true or false" in result.stderr
