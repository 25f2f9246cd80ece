"""Status-page log-ins are sessions in Redis: the cookie holds a random id, never the key; logging
out, ``tt auth end-sessions`` and removing or replacing the key end them; an OIDC log-in lasts
no longer than its token."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import subprocess
import time

import pytest

from tinytown.api import create_app
from tinytown.core.apikeys import hash_key
from tinytown.store import Town

from .api_support import keyed_app, keyed_town, keyring  # noqa: F401 - fixtures
from .conftest import CONFIG_ENV, tt_executable
from .secrets_seen import remember
from .test_auth_oidc import ec_key, jwks, oidc_app, rsa_key, token  # noqa: F401 - fixtures

COOKIE = "tinytown_session"


def log_in(app, key: str):
    """A test client logged in with ``key``; returns it and its session id."""
    client = app.test_client()
    resp = client.post("/login", data={"key": key})
    assert resp.status_code == 303, resp.get_data(as_text=True)
    cookie = client.get_cookie(COOKIE)
    assert cookie is not None
    return client, remember(cookie.value)  # (the suite's log scan looks for it too)


def opens(client) -> bool:
    resp = client.get("/")
    assert resp.status_code in (200, 302), resp.status_code
    return resp.status_code == 200


def with_cookie(app, value: str, name: str = COOKIE):
    client = app.test_client()
    client.set_cookie(name, value)
    return client


def test_the_cookie_holds_a_random_id_and_redis_only_its_digest(keyed_app, keyed_town, keyring):
    key = keyring["read"][0]
    client, session_id = log_in(keyed_app, key)
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", session_id) and key not in session_id
    assert opens(client)
    digest = hashlib.sha256(session_id.encode()).hexdigest()
    stored = keyed_town.redis.hgetall(keyed_town.keys.page_session(digest))
    assert stored["principal"] == "read" and stored["scopes"] == "town.read"
    assert 29 * 86400 < keyed_town.redis.ttl(keyed_town.keys.page_session(digest)) <= 30 * 86400
    # nothing in the town's keys names the session id or the key (a Redis reader gets no cookie)
    for name in keyed_town.redis.scan_iter(keyed_town.keys.town_pattern()):
        assert session_id not in name and key not in name
        if keyed_town.redis.type(name) == "hash":
            values = keyed_town.redis.hgetall(name).values()
            assert not any(session_id in v or key in v for v in values), name
    _, second = log_in(keyed_app, key)
    assert second != session_id  # a new session at each log-in (no fixation)


def test_logging_out_ends_the_session_for_every_copy_of_the_cookie(keyed_app, keyring):
    client, session_id = log_in(keyed_app, keyring["read"][0])
    copy = with_cookie(keyed_app, session_id)  # the cookie, copied off the laptop
    assert opens(copy)
    out = client.post("/logout")
    assert out.status_code == 303 and f"{COOKIE}=;" in out.headers["Set-Cookie"]
    assert not opens(copy) and not opens(client)


def test_tt_auth_end_sessions_logs_every_browser_out(keyed_app, keyed_town, keyring):
    clients = [log_in(keyed_app, keyring[name][0])[0] for name in ("read", "admin")]
    assert all(opens(c) for c in clients)
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_ENV}

    def end_sessions():
        return subprocess.run(
            [tt_executable(), "auth", "end-sessions"],
            cwd=keyed_town.config.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    done = end_sessions()
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Ended 2 status-page sessions."
    assert not any(opens(c) for c in clients)
    assert not keyed_town.redis.exists(keyed_town.keys.page_sessions)
    again = end_sessions()
    assert again.returncode == 0 and again.stdout.strip() == "Ended 0 status-page sessions."
    assert opens(log_in(keyed_app, keyring["read"][0])[0])  # logging in again works


def _app_with_keys(town: Town, change):
    """The same town, its townhall reloaded with ``change(keys)`` as its named keys."""
    cfg = town.config
    auth = dataclasses.replace(cfg.townhall.auth, keys=tuple(change(list(cfg.townhall.auth.keys))))
    cfg = dataclasses.replace(cfg, townhall=dataclasses.replace(cfg.townhall, auth=auth))
    return create_app(cfg, town=Town(cfg, town.redis))


def test_a_session_ends_with_the_key_it_was_opened_with(keyed_app, keyed_town, keyring):
    _, session_id = log_in(keyed_app, keyring["read"][0])

    def same(keys):
        return keys

    def removed(keys):
        return [k for k in keys if k.name != "read"]

    def replaced(keys):  # rotated: a new key under the same name
        return [
            dataclasses.replace(k, hash=hash_key("a-new-read-key-" + "1" * 40))
            if k.name == "read"
            else k
            for k in keys
        ]

    def narrowed(keys):  # the key kept, its town.read scope withdrawn
        return [
            dataclasses.replace(k, scopes=("town.write",)) if k.name == "read" else k for k in keys
        ]

    assert opens(with_cookie(_app_with_keys(keyed_town, same), session_id))
    for change in (removed, replaced, narrowed):
        _, session_id = log_in(keyed_app, keyring["read"][0])  # (a session of its own)
        reloaded = _app_with_keys(keyed_town, change)
        assert not opens(with_cookie(reloaded, session_id)), change.__name__
        assert not opens(with_cookie(keyed_app, session_id))  # refused once: ended for good


@pytest.mark.parametrize(
    "value",
    ["", "x", "A" * 43, "A" * 4000, "é" * 43, "../../etc/passwd", "a b", "\x00" * 43],
)
def test_a_forged_or_malformed_session_cookie_leads_to_the_log_in(keyed_app, value):
    client = with_cookie(keyed_app, value)
    resp = client.get("/")
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/login")
    assert client.post("/logout").status_code == 303


def test_the_old_cookie_that_held_the_key_opens_nothing_and_is_deleted(keyed_app, keyring):
    """Before page sessions the cookie ``tinytown_key`` held the key itself."""
    resp = with_cookie(keyed_app, keyring["admin"][0], "tinytown_key").get("/login")
    assert resp.status_code == 200
    assert "tinytown_key=;" in resp.headers["Set-Cookie"]
    assert not opens(with_cookie(keyed_app, keyring["admin"][0], "tinytown_key"))


def test_an_oidc_log_in_lasts_no_longer_than_its_token(oidc_app, rsa_key):
    client = oidc_app()
    app, town = client.app, client.app.config["TOWN"]
    short = token(rsa_key, scope="town.read", exp=int(time.time()) + 120)
    browser = app.test_client()
    cookie = browser.post("/login", data={"key": short}).headers["Set-Cookie"]
    session_id = remember(browser.get_cookie(COOKIE).value)
    assert opens(browser)
    max_age = int(re.search(r"Max-Age=(\d+)", cookie)[1])
    assert 100 <= max_age <= 120
    digest = hashlib.sha256(session_id.encode()).hexdigest()
    assert 100 <= town.redis.ttl(town.keys.page_session(digest)) <= 120
    stored = town.redis.hgetall(town.keys.page_session(digest))
    assert stored["principal"] == "ci-bot" and short not in str(stored)
    no_read = token(rsa_key, scope="town.write")
    refused = app.test_client().post("/login", data={"key": no_read})
    assert refused.status_code == 401 and "Set-Cookie" not in refused.headers


def test_a_session_refused_once_stays_ended_and_a_new_log_in_ends_the_old_one(
    keyed_app, keyed_town, keyring
):
    _, session_id = log_in(keyed_app, keyring["read"][0])

    def narrowed(keys):
        return [
            dataclasses.replace(k, scopes=("town.write",)) if k.name == "read" else k for k in keys
        ]

    assert not opens(with_cookie(_app_with_keys(keyed_town, narrowed), session_id))
    assert not opens(with_cookie(keyed_app, session_id))  # the scope back: still ended
    browser, first = log_in(keyed_app, keyring["read"][0])
    browser.post("/login", data={"key": keyring["read"][0]})  # logging in again
    assert not opens(with_cookie(keyed_app, first))  # a copy of the old cookie: ended
    assert opens(browser)
