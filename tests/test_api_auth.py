"""API-key auth: the matrix over every protected route, key precedence, rotation, cache, audit."""

from __future__ import annotations

import json
import logging
import time
import uuid

import pytest

from tinytown.api import BLUEPRINTS
from tinytown.api.auth import ApiKeyVerifier, AuthError
from tinytown.config import ApiKey, AuthConfig

from .api_support import SCOPE_KEYS, anon, keyed_app, keyed_town, keyring  # noqa: F401 - fixtures

PLACEHOLDERS = {
    "agent": "alice",
    "task_id": str(uuid.uuid4()),
    "mission_id": str(uuid.uuid4()),
    "work_item_id": "w1",
    "watch_id": "x1",
}
# For each scope, a key that has some scope but not that one.
LACKING = {"town.read": "write", "town.write": "read", "agent.manage": "write"}


def protected_routes(app):
    """(method, url, scope) for every protected REST route in the app's URL map (the JSON-RPC
    doors, /mcp and /a2a, answer with JSON-RPC errors: tests/test_mcp_http.py and
    tests/test_a2a.py hold them to the same keys)."""
    scopes = {bp.name: getattr(bp, "required_scope", None) for bp in BLUEPRINTS}
    out = []
    for rule in app.url_map.iter_rules():
        scope = scopes.get(rule.endpoint.split(".")[0])
        if scope is None or not rule.rule.startswith("/v1/"):
            continue
        url = rule.rule
        for name, value in PLACEHOLDERS.items():
            url = url.replace(f"<{name}>", value)
        assert "<" not in url, f"no placeholder for {rule.rule}"
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((method, url, scope))
    return out


def test_every_v1_route_is_protected(keyed_app):
    routes = protected_routes(keyed_app)
    v1 = {
        (m, r.rule)
        for r in keyed_app.url_map.iter_rules()
        if r.rule.startswith("/v1/")
        for m in r.methods - {"HEAD", "OPTIONS"}
    }
    assert len(routes) == len(v1) >= 38


def test_auth_matrix_401_without_credentials_403_without_the_scope(anon, keyring, keyed_town):
    routes = protected_routes(anon.app)
    for method, url, scope in routes:
        resp = anon.open(method, url, json={})
        assert resp.status_code == 401, (method, url)
        assert (
            resp.get_json()["error"] == "Authentication required"
            and resp.get_json()["status"] == 401
        )
        resp = anon.as_key(keyring[LACKING[scope]][0]).open(method, url, json={})
        assert resp.status_code == 403, (method, url, scope)
        assert resp.get_json()["error"] == "Insufficient permissions"
    for method, url, scope in routes:  # and the right scope gets past auth
        resp = anon.as_key(keyring["admin"][0]).open(method, url, json={})
        assert resp.status_code not in (401, 403), (method, url)
    assert keyed_town.redis.zcard(keyed_town.keys.tasks) == 0  # denied requests wrote nothing


def test_each_scoped_key_reaches_its_own_routes(anon, keyring):
    scope_key = {"town.read": "read", "town.write": "write", "agent.manage": "manage"}
    for method, url, scope in protected_routes(anon.app):
        resp = anon.as_key(keyring[scope_key[scope]][0]).open(method, url, json={})
        assert resp.status_code not in (401, 403), (method, url)


def test_public_routes_need_no_credentials(anon):
    for path in (
        "/health",
        "/healthz",
        "/livez",
        "/ready",
        "/readyz",
        "/metrics",
        "/api/scaling",
        "/openapi.yaml",
    ):
        assert anon.get(path).status_code == 200, path


def test_invalid_key_is_401_invalid_credentials(anon):
    resp = anon.as_key("f" * 64).get("/v1/town")
    assert resp.status_code == 401 and resp.get_json()["error"] == "Invalid credentials"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_x_api_key_header_works_and_bearer_is_checked_first(anon, keyring):
    good, bad = keyring["read"][0], "0" * 64
    assert anon.get("/v1/town", headers={"X-API-Key": good}).status_code == 200
    assert (
        anon.get(
            "/v1/town", headers={"Authorization": f"Bearer {good}", "X-API-Key": bad}
        ).status_code
        == 200
    )
    assert (
        anon.get(
            "/v1/town", headers={"Authorization": f"Bearer {bad}", "X-API-Key": good}
        ).status_code
        == 401
    )
    # A non-Bearer Authorization header is ignored, so X-API-Key applies.
    assert (
        anon.get("/v1/town", headers={"Authorization": "Basic abc", "X-API-Key": good}).status_code
        == 200
    )


def test_upstream_single_key_with_no_scopes_is_admin(anon, keyring):
    client = anon.as_key(keyring["upstream"][0])
    assert client.get("/v1/town").status_code == 200
    assert client.post("/v1/agents", json={"name": "a"}).status_code == 201
    assert client.post("/v1/backlog", json={"description": "x"}).status_code == 201


def test_admin_scope_implies_every_scope(anon, keyring):
    client = anon.as_key(keyring["admin"][0])
    assert client.post("/v1/agents", json={"name": "a"}).status_code == 201
    assert client.get("/v1/agents").status_code == 200


def test_two_named_keys_are_both_valid_so_rotation_needs_no_downtime(keyring):
    auth = AuthConfig(
        mode="api_key",
        keys=(
            ApiKey("old", keyring["read"][1], ("town.read",)),
            ApiKey("new", keyring["write"][1], ("town.read",)),
        ),
    )
    verifier = ApiKeyVerifier(auth)
    assert verifier.authenticate(keyring["read"][0]).id == "old"
    assert verifier.authenticate(keyring["write"][0]).id == "new"


def test_successful_verifications_are_cached_under_a_keyed_digest(keyring):
    raw, phc = keyring["read"]
    auth = AuthConfig(mode="api_key", keys=(ApiKey("k", phc, ("town.read",)),))
    cached, uncached = ApiKeyVerifier(auth), ApiKeyVerifier(auth, cache_ttl_secs=0)
    start = time.perf_counter()
    uncached.authenticate(raw)
    one_argon2 = time.perf_counter() - start
    cached.authenticate(raw)
    start = time.perf_counter()
    for _ in range(50):
        assert cached.authenticate(raw).id == "k"
    assert (
        time.perf_counter() - start < one_argon2
    )  # 50 cached checks cost less than one Argon2 run
    assert not any(raw.encode() in digest for digest in cached._cache)  # the raw key is not stored


def test_cached_verification_expires_and_failures_are_never_cached(keyring):
    raw, phc = keyring["read"]
    now = [1000.0]
    verifier = ApiKeyVerifier(
        AuthConfig(mode="api_key", keys=(ApiKey("k", phc),)),
        cache_ttl_secs=60,
        clock=lambda: now[0],
    )
    verifier.authenticate(raw)
    ((expires, _),) = verifier._cache.values()
    assert expires == 1060.0
    for _ in range(2):
        with pytest.raises(AuthError):
            verifier.authenticate("wrong")
    assert len(verifier._cache) == 1


def audit_records(caplog):
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "tinytown.audit"]


def test_mutating_requests_leave_one_audit_line_naming_the_principal(anon, keyring, caplog):
    caplog.set_level(logging.INFO, logger="tinytown.audit")
    anon.as_key(keyring["write"][0]).post("/v1/backlog", json={"description": "x"})
    anon.as_key(keyring["read"][0]).post("/v1/backlog", json={"description": "x"})
    anon.post("/v1/backlog", json={"description": "x"})
    anon.as_key(keyring["read"][0]).get("/v1/backlog")  # reads are not audited
    lines = audit_records(caplog)
    assert [(a["principal"], a["result"], a["status"]) for a in lines] == [
        ("write", "success", 201),
        ("read", "denied", 403),
        ("anonymous", "denied", 401),
    ]
    assert all(
        a["method"] == "POST" and a["path"] == "/v1/backlog" and a["request_id"] for a in lines
    )


def test_none_mode_principal_is_local_with_every_scope():
    from tinytown.api.auth import LOCAL, Authenticator

    assert Authenticator(AuthConfig()).authenticate(None, None) is LOCAL
    assert LOCAL.id == "local" and all(
        LOCAL.allows(s) for scopes in SCOPE_KEYS.values() for s in scopes
    )
