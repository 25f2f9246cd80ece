"""Whether a coding CLI's command line starts a program this worker has: judged only when it
plainly names one (a name on PATH, or a path), never when sh would read something else first."""

from __future__ import annotations

import os
import sys

import pytest

from tinytown.worker.cli_process import missing_program, not_installed

PATH = os.defpath


@pytest.mark.parametrize(
    ("command", "missing"),
    [
        ("tt-ghost-cli --print", "tt-ghost-cli"),
        ("/opt/nowhere/claude -p", "/opt/nowhere/claude"),
        ("'tt ghost' -p", "tt ghost"),
        ("sh -c 'anything'", None),
        (f"{sys.executable} -c pass", None),
        ("exec tt-ghost-cli", None),  # a shell word first: sh decides
        ("FOO=1 tt-ghost-cli", None),  # an assignment first
        ("$HOME/bin/claude", None),  # expanded by sh
        ("cd /tmp && tt-ghost-cli", None),
        ("(tt-ghost-cli)", None),
        ("unbalanced 'quote", None),
        ("", None),
    ],
)
def test_only_a_plainly_named_program_that_is_not_there_is_missing(command, missing):
    assert missing_program(command, PATH) == missing


def test_the_path_given_is_the_one_searched(tmp_path):
    program = tmp_path / "my-cli"
    program.write_text("#!/bin/sh\n")
    assert missing_program("my-cli", PATH) == "my-cli"
    program.chmod(0o755)
    assert missing_program("my-cli", f"{tmp_path}:{PATH}") is None


def test_the_reason_names_the_program_and_where_to_fix_it():
    said = not_installed("claude", "claude")
    assert "'claude' is not on its PATH" in said and "[agent_clis.claude] command" in said
