"""Problem details everywhere: bad input is refused with the field named, and writes nothing."""

from __future__ import annotations

import time

import pytest

from tinytown.api import create_app
from tinytown.config import load_config
from tinytown.connection.client import make_client
from tinytown.store import Town

from .api_support import SpecClient, app, client  # noqa: F401 - fixtures
from .conftest import write_town

PROBLEM_KEYS = {"type", "title", "status", "detail"}


def assert_problem(resp, status: int, field: str | None = None):
    assert resp.status_code == status
    assert resp.mimetype == "application/problem+json"
    body = resp.get_json()
    assert PROBLEM_KEYS <= set(body) and body["status"] == status
    assert body["type"] == f"https://tinytown.dev/errors/{status}"
    if field is not None:
        assert body.get("field") == field, body
    return body


def nothing_written(town) -> bool:
    return (
        town.redis.zcard(town.keys.tasks) == 0
        and town.redis.llen(town.keys.backlog) == 0
        and town.redis.xlen(town.keys.docket) == 0
    )


def test_unknown_route_is_a_404_problem(client):
    assert_problem(client.get("/v2/nothing"), 404)


def test_wrong_method_is_a_405_problem_with_allow(client):
    resp = client.put("/v1/backlog", json={})
    assert_problem(resp, 405)
    assert "POST" in resp.headers["Allow"] and "GET" in resp.headers["Allow"]


def test_malformed_json_is_400_naming_line_and_column(client, town):
    resp = client.post(
        "/v1/backlog", data='{\n  "description": "x",\n  oops\n}', content_type="application/json"
    )
    body = assert_problem(resp, 400)
    assert "line 3, column 3" in body["detail"]
    assert nothing_written(town)


def test_missing_field_is_422_naming_it(client, town):
    body = assert_problem(client.post("/v1/backlog", json={"tags": []}), 422, field="description")
    assert "required" in body["detail"]
    assert nothing_written(town)


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"description": 5}, "description"),
        ({"description": "x", "tags": "a"}, "tags"),
        ({"description": "x", "tags": [1]}, "tags"),
        ({"description": "x", "push": "yes"}, "push"),
        ({"description": "x", "repo": 3}, "repo"),
        ({"description": "  "}, "description"),
    ],
)
def test_wrong_types_are_422_naming_the_field_and_write_nothing(client, town, payload, field):
    assert_problem(client.post("/v1/backlog", json=payload), 422, field=field)
    assert nothing_written(town)


def test_a_json_array_body_is_422(client):
    assert_problem(client.post("/v1/backlog", json=["x"]), 422, field="body")


def test_wrong_content_type_is_415(client, town):
    resp = client.post("/v1/backlog", data='{"description": "x"}', content_type="text/plain")
    assert_problem(resp, 415)
    assert nothing_written(town)


def test_body_over_the_limit_is_413(tmp_path, redis_url):
    write_town(tmp_path, redis_url, tables="[townhall]\nmax_body_bytes = 64\n")
    town = Town.connect(load_config(tmp_path, env={}))
    client = SpecClient(create_app(town.config, town=town))
    body = assert_problem(client.post("/v1/backlog", json={"description": "x" * 200}), 413)
    assert "64 bytes" in body["detail"]
    assert nothing_written(town)
    assert client.post("/v1/backlog", json={"description": "small"}).status_code == 201


def test_default_body_limit_is_one_mebibyte(client):
    assert client.app.config["MAX_CONTENT_LENGTH"] == 1024 * 1024


def test_redis_unreachable_is_503_with_retry_after_and_health_still_answers(tmp_path):
    (tmp_path / "tinytown.toml").write_text(
        'name = "down"\n[redis]\nurl = "redis://:s3cret@127.0.0.1:1/0"\n'
    )
    config = load_config(tmp_path, env={})
    town = Town(config, make_client(config))  # never verified: Redis is gone
    client = SpecClient(create_app(config, town=town))
    assert client.get("/health").status_code == 200
    for resp in (
        client.get("/v1/status"),
        client.post("/v1/backlog", json={"description": "x"}),
        client.get("/api/scaling"),
    ):
        body = assert_problem(resp, 503)
        assert int(resp.headers["Retry-After"]) > 0
        assert "s3cret" not in body["detail"] and "****" in body["detail"]
    ready = client.get("/ready")
    assert ready.status_code == 503 and ready.get_json()["redis"] == "disconnected"
    assert "s3cret" not in ready.get_data(as_text=True)
    metrics = client.get("/metrics")
    assert metrics.status_code == 503 and "s3cret" not in metrics.get_data(as_text=True)


def test_health_uptime_counts_from_process_start_not_first_probe(town):
    app = create_app(town.config, town=town)
    time.sleep(1.1)
    assert SpecClient(app).get("/livez").get_json()["uptime_secs"] >= 1
