"""OIDC for real: tokens signed with keys made here, verified against a JWKS served on loopback."""

from __future__ import annotations

import http.server
import json
import logging
import threading
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tinytown.api import create_app
from tinytown.api.auth import AuthError
from tinytown.api.oidc import OidcVerifier
from tinytown.config import AuthConfig, load_config
from tinytown.store import Town

from .api_support import SpecClient
from .conftest import write_town

ISSUER, AUDIENCE = "https://issuer.example", "townhall"


class Jwks:
    """A JWKS document served over HTTP on loopback; counts fetches; keys can be rotated."""

    def __init__(self):
        self.keys: list[dict] = []
        self.fetches = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.fetches += 1
                body = json.dumps({"keys": outer.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"

    def add(self, kid: str, private_key, alg: str) -> None:
        algo = jwt.algorithms.RSAAlgorithm if alg == "RS256" else jwt.algorithms.ECAlgorithm
        jwk = json.loads(algo.to_jwk(private_key.public_key()))
        self.keys.append({**jwk, "kid": kid, "alg": alg, "use": "sig"})


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def jwks(rsa_key, ec_key):
    server = Jwks()
    server.add("rsa-1", rsa_key, "RS256")
    server.add("ec-1", ec_key, "ES256")
    yield server
    server.server.shutdown()


def token(key, alg="RS256", kid="rsa-1", **claims) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "ci-bot", "iat": now, "exp": now + 300, **claims}
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})


@pytest.fixture
def oidc_app(tmp_path, redis_url, jwks):
    """``make(extra_auth_lines)``: a townhall in OIDC mode against the loopback JWKS."""
    towns = []

    def make(extra: str = "") -> SpecClient:
        tables = (
            f'[townhall.auth]\nmode = "oidc"\nissuer = "{ISSUER}"\naudience = "{AUDIENCE}"\n'
            f'jwks_url = "{jwks.url}"\nclock_skew_seconds = 30\n{extra}'
        )
        write_town(tmp_path, redis_url, tables=tables)
        towns.append(Town.connect(load_config(tmp_path, env={})))
        return SpecClient(create_app(towns[-1].config, town=towns[-1]))

    yield make
    for town in towns:
        town.redis.close()


@pytest.fixture
def oidc_client(oidc_app):
    return oidc_app()


def bearer(tok: str) -> dict:
    return {"Authorization": f"Bearer {tok}"}


def test_rs256_token_with_scope_claim_is_accepted_for_its_scope_only(oidc_client, rsa_key):
    tok = token(rsa_key, scope="openid town.read")
    assert oidc_client.get("/v1/town", headers=bearer(tok)).status_code == 200
    resp = oidc_client.post("/v1/backlog", json={"description": "x"}, headers=bearer(tok))
    assert resp.status_code == 403 and resp.get_json()["error"] == "Insufficient permissions"


def test_es256_token_with_scp_list_is_accepted(oidc_client, ec_key):
    tok = token(ec_key, alg="ES256", kid="ec-1", scp=["town.write", "town.read"])
    assert (
        oidc_client.post("/v1/backlog", json={"description": "x"}, headers=bearer(tok)).status_code
        == 201
    )


def test_admin_scope_in_a_token_implies_all(oidc_client, rsa_key):
    tok = token(rsa_key, scope="admin")
    assert (
        oidc_client.post("/v1/agents", json={"name": "a"}, headers=bearer(tok)).status_code == 201
    )


@pytest.mark.parametrize(
    "claims, fragment",
    [
        ({"aud": "someone-else"}, "audience"),
        ({"iss": "https://evil.example"}, "issuer"),
        ({"exp": int(time.time()) - 120}, "expired"),
    ],
)
def test_wrong_audience_issuer_or_expired_tokens_are_401(oidc_client, rsa_key, claims, fragment):
    resp = oidc_client.get("/v1/town", headers=bearer(token(rsa_key, scope="town.read", **claims)))
    body = resp.get_json()
    assert resp.status_code == 401 and body["error"] == "Invalid credentials"
    assert fragment in body["detail"].lower()


def test_clock_skew_tolerates_a_token_expired_seconds_ago(oidc_client, rsa_key):
    tok = token(rsa_key, scope="town.read", exp=int(time.time()) - 10)
    assert oidc_client.get("/v1/town", headers=bearer(tok)).status_code == 200


def test_a_token_signed_by_another_key_is_401(oidc_client):
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert (
        oidc_client.get("/v1/town", headers=bearer(token(stranger, scope="town.read"))).status_code
        == 401
    )


def test_hs256_and_unsigned_tokens_are_refused(oidc_client):
    hs = jwt.encode(
        {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "x",
            "exp": int(time.time()) + 60,
            "scope": "admin",
        },
        "s" * 32,
        algorithm="HS256",
        headers={"kid": "rsa-1"},
    )
    resp = oidc_client.get("/v1/town", headers=bearer(hs))
    assert resp.status_code == 401 and "HS256" in resp.get_json()["detail"]
    assert oidc_client.get("/v1/town", headers=bearer("not.a.jwt")).status_code == 401
    assert oidc_client.get("/v1/town").get_json()["error"] == "Authentication required"


@pytest.mark.parametrize("alg, kid", [("RS256", "ec-1"), ("ES256", "rsa-1")])
def test_a_token_whose_algorithm_does_not_match_its_key_is_401(
    oidc_client, rsa_key, ec_key, alg, kid
):
    tok = token(rsa_key if alg == "RS256" else ec_key, alg=alg, kid=kid, scope="town.read")
    resp = oidc_client.get("/v1/town", headers=bearer(tok))
    body = resp.get_json()
    assert resp.status_code == 401 and body["error"] == "Invalid credentials"
    assert "does not match key" in body["detail"]


def test_a_403_for_missing_required_scopes_is_audited_under_the_token_subject(
    oidc_app, rsa_key, caplog
):
    client = oidc_app('required_scopes = ["town.read"]\n')
    caplog.set_level(logging.INFO, logger="tinytown.audit")
    resp = client.post(
        "/v1/backlog", json={"description": "x"}, headers=bearer(token(rsa_key, scope="town.write"))
    )
    assert resp.status_code == 403 and resp.get_json()["error"] == "Insufficient permissions"
    audits = [json.loads(r.getMessage()) for r in caplog.records if r.name == "tinytown.audit"]
    assert [(a["principal"], a["status"], a["result"]) for a in audits] == [
        ("ci-bot", 403, "denied")
    ]


def test_the_jwks_is_cached_across_requests(oidc_client, rsa_key, jwks):
    tok = token(rsa_key, scope="town.read")
    for _ in range(5):
        assert oidc_client.get("/v1/town", headers=bearer(tok)).status_code == 200
    assert jwks.fetches == 1


def auth_config(jwks, **extra) -> AuthConfig:
    return AuthConfig(mode="oidc", issuer=ISSUER, audience=AUDIENCE, jwks_url=jwks.url, **extra)


def test_an_unknown_kid_refetches_the_jwks_after_rotation(jwks, rsa_key):
    now = [1000.0]
    verifier = OidcVerifier(auth_config(jwks), clock=lambda: now[0])
    assert verifier.authenticate(token(rsa_key, scope="town.read")).id == "ci-bot"
    rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks.add("rsa-2", rotated, "RS256")
    now[0] += 11  # past the refetch rate limit, well inside the cache lifetime
    principal = verifier.authenticate(token(rotated, kid="rsa-2", scope="town.write"))
    assert principal.scopes == frozenset({"town.write"}) and jwks.fetches == 2


def test_unknown_kids_cannot_make_it_refetch_on_every_request(jwks, rsa_key):
    verifier = OidcVerifier(auth_config(jwks), clock=lambda: 1000.0)
    verifier.authenticate(token(rsa_key, scope="town.read"))
    for _ in range(3):
        with pytest.raises(AuthError):
            verifier.authenticate(token(rsa_key, kid="nope", scope="town.read"))
    assert jwks.fetches == 1


def test_required_scopes_reject_tokens_without_them(jwks, rsa_key):
    verifier = OidcVerifier(auth_config(jwks, required_scopes=("town.read",)))
    with pytest.raises(AuthError) as err:
        verifier.authenticate(token(rsa_key, scope="town.write"))
    assert err.value.status == 403
    assert verifier.authenticate(token(rsa_key, scope="town:read town.write")).scopes == {
        "town.read",
        "town.write",
    }


def test_a_token_without_scopes_has_none(jwks, rsa_key):
    assert OidcVerifier(auth_config(jwks)).authenticate(token(rsa_key)).scopes == frozenset()
