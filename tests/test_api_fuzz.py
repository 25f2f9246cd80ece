"""Schemathesis against the OpenAPI document a real townhall serves, through a real gunicorn,
authenticated as admin: for every operation, generated valid and invalid requests (bounded per
operation, so CI stays quick) never get a 5xx, and every response — status, content type,
headers, body — is what the document says; then sequences of calls chained through the
document's links (stateful), bounded too.

It runs schemathesis's own command line (``st run``), as a user would point it at a townhall; its
report lands in the test's temporary directory (printed on failure).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess

import pytest

from .api_support import keyed_tables, keyring  # noqa: F401 - fixtures
from .conftest import BIN_DIR, CONFIG_ENV, free_port, write_town
from .test_townhall_tls import wait_until_serving

STATEFUL_SECS = 45  # the stateful phase repeats scenarios until this budget is spent
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance"
SEED = 20261206  # a fixed seed: the same requests in every CI run (change it to explore)


@pytest.fixture
def served(tmp_path, redis_url, keyring):
    """A real townhall (gunicorn, one worker, API keys), the fuzzer's configuration beside it, and
    its log (a file, not a pipe: thousands of access lines must never block it)."""
    port = free_port()
    root = write_town(
        tmp_path,
        redis_url,
        tables=f"[townhall]\nrest_port = {port}\nworkers = 1\n\n" + keyed_tables(keyring),
    )
    log_path = tmp_path / "townhall.log"
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_ENV}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [str(BIN_DIR / "gunicorn"), "-c", "python:tinytown.gunicorn_conf", "townhall:app"],
            cwd=root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    # A long-poll that waits its full time is correct, but would outlast the request timeout:
    # the fuzzer asks the long-polls not to wait (their own tests cover waiting).
    (tmp_path / "schemathesis.toml").write_text(
        '[[operations]]\ninclude-path = "/v1/events"\nparameters = { "query.wait" = 0 }\n'
        '[[operations]]\ninclude-path = "/v1/tasks/{task_id}/log"\n'
        'parameters = { "query.wait" = 0 }\n'
        '[[operations]]\ninclude-path = "/api/scaling"\nparameters = { "query.wait" = 0 }\n'
    )
    try:
        wait_until_serving(proc, f"{base}/livez")
        yield base, log_path
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def st_run(base: str, tmp_path, admin_key: str, phases: str, examples: int, *extra: str):
    return subprocess.run(
        [
            str(BIN_DIR / "st"),
            "run",
            f"{base}/openapi.yaml",
            "--url",
            base,
            "--checks",
            CHECKS,
            "--header",
            f"Authorization: Bearer {admin_key}",
            "--max-examples",
            str(examples),
            "--seed",
            str(SEED),
            "--phases",
            phases,
            "--workers",
            "1",
            "--no-color",
            "--request-timeout",
            "10",
            "--generation-database",
            "none",
            "--no-shrink",
            "--max-failures",
            "20",
            "--report",
            "junit",
            "--report-dir",
            str(tmp_path / "report"),
            *extra,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )


def assert_clean(run, log_path) -> None:
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-3000:]
    output = log_path.read_text()
    assert "Traceback" not in output, output[-5000:]
    # no access-log line with a 5xx status (the field after the request; the next is the size)
    assert not re.search(r'HTTP/[\d.]+" 5\d\d ', output), re.findall(
        r'.*HTTP/[\d.]+" 5\d\d .*', output
    )


@pytest.mark.slow
def test_every_operation_answers_as_documented_and_never_with_a_5xx(served, tmp_path, keyring):
    base, log_path = served
    run = st_run(base, tmp_path, keyring["admin"][0], "examples,coverage,fuzzing", 40)
    assert_clean(run, log_path)


@pytest.mark.slow
def test_sequences_that_follow_the_documents_links_never_get_a_5xx(served, tmp_path, keyring):
    """Stateful: schemathesis chains calls through the spec's links (a task made by POST
    /v1/backlog is then read, claimed, cancelled, completed, removed; an agent registered is then
    read, killed, restarted; a mission started is then read, noted, stopped, resumed, deleted),
    in orders no hand-written test tries, and every answer still conforms."""
    base, log_path = served
    run = st_run(
        base, tmp_path, keyring["admin"][0], "stateful", 40, "--max-time", str(STATEFUL_SECS)
    )
    assert "Stateful" in run.stdout or "stateful" in run.stdout, run.stdout[-3000:]
    assert_clean(run, log_path)
