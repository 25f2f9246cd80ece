"""Docs that must match the code: README commands, CI, exit codes."""

from __future__ import annotations

import re
from pathlib import Path

from tinytown.core.errors import ExitStatus

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def readme_commands() -> list[str]:
    return re.findall(r"```sh\n(.+?)\n```", README, flags=re.S)


def test_ci_runs_exactly_the_readme_test_command():
    test_command = next(c for c in readme_commands() if "pytest" in c)
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert ci_lines[-1] == test_command


def test_readme_run_command_uses_the_gunicorn_config_module():
    run_command = readme_commands()[0]
    assert "gunicorn -c python:tinytown.gunicorn_conf townhall:app" in run_command


def test_readme_documents_every_exit_code():
    section = README.split("## Exit codes", 1)[1].split("##", 1)[0]
    for status in ExitStatus:
        assert f"`{int(status)}`" in section, status.name


def test_the_worker_docs_list_every_event_the_worker_logs():
    files = [ROOT / "agent_worker.py", *sorted((ROOT / "tinytown" / "worker").glob("*.py"))]
    source = "\n".join(f.read_text() for f in files)
    events = set(re.findall(r"\blog\(\s*\"([a-z_]+)\"", source))
    logs_section = (
        (ROOT / "docs" / "worker.md").read_text().split("## Logs", 1)[1].split("\n## ", 1)[0]
    )
    documented = set(re.findall(r"`([a-z_]+)`", logs_section))
    assert len(events) > 30  # the pattern still finds the worker's log calls
    assert events - documented == set()
