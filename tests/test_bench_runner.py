"""`python -m bench`: every benchmark script is listed, with a quick and a full run it accepts.

Speed targets live in bench/, never in timed unit tests: nothing here runs a benchmark (only
the runner's ``--list`` and each script's ``--help``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.suite import BENCHMARKS

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(p.name for p in (ROOT / "bench").glob("bench_*.py"))
HELP_TIMEOUT_SECS = 60


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=HELP_TIMEOUT_SECS
    )


def test_list_names_every_bench_script():
    listed = run("-m", "bench", "--list")
    assert listed.returncode == 0, listed.stderr
    for script in SCRIPTS:
        assert f"bench/{script}" in listed.stdout


def test_every_bench_script_has_a_quick_and_a_full_run():
    assert sorted(b.script.name for b in BENCHMARKS) == SCRIPTS
    for bench in BENCHMARKS:
        assert bench.quick, bench.name
        assert bench.full, bench.name


@pytest.mark.parametrize("bench", BENCHMARKS, ids=lambda b: b.name)
def test_each_script_accepts_the_flags_the_runner_passes(bench):
    shown = run(str(bench.script), "--help")
    assert shown.returncode == 0, shown.stderr
    flags = {a for a in bench.quick + bench.full if a.startswith("--")} | {bench.json_flag}
    assert {f for f in flags if f not in shown.stdout} == set()


def test_only_names_an_unknown_benchmark_and_exits_2():
    answered = run("-m", "bench", "--only", "dispatch,nonesuch")
    assert answered.returncode == 2
    assert "nonesuch" in answered.stderr
