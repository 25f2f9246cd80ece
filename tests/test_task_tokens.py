"""A coding CLI reports its task over REST with the task token its worker gave it: valid for that
task's complete/fail only, while it runs; only its hash is stored, and it dies with the attempt."""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest
import requests

from tinytown.api.auth import Authenticator, AuthError
from tinytown.config import AuthConfig, load_config
from tinytown.core.prompt import build_prompt
from tinytown.core.records import Task
from tinytown.store import Town
from tinytown.store.task_tokens import TaskTokens, new_token, task_of
from tinytown.worker.cli_process import townhall_url

from .conftest import free_port, write_town
from .townhall_support import Townhall, add_key
from .worker_support import poll, workers, write_worker_town  # noqa: F401 - fixture

# --- the token and its storage ----------------------------------------------------------------


def test_a_token_names_its_task_and_anything_else_is_not_a_task_token():
    task_id = str(uuid.uuid4())
    token = new_token(task_id)
    assert task_of(token) == task_id and len(token.rsplit(".", 1)[1]) >= 43
    assert new_token(task_id) != token
    for other in ("0" * 64, f"tttask.{task_id}.", "tttask.not-a-uuid.x", f"x.{task_id}.y"):
        assert task_of(other) is None


def test_only_the_hash_is_stored_it_expires_and_is_valid_only_while_the_task_runs(town):
    tokens = TaskTokens.of(town)
    task = town.tasks.add("x")
    token = new_token(task.id)
    tokens.issue(task.id, token, ttl_secs=90)
    key = town.keys.task_token(task.id)
    assert town.redis.get(key) == hashlib.sha256(token.encode()).hexdigest()
    assert 0 < town.redis.ttl(key) <= 90
    assert not tokens.valid(task.id, token)  # pending, not running
    town.tasks.transition(task.id, "take_shared", set_fields={"assigned_to": "a"})
    assert tokens.valid(task.id, token)
    assert not tokens.valid(task.id, new_token(task.id))
    town.tasks.complete(task.id, "done")
    assert not tokens.valid(task.id, token)


def test_revoke_deletes_only_the_tokens_own_hash(town):
    tokens = TaskTokens.of(town)
    task_id = str(uuid.uuid4())
    first, second = new_token(task_id), new_token(task_id)
    tokens.issue(task_id, first, 60)
    tokens.issue(task_id, second, 60)  # a later attempt took over
    assert not tokens.revoke(task_id, first)
    assert town.redis.exists(town.keys.task_token(task_id))
    assert tokens.revoke(task_id, second)
    assert not town.redis.exists(town.keys.task_token(task_id))


# --- what townhall's auth makes of one --------------------------------------------------------


OIDC = AuthConfig(mode="oidc", issuer="https://i/", audience="a", jwks_url="https://i/jwks")


def authenticator(valid: bool = True, auth: AuthConfig = AuthConfig(mode="api_key")):
    return Authenticator(auth, task_token_valid=lambda task_id, token: valid)


@pytest.mark.parametrize("action, auth", [("complete", AuthConfig(mode="api_key")), ("fail", OIDC)])
def test_a_valid_token_reports_its_own_task_in_api_key_and_oidc_mode(action, auth):
    task_id = str(uuid.uuid4())
    target = ("POST", f"/v1/tasks/{task_id}/{action}")
    principal = authenticator(auth=auth).authenticate(f"Bearer {new_token(task_id)}", None, target)
    assert principal.id == f"task:{task_id}" and principal.allows("town.write")
    assert not principal.allows("town.read") and not principal.allows("agent.manage")


@pytest.mark.parametrize(
    "method, path",
    [
        ("POST", "/v1/tasks/{other}/complete"),
        ("POST", "/v1/tasks/{own}/cancel"),
        ("GET", "/v1/tasks/{own}"),
        ("POST", "/v1/backlog"),
    ],
)
def test_a_token_is_refused_403_anywhere_else_without_asking_redis(method, path):
    own, other = str(uuid.uuid4()), str(uuid.uuid4())
    auth = Authenticator(
        AuthConfig(mode="api_key"), task_token_valid=lambda *a: pytest.fail("Redis asked")
    )
    with pytest.raises(AuthError) as err:
        auth.authenticate(
            f"Bearer {new_token(own)}", None, (method, path.format(own=own, other=other))
        )
    assert err.value.status == 403 and f"/v1/tasks/{own}/complete" in err.value.detail


def test_a_token_not_stored_for_a_running_task_is_401():
    task_id = str(uuid.uuid4())
    with pytest.raises(AuthError) as err:
        authenticator(valid=False).authenticate(
            f"Bearer {new_token(task_id)}", None, ("POST", f"/v1/tasks/{task_id}/complete")
        )
    assert err.value.status == 401 and "no longer running" in err.value.detail


@pytest.mark.parametrize(
    "tables, env, url",
    [
        ("[townhall]\nrest_port = 9123\n", {}, "http://127.0.0.1:9123"),
        ("[townhall]\nrest_port = 9123\n", {"TINYTOWN_REST_PORT": "9200"}, "http://127.0.0.1:9200"),
        ('[townhall]\nbind = "0.0.0.0"\n', {}, "http://127.0.0.1:8080"),
        ('[townhall]\nbind = "::1"\n', {}, "http://[::1]:8080"),
    ],
)
def test_the_prompt_gives_the_configured_townhall_address(tmp_path, redis_url, tables, env, url):
    write_town(tmp_path, redis_url, tables=tables)
    config = load_config(tmp_path, env=env)
    task = Task(id=str(uuid.uuid4()), description="x", attempts=1)
    prompt = build_prompt(task, agent_name="a", town_name="t", townhall_url=townhall_url(config))
    assert f"POST {url}/v1/tasks/{task.id}/complete" in prompt
    assert 'Authorization: Bearer $TINYTOWN_TASK_TOKEN"' in prompt


# --- end to end: a real worker's CLI reports over REST to a real townhall with api_key auth ----


def test_the_cli_completes_its_task_over_rest_with_its_token_and_nothing_more(
    tmp_path,
    redis_url,
    workers,  # noqa: F811 - fixture
):
    port = free_port()  # not 8080: the prompt must carry the configured port
    root = write_worker_town(tmp_path / "town", redis_url)
    with open(root / "tinytown.toml", "a") as fh:
        fh.write(f"\n[townhall]\nrest_port = {port}\nworkers = 1\n")
    key, _ = add_key(root, "ops", "town.read", "town.write")
    town = Town.connect(load_config(root, env={}))
    townhall = Townhall(root, port)
    env_file = tmp_path / "cli-env.json"
    try:
        townhall.wait_serving()
        api = requests.Session()
        api.headers["Authorization"] = f"Bearer {key}"
        description = f"[env {env_file}] [sleep 3] [complete-via-rest] [exit 3]"
        resp = api.post(f"{townhall.url}/v1/backlog", json={"description": description})
        assert resp.status_code == 201
        task_id = resp.json()["task_id"]
        worker = workers.start(root)

        token = poll(lambda: env_file.exists() and json.loads(env_file.read_text()))["env"][
            "TINYTOWN_TASK_TOKEN"
        ]
        other = api.post(f"{townhall.url}/v1/backlog", json={"description": "[exit 0]"})
        other_id = other.json()["task_id"]

        def as_task(method: str, path: str, with_token: str = token) -> requests.Response:
            headers = {"Authorization": f"Bearer {with_token}"}
            return requests.request(method, townhall.url + path, headers=headers, timeout=10)

        # while its task runs: nothing but its own report
        assert as_task("POST", f"/v1/tasks/{other_id}/complete").status_code == 403
        assert as_task("GET", f"/v1/tasks/{task_id}").status_code == 403
        forged = f"tttask.{task_id}.not-the-secret"
        assert as_task("POST", f"/v1/tasks/{task_id}/fail", forged).status_code == 401
        assert town.redis.get(town.keys.task_token(task_id)) == (
            hashlib.sha256(token.encode()).hexdigest()
        )

        # the CLI reported over REST (then exited 3, which alone would have meant a retry)
        done = poll(lambda: (t := town.tasks.find(task_id)) and t.state == "completed" and t)
        assert done.result == "reported over REST by the fake CLI" and done.attempts == 1
        worker.wait_event("task_finished", task=task_id, outcome="kept:completed")
        assert not town.redis.exists(town.keys.task_token(task_id))

        # after the task ended: refused
        for action in ("complete", "fail"):
            assert as_task("POST", f"/v1/tasks/{task_id}/{action}").status_code == 401
        assert town.tasks.find(task_id).state == "completed"
    finally:
        townhall.stop()
        town.close()
    assert f'"principal":"task:{task_id}"' in townhall.output
    assert token not in townhall.output and token not in worker.log_path.read_text()
