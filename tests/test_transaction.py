"""store.transaction: one MULTI/EXEC in one write — atomic, errors raised, the pool kept usable."""

from __future__ import annotations

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tinytown.store import transaction


def test_the_commands_run_together_and_their_replies_come_back(town):
    r, k = town.redis, town.keys.task("tx")
    replies = transaction.execute(
        r, [("HSET", k, "a", "1", "b", 2), ("HGET", k, "b"), ("RPUSH", k + ":l", "x")]
    )
    assert replies == [2, "2", 1]
    assert r.hgetall(k) == {"a": "1", "b": "2"}


def test_a_command_refused_when_queued_runs_nothing_and_the_pool_stays_usable(town):
    r, k = town.redis, town.keys.task("tx")
    with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
        transaction.execute(
            r, [("HSET", k, "a", "1"), ("ZADD", k + ":z", "1")]
        )  # ZADD lacks its member
    assert not r.exists(k)
    assert transaction.execute(r, [("SET", k + ":s", "ok")]) == ["OK"]
    assert r.get(k + ":s") == "ok" and r.ping()


def test_a_command_failing_inside_exec_is_raised_and_the_others_ran(town):
    r, k = town.redis, town.keys.task("tx")
    r.set(k, "a string")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        transaction.execute(r, [("RPUSH", k + ":l", "x"), ("HSET", k, "a", "1")])
    assert r.lrange(k + ":l", 0, -1) == ["x"]  # Redis does not roll back (documented)


def test_a_pooled_connection_the_server_closed_is_replaced_and_the_transaction_runs_once(
    town, redis_url
):
    r, k = town.redis, town.keys.task("tx")
    pooled_id = r.client_id()  # the pool's one connection
    other = redis.Redis.from_url(redis_url)
    try:
        assert other.client_kill_filter(_id=pooled_id) == 1
    finally:
        other.close()
    assert transaction.execute(r, [("RPUSH", k, "once")]) == [1]
    assert r.lrange(k, 0, -1) == ["once"]


def test_an_unreachable_server_raises_a_connection_error(town):
    r = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    with pytest.raises(redis.ConnectionError):
        transaction.execute(r, [("SET", town.keys.task("tx"), "x")])
