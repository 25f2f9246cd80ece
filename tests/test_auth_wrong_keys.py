"""Wrong API keys of every shape get the same answer, by the same path (a real gunicorn townhall
in ``api_key`` mode, keys made by ``tt auth add-key``).

Same answer: 401, ``error`` "Invalid credentials", the same problem document byte for byte, sent
as ``Authorization: Bearer`` or ``X-API-Key`` — whether the key is one character, the right
length, a prefix of a real key, a real key plus a character, non-ASCII, 8 KB, a JWT, or a real
key of another town.

Same path, hence comparable time (measured in ``bench/bench_auth_timing.py``, not asserted here:
speed targets live in benchmarks). Every value that reaches :class:`ApiKeyVerifier` costs one
HMAC of the value (cache lookup; only valid keys are ever cached) and then one Argon2id
verification per configured key: a wrong key matches none, so none is skipped. Argon2's cost is
its memory and passes (m=19456 KiB, t=2), the same for every key hashed with the town's
parameters; the value's length only enters the first BLAKE2b block, microseconds even at 8 KB.
There is no length or alphabet check in front of it.

The answers that differ, and why they leak nothing about any key:

- No value at all (an empty header, ``Bearer `` alone, another scheme): 401 "Authentication
  required", before any verification. It depends only on whether the request carried a value.
- A header over gunicorn's 8190-byte field limit: 431, before townhall reads any header. It
  depends only on the header's size; the limit is documented (docs/api.md, "Limits").
- A value shaped like a task token (``tttask.<uuid>.<secret>``): 403 on a route a task token
  may not use, else one Redis lookup of its SHA-256 (401 if it is not current). The shape is
  public, and says nothing about API keys.
- The right key: 200, and its verification is cached — only someone who holds it sees that.

A length check would be fine too: it would leak only the length of valid keys, which is public
(64 hex characters, documented). There is none.
"""

from __future__ import annotations

import base64
import json
import uuid

import pytest
import requests

from tinytown.api import auth as auth_module
from tinytown.api.auth import INVALID_CREDENTIALS, Authenticator, AuthError
from tinytown.config import load_config
from tinytown.core.apikeys import generate_key

from .conftest import free_port, write_town
from .secrets_seen import remember
from .townhall_support import Townhall, add_key

PROBLEM_FIELDS = {"type", "title", "status", "detail", "error"}
HEADER_FIELD_MAX_BYTES = 8190  # gunicorn's limit_request_field_size in townhall


def jwt_looking() -> str:
    part = lambda doc: base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()
    return ".".join([part({"alg": "RS256", "kid": "k1"}), part({"sub": "ci"}), "c2lnbmF0dXJl"])


def wrong_keys(key: str, other_town_key: str) -> dict[str, str]:
    """Wrong keys of every shape, as text (non-ASCII goes on the wire as UTF-8 bytes)."""
    flipped = key[:-1] + ("0" if key[-1] != "0" else "1")
    return {
        "one-char": "a",
        "right-length": generate_key(),
        "prefix": key[:32],
        "key-plus-char": key + "0",
        "last-char-changed": flipped,
        "upper-case": key.upper(),
        "non-ascii": "ключ-ü-" + key[:8],
        "8kb": "k" * 8000,
        "jwt": jwt_looking(),
        "other-town": other_town_key,
    }


def sent_as(header: str, value: str) -> dict:
    raw = value.encode("utf-8")  # requests sends bytes as they are
    return {"Authorization": b"Bearer " + raw} if header == "bearer" else {"X-API-Key": raw}


@pytest.fixture(scope="module")
def hall(tmp_path_factory, redis_url):
    root = tmp_path_factory.mktemp("wrong-keys")
    port = free_port()
    write_town(root, redis_url, tables=f"[townhall]\nrest_port = {port}\nworkers = 1\n")
    key, _ = add_key(root, "ci")
    add_key(root, "reader", "town.read")
    elsewhere = tmp_path_factory.mktemp("other-town")
    write_town(elsewhere, redis_url)
    other, _ = add_key(elsewhere, "ci")
    townhall = Townhall(root, port)
    try:
        townhall.wait_serving()
        yield townhall, key, other
    finally:
        townhall.stop()


def get(hall, headers: dict, path: str = "/v1/town", method: str = "GET") -> requests.Response:
    townhall, _, _ = hall
    return requests.request(method, townhall.url + path, headers=headers, timeout=30)


@pytest.mark.parametrize("header", ["bearer", "x-api-key"])
def test_every_wrong_key_gets_the_same_401_problem_document(hall, header):
    _, key, other = hall
    answers = {}
    for shape, value in wrong_keys(key, other).items():
        resp = get(hall, sent_as(header, value))
        assert resp.status_code == 401, (shape, resp.text)
        assert resp.headers["Content-Type"] == "application/problem+json", shape
        assert resp.headers["WWW-Authenticate"] == 'Bearer realm="townhall"', shape
        answers[shape] = resp.content
    body = json.loads(answers["one-char"])
    assert set(body) == PROBLEM_FIELDS and body["error"] == INVALID_CREDENTIALS
    assert body["detail"] == "the API key does not match any configured key"
    assert {shape for shape, content in answers.items() if content != answers["one-char"]} == set()


def test_the_right_key_is_let_in_either_way(hall):
    _, key, _ = hall
    assert get(hall, sent_as("bearer", key)).status_code == 200
    assert get(hall, sent_as("x-api-key", key)).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [{"X-API-Key": ""}, {"Authorization": "Bearer "}, {"Authorization": "Basic eDp5"}, {}],
    ids=["empty", "bearer-alone", "not-bearer", "none"],
)
def test_no_value_at_all_is_authentication_required_in_the_same_shape(hall, headers):
    resp = get(hall, headers)
    body = resp.json()
    assert resp.status_code == 401 and set(body) == PROBLEM_FIELDS
    assert body["error"] == "Authentication required"


def test_a_header_over_the_field_limit_is_refused_by_size_alone(hall):
    _, key, _ = hall
    size = 10 * 1024
    answers = {
        (header, what): get(hall, sent_as(header, value))
        for header in ("bearer", "x-api-key")
        for what, value in {"junk": "x" * size, "real-key-repeated": (key * 200)[:size]}.items()
    }
    assert {r.status_code for r in answers.values()} == {431}
    assert len({r.content for r in answers.values()}) == 1
    assert str(HEADER_FIELD_MAX_BYTES) in next(iter(answers.values())).json()["detail"]


def test_a_task_token_shape_is_routed_by_its_shape_and_refused(hall):
    task_id = str(uuid.uuid4())
    fake = remember(f"tttask.{task_id}.{generate_key()}")
    elsewhere = get(hall, sent_as("bearer", fake))
    assert elsewhere.status_code == 403 and elsewhere.json()["error"] == "Insufficient permissions"
    report = get(hall, sent_as("bearer", fake), f"/v1/tasks/{task_id}/complete", "POST")
    assert report.status_code == 401 and report.json()["error"] == INVALID_CREDENTIALS


# --- the path: every wrong key costs one Argon2 verification per configured key ---------------


def test_every_wrong_key_is_verified_against_every_configured_key_and_never_cached(
    tmp_path, redis_url, monkeypatch
):
    write_town(tmp_path, redis_url)
    key, _ = add_key(tmp_path, "ci")
    add_key(tmp_path, "reader", "town.read")
    add_key(tmp_path, "ops", "agent.manage")
    authenticator = Authenticator(load_config(tmp_path, env={}).townhall.auth)
    verified: list[str] = []
    real_verify = auth_module.verify_key
    monkeypatch.setattr(
        auth_module, "verify_key", lambda phc, raw: verified.append(raw) or real_verify(phc, raw)
    )
    # what the server hands the app: header bytes decoded as Latin-1
    as_received = lambda value: value.encode("utf-8").decode("latin-1")
    shapes = wrong_keys(key, generate_key())
    for shape, value in shapes.items():
        for headers in ((f"Bearer {as_received(value)}", None), (None, as_received(value))):
            for attempt in (1, 2):  # a failure is never cached: the second costs the same
                verified.clear()
                with pytest.raises(AuthError) as err:
                    authenticator.authenticate(*headers)
                assert (err.value.status, err.value.error) == (401, INVALID_CREDENTIALS), shape
                assert verified == [as_received(value)] * 3, (shape, attempt)
    verified.clear()
    assert authenticator.authenticate(f"Bearer {key}", None).id == "ci"
    assert authenticator.authenticate(None, key).id == "ci"
    assert len(verified) == 1  # the right key's first success; after that, the cache
