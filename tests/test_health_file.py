"""The worker's health file (``tinytown/worker/health_file.py``): written after acknowledged heartbeats,
judged fresh or stale by ``python -m tinytown.worker.health_file``, the worker containers' Docker
healthcheck. Real files in a temporary directory; the check runs as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from tinytown.core.defaults import DEAD_AFTER_HEARTBEATS
from tinytown.worker import health_file
from tinytown.worker.health_file import HealthFile


def run_check(*args: str, env_path: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != health_file.ENV_VAR}
    if env_path is not None:
        env[health_file.ENV_VAR] = env_path
    return subprocess.run(
        [sys.executable, "-m", "tinytown.worker.health_file", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )


def age(path, secs: float) -> None:
    """Make the file look last written ``secs`` ago."""
    then = time.time() - secs
    os.utime(path, (then, then))


def test_a_beat_writes_the_workers_interval_and_dead_after_into_the_file(tmp_path):
    path = tmp_path / "health"
    HealthFile(str(path), 5).beat()
    data = json.loads(path.read_text())
    assert (data["heartbeat_interval_secs"], data["dead_after_heartbeats"]) == (
        5,
        DEAD_AFTER_HEARTBEATS,
    )
    assert time.time() - path.stat().st_mtime < 5


def test_later_beats_move_the_files_time_forward(tmp_path):
    path = tmp_path / "health"
    writer = HealthFile(str(path), 1)
    writer.beat()
    age(path, 100)
    writer.beat()
    assert time.time() - path.stat().st_mtime < 5


def test_a_health_file_removed_from_outside_is_written_again(tmp_path):
    path = tmp_path / "health"
    writer = HealthFile(str(path), 1)
    writer.beat()
    path.unlink()
    writer.beat()
    assert json.loads(path.read_text())["heartbeat_interval_secs"] == 1


def test_without_the_environment_variable_no_file_is_written(tmp_path):
    writer = HealthFile.from_env(1, environ={"HOME": str(tmp_path)})
    writer.beat()
    assert writer.path is None and list(tmp_path.iterdir()) == []


def test_the_environment_variable_names_the_file(tmp_path):
    path = tmp_path / "health"
    HealthFile.from_env(2, environ={health_file.ENV_VAR: str(path)}).beat()
    assert path.exists()


def test_a_write_that_fails_never_raises_and_is_reported_once_until_one_succeeds(tmp_path):
    errors = []
    target = tmp_path / "missing-dir" / "health"
    writer = HealthFile(str(target), 1, on_error=lambda **fields: errors.append(fields))
    writer.beat()
    writer.beat()
    assert len(errors) == 1
    assert errors[0]["path"] == str(target) and "FileNotFoundError" in errors[0]["detail"]
    target.parent.mkdir()
    writer.beat()  # succeeds: a later failure is reported again
    assert target.exists() and len(errors) == 1
    target.unlink()
    target.parent.rmdir()
    writer.beat()
    assert len(errors) == 2


def test_a_file_written_within_dead_after_heartbeats_intervals_is_fresh(tmp_path):
    path = tmp_path / "health"
    HealthFile(str(path), 2).beat()
    age(path, 2 * DEAD_AFTER_HEARTBEATS - 0.5)
    fresh, reason = health_file.check(str(path))
    assert fresh and "limit 6s" in reason


def test_a_file_older_than_dead_after_heartbeats_intervals_is_stale(tmp_path):
    path = tmp_path / "health"
    HealthFile(str(path), 2).beat()
    age(path, 2 * DEAD_AFTER_HEARTBEATS + 1)
    fresh, reason = health_file.check(str(path))
    assert not fresh and "over 6s (3 x 2s)" in reason


def test_a_missing_or_garbled_file_is_not_fresh(tmp_path):
    assert health_file.check(str(tmp_path / "nothing"))[0] is False
    garbled = tmp_path / "garbled"
    garbled.write_text('{"heartbeat_interval_secs": "soon"}')
    fresh, reason = health_file.check(str(garbled))
    assert not fresh and "heartbeat_interval_secs" in reason


def test_the_check_command_exits_0_on_a_fresh_file_and_1_on_a_stale_one(tmp_path):
    path = tmp_path / "health"
    HealthFile(str(path), 1).beat()
    fresh = run_check(env_path=str(path))
    age(path, 60)
    stale = run_check(str(path))
    assert (fresh.returncode, stale.returncode) == (0, 1)
    assert "last acknowledged heartbeat" in fresh.stdout and "over 3s" in stale.stdout


def test_the_check_command_exits_1_without_a_file_or_a_path(tmp_path):
    missing = run_check(env_path=str(tmp_path / "nothing"))
    unset = run_check()
    assert (missing.returncode, unset.returncode) == (1, 1)
    assert "no health file" in missing.stdout and "TINYTOWN_HEALTH_FILE is not set" in unset.stdout
