"""A small real executable that stands in for a coding CLI (claude, codex, …) in tests.

It reads the prompt on stdin like they do, and does what markers in the task description say
(the description is the prompt's first paragraph, so markers arrive through the prompt):

    [record PATH]         append a JSON line per start and end (task, agent, attempt, pid, pgid)
    [prompt PATH]         save the prompt it was given
    [env PATH]            save the TINYTOWN_* environment and the working directory as JSON
    [write FILE TEXT]     write TEXT to FILE (relative to the working directory)
    [commit MESSAGE]      git add + commit in the working directory, itself
    [child]               start a background `sleep 300` in its process group (pid recorded)
    [ignore-term]         ignore SIGTERM (only SIGKILL stops it)
    [complete]            report through `tt task complete` itself
    [fail-via-api]        report through `tt task fail` itself
    [complete-via-rest]   POST to the prompt's REST URL with $TINYTOWN_TASK_TOKEN (exit 9 if
                          townhall refuses)
    [sleep SECS]          sleep
    [sleep-first SECS]    sleep only on the first attempt
    [print TEXT]          print TEXT
    [lines N]             print N numbered lines ("output line 00000" …)
    [exit CODE]           exit with CODE (default 0)
    [exit-first CODE]     exit with CODE only on the first attempt
    [fail-until PATH]     exit 2 until PATH exists (a test creates it to let a retry succeed)
    [verdicts FILE]       in a mission's review task only: print FILE's first line (and drop it
                          from FILE), as a reviewer's verdict

Configured in tests as ``[agent_clis.fake] command = "<python> tests/fake_cli.py"``. Given
``--instruction-file PATH`` (as the worker passes to ``auggie``) it reads the prompt from PATH.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

MARKER = re.compile(r"\[([a-z-]+)(?: ([^\]]*))?\]")


def tt() -> str:
    return str(Path(sys.executable).parent / "tt")


def record(path: str, event: str, **extra) -> None:
    line = {
        "event": event,
        "task": os.environ.get("TINYTOWN_TASK_ID"),
        "agent": os.environ.get("TINYTOWN_AGENT_ID"),
        "attempt": os.environ.get("TINYTOWN_TASK_ATTEMPT"),
        "pid": os.getpid(),
        "pgid": os.getpgid(0),
        "time": time.time(),
        **extra,
    }
    with open(path, "a") as fh:
        fh.write(json.dumps(line) + "\n")


def complete_via_rest(prompt: str) -> bool:
    """POST complete to the URL the prompt gives, as a coding CLI following it would."""
    url = re.search(r"POST (\S+/complete)`", prompt).group(1)
    request = urllib.request.Request(
        url,
        data=json.dumps({"result": "reported over REST by the fake CLI"}).encode(),
        method="POST",
        headers={
            "Authorization": f"Bearer {os.environ.get('TINYTOWN_TASK_TOKEN', '')}",
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            print(f"REST complete: {resp.status}", flush=True)
            return True
    except urllib.error.HTTPError as err:
        print(f"REST complete: {err.code} {err.read().decode()}", flush=True)
        return False


def main() -> int:
    if "--instruction-file" in sys.argv:  # auggie's way: the prompt in a file, not on stdin
        prompt = Path(sys.argv[sys.argv.index("--instruction-file") + 1]).read_text()
    else:
        prompt = sys.stdin.read()
    description = prompt.split("\n\n", 2)[1] if prompt.count("\n\n") >= 1 else prompt
    markers = [(m.group(1), m.group(2) or "") for m in MARKER.finditer(description)]
    first_attempt = os.environ.get("TINYTOWN_TASK_ATTEMPT") == "1"
    records = [arg for name, arg in markers if name == "record"]
    code = 0
    for path in records:
        record(path, "start")
    for name, arg in markers:
        if name == "prompt":
            Path(arg).write_text(prompt)
        elif name == "env":
            env = {k: v for k, v in os.environ.items() if k.startswith(("TINYTOWN_", "FAKE_"))}
            Path(arg).write_text(json.dumps({"env": env, "cwd": os.getcwd()}))
        elif name == "write":
            file, _, text = arg.partition(" ")
            Path(file).write_text(text + "\n")
        elif name == "commit":
            subprocess.run(["git", "add", "-A"], check=True)
            subprocess.run(
                [
                    "git",
                    "-c",
                    "user.name=fake",
                    "-c",
                    "user.email=fake@example.invalid",
                    "commit",
                    "-q",
                    "-m",
                    arg or "fake commit",
                ],
                check=True,
            )
        elif name == "child":
            child = subprocess.Popen(["sleep", "300"])
            for path in records:
                record(path, "child", child_pid=child.pid)
        elif name == "ignore-term":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        elif name == "complete":
            subprocess.run(
                [tt(), "task", "complete", "--result", "reported by the fake CLI"], check=True
            )
        elif name == "fail-via-api":
            subprocess.run([tt(), "task", "fail", "--reason", "the fake CLI gave up"], check=True)
        elif name == "complete-via-rest":
            if not complete_via_rest(prompt):
                return 9
        elif name == "sleep" or (name == "sleep-first" and first_attempt):
            time.sleep(float(arg))
        elif name == "print":
            print(arg, flush=True)
        elif name == "lines":
            for i in range(int(arg)):
                print(f"output line {i:05d}", flush=False)
            sys.stdout.flush()
        elif name == "verdicts" and "[Mission Review]" in description:
            lines = Path(arg).read_text().splitlines()
            print(lines[0] if lines else "approved", flush=True)
            Path(arg).write_text("".join(line + "\n" for line in lines[1:]))
        elif name == "fail-until" and not Path(arg).exists():
            code = 2
        elif name == "exit" or (name == "exit-first" and first_attempt):
            code = int(arg or 0)
    for path in records:
        record(path, "end", code=code)
    return code


if __name__ == "__main__":
    sys.exit(main())
