"""Schemathesis against the OpenAPI document a real townhall serves, through a real gunicorn,
authenticated as admin: for every operation, generated valid and invalid requests (bounded per
operation, so CI stays quick) never get a 5xx, and every response — status, content type,
headers, body — is what the document says.

It runs schemathesis's own command line (``st run``), as a user would point it at a townhall; its
report lands in the test's temporary directory (printed on failure).
"""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from .api_support import keyed_tables, keyring  # noqa: F401 - fixtures
from .conftest import BIN_DIR, CONFIG_ENV, free_port, write_town
from .test_townhall_tls import wait_until_serving

EXAMPLES_PER_OPERATION = 40
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance"
SEED = 20261206  # a fixed seed: the same requests in every CI run (change it to explore)


@pytest.mark.slow
def test_every_operation_answers_as_documented_and_never_with_a_5xx(tmp_path, redis_url, keyring):
    port = free_port()
    root = write_town(
        tmp_path,
        redis_url,
        tables=f"[townhall]\nrest_port = {port}\nworkers = 1\n\n" + keyed_tables(keyring),
    )
    log_path = (
        tmp_path / "townhall.log"
    )  # a file, not a pipe: thousands of access lines must never block it
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
        run = subprocess.run(
            [
                str(BIN_DIR / "st"),
                "run",
                f"{base}/openapi.yaml",
                "--url",
                base,
                "--checks",
                CHECKS,
                "--header",
                f"Authorization: Bearer {keyring['admin'][0]}",
                "--max-examples",
                str(EXAMPLES_PER_OPERATION),
                "--seed",
                str(SEED),
                "--phases",
                "examples,coverage,fuzzing",
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
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=900,
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-3000:]
    output = log_path.read_text()
    assert "Traceback" not in output, output[-5000:]
    assert " 500 " not in output  # no access-log line with a 500
