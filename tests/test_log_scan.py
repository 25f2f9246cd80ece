"""The log scan catches a leak: planted secrets are found in log text, captured sections and log
files, each finding naming the test, the section or file and a redacted excerpt; placeholders,
redactions and the product's real log lines are not findings.

Planted secrets stay out of the suite's own scan: they are passed to the scan functions
explicitly (never remembered) and their files live outside the session's temporary directory.
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

import pytest

from tinytown.core.apikeys import generate_key

from .log_scan import Finding, scan_files, scan_sections
from .secrets_seen import MIN_SECRET_CHARS, SHOWN_ONCE_HEADERS, leaks, remember, remembered
from .townhall_support import KEY_HEADER

TASK_ID = "0b0e5a3c-1f2d-4c5b-9a8e-7d6c5b4a3f21"


def planted() -> str:
    return generate_key()  # the shape of a real API key, made fresh: never remembered


def test_a_remembered_secret_is_found_and_redacted_in_the_excerpt():
    key = planted()
    text = f"ts=… event=started\nts=… event=oops detail=calling townhall with {key} failed\n"
    (leak,) = leaks(text, [key])
    assert leak.what == "a remembered secret" and leak.line == 2
    assert key not in leak.excerpt
    assert f"{key[:4]}…[redacted, 64 chars] failed" in leak.excerpt
    assert leak.excerpt.startswith("ts=… event=oops detail=calling townhall with")


@pytest.mark.parametrize(
    "line, what",
    [
        (f"token=tttask.{TASK_ID}.Zm9vYmFyYmF6cXV4cXV1eDEyMzQ1Njc4OTA", "a task token"),
        ("headers={'Authorization': 'Bearer s3cr3t-value-123'}", "an Authorization: Bearer value"),
        ("> Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.e30.c2ln", "an Authorization: Bearer value"),
        ("X-API-Key: 7f3a9c0e-not-a-placeholder", "an X-API-Key value"),
        ("event=bootstrap api_key=" + "ab12" * 16, "a 64-hex API key"),
        ('{"api_key": "' + "cd34" * 16 + '"}', "a 64-hex API key"),
        ("connect host=h password=hunter2hunter2", "a password= value"),
        ('{"user": "app", "password": "pa55-w0rd"}', "a password= value"),
        ("cannot reach redis://admin:topsecret@10.0.0.5:6379/0", "a password in a URL"),
        ("pushing to https://x-access-token:ghp_abc123@github.com/a/b", "a password in a URL"),
    ],
)
def test_each_credential_shape_is_found_without_being_remembered(line, what):
    (leak,) = leaks(f"before\n{line}\nafter", secrets=[])
    assert leak.what == what and leak.line == 2 and "[redacted," in leak.excerpt


@pytest.mark.parametrize(
    "line",
    [
        '"detail": "send Authorization: Bearer <key or token> or X-API-Key: <key>"',
        "curl -H 'Authorization: Bearer $TINYTOWN_TASK_TOKEN' $TINYTOWN_URL/v1/tasks/x/complete",
        "Clients send it as:  Authorization: Bearer <the key>   (or X-API-Key: <the key>)",
        "cannot reach Redis at redis://:****@127.0.0.1:6379/0: check REDIS_URL",
        "shown as https://ntfy.sh/… in the list",
        "tt: error: Redis refused the password (WRONGPASS); check REDIS_URL",
        '{"api_key": "****", "url": "http://townhall:8080"}',
        "    password=self.password,",
        'WWW-Authenticate: Bearer realm="townhall"',
        '{"ts":"2026-12-06T09:39:14.887337+00:00","event":"audit","request_id":'
        '"8cfb3494-6657-4247-a3ac-bacee852f1f3","principal":"anonymous","method":"GET",'
        '"path":"/v1/town","status":401,"result":"denied","remote":"127.0.0.1"}',
        '127.0.0.1 - - [06/Dec/2026:09:39:14 +0000] "GET /v1/town HTTP/1.1" 401 194 "-" "python-requests/2.34.2"',
        "event=api_key_bootstrapped key_file=/run/tinytown/api-key detail=generated an API key",
        "sha256=" + "ef56" * 16,
    ],
)
def test_placeholders_redactions_and_real_log_lines_are_not_findings(line):
    assert leaks(line, secrets=[]) == []


def test_the_key_tt_auth_shows_once_is_allowed_only_where_asked():
    key = planted()
    for header in SHOWN_ONCE_HEADERS:
        text = f"Added API key 'ci' to tinytown.toml.\n\n{header}\n{key}\n"
        assert leaks(text, [key], shown_once_allowed=True) == []
        assert [leak.line for leak in leaks(text, [key])] == [4]
    assert KEY_HEADER in SHOWN_ONCE_HEADERS  # the header the tests' add_key reads


def test_short_secrets_are_not_remembered_and_long_ones_are():
    short, long = "s3", f"long-secret-{uuid.uuid4().hex}"
    assert len(short) < MIN_SECRET_CHARS <= len(long)
    assert remember(short) == short and short not in remembered()
    assert remember(long) == long and long in remembered()


def test_captured_sections_of_the_phase_are_scanned_and_named():
    key = planted()
    sections = [
        ("Captured log setup", f"WARNING tinytown.townhall: key={key}"),  # another phase
        ("Captured log call", f"INFO tinytown.audit: principal=ci key {key}"),
        ("Captured stderr call", f"ts=… event=x detail=Bearer-less {key}"),
        ("Captured stdout call", f"{KEY_HEADER}\n{key}"),  # shown once, by design
        ("Captured stdout call", f"printed {key}"),
    ]
    found = scan_sections("tests/test_x.py::test_y", sections, "call", [key])
    assert [(f.test, f.where, f.leak.line) for f in found] == [
        ("tests/test_x.py::test_y", "Captured log call", 1),
        ("tests/test_x.py::test_y", "Captured stderr call", 1),
        ("tests/test_x.py::test_y", "Captured stdout call", 1),
    ]
    assert all(key not in str(f) for f in found)


def test_log_files_are_scanned_and_named_with_the_test_that_wrote_them():
    key = planted()
    with tempfile.TemporaryDirectory(prefix="log-scan-") as tmp:
        root = Path(tmp)
        town = root / "test_some_townhall0"
        (town / ".tt" / "logs" / "tasks").mkdir(parents=True)
        (town / "townhall-8080.out").write_text(f"[INFO] Booting\nleaked X-API-Key: {key}\n")
        (town / ".tt" / "logs" / "tasks" / "t1.log").write_text(f"=== attempt 1\n{key}\n")
        (root / "a2a0").mkdir()
        (root / "a2a0" / "worker-1.log").write_text("ts=… event=idle_timeout\n")
        (town / "env.json").write_text(f'{{"TOKEN": "{key}"}}')  # not a log file
        found = scan_files(root, {"test_some_townhall0": "tests/test_t.py::test_th"}, [key])
        assert sorted((f.test, Path(f.where).name, f.leak.line) for f in found) == [
            ("tests/test_t.py::test_th", "t1.log", 2),
            ("tests/test_t.py::test_th", "townhall-8080.out", 2),
        ]
        text = "\n".join(str(f) for f in found)
        assert key not in text and str(town / "townhall-8080.out") in text


def test_a_finding_reads_as_test_place_line_kind_and_excerpt():
    key = planted()
    (leak,) = leaks(f"detail={key}", [key])
    finding = Finding("tests/test_a.py::test_b", "/tmp/x/townhall-1.out", leak)
    assert str(finding) == (
        "tests/test_a.py::test_b: /tmp/x/townhall-1.out, line 1: a remembered secret: "
        f"detail={key[:4]}…[redacted, 64 chars]"
    )
