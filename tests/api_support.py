"""Townhall test support: a Flask test client that checks every response against the OpenAPI spec.

Each response the suite receives is matched to its operation in ``docs/openapi/townhall-v1.yaml``
(by the app's URL rule) and validated against the documented schema for its status code and
content type; an undocumented status or shape fails the test. Also: API keys made once per
session for every scope, and town fixtures in ``api_key`` mode.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from werkzeug.exceptions import MethodNotAllowed, NotFound

from tinytown.api import create_app
from tinytown.config import load_config
from tinytown.core.apikeys import hash_key
from tinytown.store import Town

from .conftest import write_town
from .secrets_seen import remember

SPEC_PATH = Path(__file__).resolve().parent.parent / "docs" / "openapi" / "townhall-v1.yaml"
SPEC = yaml.safe_load(SPEC_PATH.read_text())
SPEC_URI = "urn:townhall-spec"
REGISTRY = Registry().with_resource(
    SPEC_URI, Resource.from_contents(SPEC, default_specification=DRAFT202012)
)
SCOPE_KEYS = {
    "read": ["town.read"],
    "write": ["town.write"],
    "manage": ["agent.manage"],
    "admin": ["admin"],
}


def spec_path(rule: str) -> str:
    """Flask ``/v1/tasks/<task_id>`` → OpenAPI ``/v1/tasks/{task_id}``."""
    return rule.replace("<", "{").replace(">", "}")


def _pointer(*parts: str) -> str:
    return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _deref(node: dict, parts: list[str]) -> tuple[dict, list[str]]:
    while "$ref" in node:
        ref = node["$ref"].lstrip("#/").split("/")
        parts = ref
        node = SPEC
        for p in ref:
            node = node[p]
    return node, parts


def check_against_spec(app, method: str, path: str, resp) -> None:
    adapter = app.url_map.bind("localhost")
    try:
        rule, _ = adapter.match(path.split("?")[0], method=method, return_rule=True)
    except (NotFound, MethodNotAllowed):
        assert resp.status_code in (404, 405), resp.status_code
        assert resp.mimetype == "application/problem+json"
        return
    sp = spec_path(rule.rule)
    op = SPEC["paths"][sp][method.lower()]
    status = str(resp.status_code)
    if status in op["responses"]:
        entry, parts = _deref(
            op["responses"][status], ["paths", sp, method.lower(), "responses", status]
        )
    elif status == "503":
        entry, parts = _deref({"$ref": "#/components/responses/ServiceUnavailable"}, [])
    else:
        raise AssertionError(
            f"{method} {sp} answered {status}, which the spec does not document: {resp.get_data(as_text=True)[:300]}"
        )
    content = entry.get("content", {})
    assert resp.mimetype in content, (
        f"{method} {sp} {status}: content type {resp.mimetype} not in spec {list(content)}"
    )
    if resp.mimetype.endswith("json"):
        schema = {"$ref": SPEC_URI + "#" + _pointer(*parts, "content", resp.mimetype, "schema")}
        validator = Draft202012Validator(schema, registry=REGISTRY)
        errors = sorted(validator.iter_errors(resp.get_json()), key=str)
        assert not errors, (
            f"{method} {sp} {status}: {errors[0].message} at {list(errors[0].absolute_path)}"
        )


class SpecClient:
    """``client.post("/v1/backlog", json={...})`` → response, validated against the spec."""

    def __init__(self, app, headers: dict | None = None):
        self.app, self.raw, self.headers = app, app.test_client(), headers or {}

    def open(self, method: str, path: str, **kwargs):
        headers = {**self.headers, **kwargs.pop("headers", {})}
        resp = self.raw.open(path, method=method, headers=headers, **kwargs)
        check_against_spec(self.app, method, path, resp)
        return resp

    def get(self, path, **kw):
        return self.open("GET", path, **kw)

    def post(self, path, **kw):
        return self.open("POST", path, **kw)

    def delete(self, path, **kw):
        return self.open("DELETE", path, **kw)

    def patch(self, path, **kw):
        return self.open("PATCH", path, **kw)

    def put(self, path, **kw):
        return self.open("PUT", path, **kw)

    def as_key(self, key: str) -> SpecClient:
        return SpecClient(self.app, {"Authorization": f"Bearer {key}"})


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def app(town):
    return create_app(town.config, town=town)


@pytest.fixture
def client(app):
    return SpecClient(app)


@pytest.fixture(scope="session")
def keyring():
    """One raw API key per scope (and a scope-less one = admin), with their hashes, made once."""
    keys = {name: f"{name}-key-" + "0" * 40 for name in [*SCOPE_KEYS, "upstream"]}
    return {name: (remember(raw), hash_key(raw)) for name, raw in keys.items()}


def keyed_tables(keyring, extra: str = "") -> str:
    lines = [
        "[townhall.auth]",
        'mode = "api_key"',
        f'api_key_hash = "{keyring["upstream"][1]}"',
        "",
    ]
    for name, scopes in SCOPE_KEYS.items():
        lines += [
            "[[townhall.auth.keys]]",
            f'name = "{name}"',
            f'hash = "{keyring[name][1]}"',
            f"scopes = {json.dumps(scopes)}",
            "",
        ]
    return "\n".join(lines) + extra


@pytest.fixture
def keyed_town(tmp_path, redis_url, keyring):
    root = tmp_path / "keyed"
    root.mkdir()
    write_town(root, redis_url, tables=keyed_tables(keyring))
    t = Town.connect(load_config(root, env={}))
    yield t
    t.redis.close()


@pytest.fixture
def keyed_app(keyed_town):
    return create_app(keyed_town.config, town=keyed_town)


@pytest.fixture
def anon(keyed_app):
    """A client without credentials on an api_key town; ``anon.as_key(raw)`` adds one."""
    return SpecClient(keyed_app)
