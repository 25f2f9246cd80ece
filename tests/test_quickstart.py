"""The README's five-minute quickstart, run as written: its shell blocks in order, in a fresh
home directory, with only the ports changed (8080 and 9000 may be taken here). It must end with
the two-item mission completed and its ping printed by the local receiver."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from .conftest import CONFIG_ENV, free_port

ROOT = Path(__file__).resolve().parent.parent
SECTION = re.compile(r"^## Five-minute quickstart\n(.*?)^## ", re.MULTILINE | re.DOTALL)
SHELL_BLOCK = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)


def quickstart_script() -> str:
    section = SECTION.search((ROOT / "README.md").read_text()).group(1)
    blocks = SHELL_BLOCK.findall(section)
    assert len(blocks) == 2, "the quickstart has its two shell blocks"
    return "\n".join(blocks)


def test_the_readme_quickstart_runs_its_mission_and_prints_the_ping(tmp_path):
    api_port, ping_port = free_port(), free_port()
    script = quickstart_script()
    assert script.startswith(". .venv/bin/activate\n")
    script = script.replace(". .venv/bin/activate\n", "", 1)  # the test's interpreter instead
    script = script.replace("8080", str(api_port)).replace("9000", str(ping_port))
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_ENV}
    env.update(
        HOME=str(home),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        TINYTOWN_REST_PORT=str(api_port),
    )
    log = tmp_path / "quickstart.log"
    with open(log, "w") as sink:  # a file, not a pipe: the background jobs outlive the script
        proc = subprocess.Popen(
            ["bash", "-e", "-c", script],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its background jobs (townhall, worker, receiver): one group
        )
    town = home / "towns" / "demo"
    try:
        proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # this test's own process group, by its id
        except ProcessLookupError:
            pass
        subprocess.run(
            [str(Path(sys.executable).parent / "tt"), "--town", str(town), "redis", "stop"],
            env=env,
            capture_output=True,
            timeout=60,
        )
    out = log.read_text()
    assert proc.returncode == 0, out
    assert '"status":"ok"' in out
    assert "Mission " in out and " started: 2 work item(s)" in out
    assert "2/2 done" in out and "completed" in out
    assert re.search(r'Mission [0-9a-f]{8} "verbose flag" completed \(2 items\)', out), out
