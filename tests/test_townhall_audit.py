"""The audit log through a real gunicorn: every mutating request and every denial leaves one
JSON line on townhall's stderr, naming the principal (the tinytown.audit logger once had no
handler under gunicorn, and nothing reached the output)."""

from __future__ import annotations

import json

import requests

from .api_support import keyed_tables, keyring  # noqa: F401 - fixtures
from .conftest import free_port, write_town
from .test_townhall_tls import start, stop, wait_until_serving


def audit_lines(output: str) -> list[dict]:
    lines = []
    for line in output.splitlines():
        if line.startswith("{") and '"event":"audit"' in line:
            lines.append(json.loads(line))
    return lines


def test_mutating_requests_and_denials_each_leave_one_audit_line(tmp_path, redis_url, keyring):
    port = free_port()
    root = write_town(
        tmp_path,
        redis_url,
        tables=f"[townhall]\nrest_port = {port}\nworkers = 1\n\n" + keyed_tables(keyring),
    )
    proc = start(root, "-c", "python:tinytown.gunicorn_conf", "townhall:app")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(proc, f"{base}/livez")
        write, read = keyring["write"][0], keyring["read"][0]
        bearer = lambda key: {"Authorization": f"Bearer {key}"}
        calls = [
            ("POST", "/v1/backlog", bearer(write), {"description": "audited"}, 201),
            ("POST", "/v1/backlog", bearer(read), {"description": "x"}, 403),
            ("POST", "/v1/backlog", {}, {"description": "x"}, 401),
            ("POST", "/v1/backlog", bearer(write), {"description": "x\ud800"}, 422),
            ("GET", "/v1/backlog", {}, None, 401),  # a denied read
            ("GET", "/v1/agents", bearer(write), None, 403),
            ("GET", "/v1/backlog", bearer(read), None, 200),  # a granted read: not audited
        ]
        for method, path, headers, body, status in calls:
            resp = requests.request(method, base + path, headers=headers, json=body, timeout=5)
            assert resp.status_code == status, (method, path, resp.text)
    finally:
        output = stop(proc)
    audits = audit_lines(output)
    assert [(a["method"], a["path"], a["status"], a["result"], a["principal"]) for a in audits] == [
        ("POST", "/v1/backlog", 201, "success", "write"),
        ("POST", "/v1/backlog", 403, "denied", "read"),
        ("POST", "/v1/backlog", 401, "denied", "anonymous"),
        ("POST", "/v1/backlog", 422, "error", "write"),
        ("GET", "/v1/backlog", 401, "denied", "anonymous"),
        ("GET", "/v1/agents", 403, "denied", "write"),
    ], output
    assert all(a["ts"] and a["request_id"] and a["remote"] == "127.0.0.1" for a in audits)
    assert "Traceback" not in output
