"""The OpenAPI document and the app agree: same routes, same methods, same scopes, valid spec."""

from __future__ import annotations

import pytest
from openapi_spec_validator import validate

from tinytown.api import BLUEPRINTS
from tinytown.api.public import spec_text

from .api_support import SPEC, SPEC_PATH, app, check_against_spec, client, spec_path  # noqa: F401

HTTP_METHODS = {"get", "post", "put", "patch", "delete"}
PER_TOOL = "MCP"  # the required_scope of a blueprint whose every call names its own


def app_operations(app) -> set[tuple[str, str]]:
    return {
        (spec_path(rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }


def spec_operations() -> set[tuple[str, str]]:
    return {(path, m) for path, item in SPEC["paths"].items() for m in item if m in HTTP_METHODS}


def test_the_spec_is_valid_openapi_3_1():
    assert SPEC["openapi"] == "3.1.0"
    validate(SPEC)


def null_mapping_values(node, path=()):
    """Paths of every mapping value that YAML read as null (e.g. an unquoted ``a, b: c``)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if value is None:
                yield (*path, key)
            else:
                yield from null_mapping_values(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from null_mapping_values(value, (*path, i))


def test_no_mapping_in_the_spec_has_a_null_value():
    assert list(null_mapping_values(SPEC)) == []


def test_app_routes_and_spec_paths_are_the_same_set(app):
    assert {p for p, _ in app_operations(app)} == set(SPEC["paths"])
    assert app_operations(app) == spec_operations()


def test_each_operation_names_the_scope_its_blueprint_enforces(app):
    scopes = {bp.name: getattr(bp, "required_scope", None) for bp in BLUEPRINTS}
    for rule in app.url_map.iter_rules():
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            op = SPEC["paths"][spec_path(rule.rule)][method.lower()]
            scope = scopes[rule.endpoint.split(".")[0]]
            if scope is None:
                assert op["security"] == [], rule.rule
            else:
                assert op["x-required-scope"] == scope, (method, rule.rule)
                # /mcp ("MCP"): any credentials get in, then each tool needs its own scope
                listed = {scope} if scope != PER_TOOL else set()
                assert {s for req in op["security"] for s in req.values() for s in s} == listed
                assert {"401", "403"} <= set(op["responses"]), (method, rule.rule)


def test_security_schemes_cover_api_keys_and_oidc():
    schemes = SPEC["components"]["securitySchemes"]
    assert schemes["ApiKeyHeader"] == {
        **schemes["ApiKeyHeader"],
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
    }
    assert (
        schemes["ApiKeyBearer"]["scheme"] == "bearer"
        and schemes["OidcBearer"]["bearerFormat"] == "JWT"
    )


def test_the_served_spec_is_the_documented_file(client):
    resp = client.get("/openapi.yaml")
    assert resp.status_code == 200 and resp.mimetype == "application/yaml"
    assert resp.get_data(as_text=True) == SPEC_PATH.read_text() == spec_text()


def test_the_response_check_rejects_an_undocumented_shape(app):
    class Fake:
        status_code, mimetype = 200, "application/json"

        @staticmethod
        def get_json():
            return {"name": "x"}  # TownInfo needs root and redis_url too

    with pytest.raises(AssertionError, match="required property"):
        check_against_spec(app, "GET", "/v1/town", Fake)
