"""Lua scripts: each moves one record between states and its index sets in one atomic step."""

from __future__ import annotations

import redis

from ..keys import AGENT_STATES, TASK_STATES


def _state_table(states: tuple[str, ...], first_key: int) -> str:
    return "{" + ", ".join(f'["{s}"] = KEYS[{first_key + i}]' for i, s in enumerate(states)) + "}"


# KEYS: 1 task hash, 2 tasks zset, 3 backlog list, 4 dispatch stream, 5.. one zset per task state
# ARGV: 1 task id, 2 allowed from-states as ",a,b," or "*", 3 new state, 4 now (RFC 3339),
#       5 required assignee ("" = any), 6 incr attempts (0/1), 7 dispatch entry fields count
#       (0 = no XADD), 8 fields-to-set count, 9 fields-to-delete count, then the pairs/names.
# Returns {status, old_state[, stream entry id, the task hash as a flat list]}; status is
# ok | missing | state | owner.
TASK_TRANSITION = """
local idx = %s
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing', ''} end
local id, allowed, new, ts = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local old = redis.call('HGET', KEYS[1], 'state') or 'pending'
if old == 'in_flight' then old = 'running' end
if allowed ~= '*' and not string.find(allowed, ',' .. old .. ',', 1, true) then
  return {'state', old}
end
if ARGV[5] ~= '' and redis.call('HGET', KEYS[1], 'assigned_to') ~= ARGV[5] then
  return {'owner', old}
end
local n_xadd, n_set, n_del = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local i = 10
local xfields = {}
for _ = 1, n_xadd do
  xfields[#xfields + 1] = ARGV[i]; xfields[#xfields + 1] = ARGV[i + 1]; i = i + 2
end
for _ = 1, n_set do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]); i = i + 2 end
for _ = 1, n_del do redis.call('HDEL', KEYS[1], ARGV[i]); i = i + 1 end
redis.call('HSET', KEYS[1], 'state', new, 'updated_at', ts)
if ARGV[6] == '1' then redis.call('HINCRBY', KEYS[1], 'attempts', 1) end
local score = redis.call('ZSCORE', KEYS[2], id) or 0
if old ~= new then
  if idx[old] then redis.call('ZREM', idx[old], id) end
  redis.call('ZADD', idx[new], score, id)
end
if old == 'pending' and new ~= 'pending' then redis.call('LREM', KEYS[3], 1, id) end
if new == 'pending' and old ~= 'pending' then redis.call('RPUSH', KEYS[3], id) end
local entry = ''
if n_xadd > 0 then entry = redis.call('XADD', KEYS[4], '*', unpack(xfields)) end
return {'ok', old, entry, redis.call('HGETALL', KEYS[1])}
""" % _state_table(TASK_STATES, 5)


# KEYS: 1 task hash, 2 tasks zset, 3 backlog list, 4.. one zset per task state
# ARGV: 1 task id, 2 only-if-state ("" = any)
# Returns {status, old_state}; deletes the record and removes it from every index.
TASK_DELETE = """
local idx = %s
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing', ''} end
local old = redis.call('HGET', KEYS[1], 'state') or 'pending'
if ARGV[2] ~= '' and old ~= ARGV[2] then return {'state', old} end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
for _, key in pairs(idx) do redis.call('ZREM', key, ARGV[1]) end
redis.call('LREM', KEYS[3], 1, ARGV[1])
return {'ok', old}
""" % _state_table(TASK_STATES, 4)


# KEYS: 1 agent hash, 2.. one set per agent state
# ARGV: 1 agent id, 2 allowed from-states ",a,b," or "*", 3 new state ("" = keep),
#       4 fields-to-set count, 5 fields-to-delete count, then pairs/names.
# Returns {status, old_state}; status is ok | missing | state.
AGENT_UPDATE = """
local idx = %s
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing', ''} end
local id, allowed, new = ARGV[1], ARGV[2], ARGV[3]
local old = redis.call('HGET', KEYS[1], 'state') or 'starting'
if allowed ~= '*' and not string.find(allowed, ',' .. old .. ',', 1, true) then
  return {'state', old}
end
local i = 6
for _ = 1, tonumber(ARGV[4]) do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]); i = i + 2 end
for _ = 1, tonumber(ARGV[5]) do redis.call('HDEL', KEYS[1], ARGV[i]); i = i + 1 end
if new ~= '' and new ~= old then
  redis.call('HSET', KEYS[1], 'state', new)
  if idx[old] then redis.call('SREM', idx[old], id) end
  redis.call('SADD', idx[new], id)
end
return {'ok', old}
""" % _state_table(AGENT_STATES, 2)


def execute_pipelined(r: redis.Redis, build, scripts) -> list:
    """Run the commands ``build(pipe)`` queues in one round trip; returns their replies.

    Scripts go in as plain ``EVALSHA`` (:func:`queue_script`): redis-py would otherwise ask
    ``SCRIPT EXISTS`` first, a second round trip on every call. If Redis lost its script cache
    (a restart), ``scripts`` are loaded and the pipeline runs once more, so its commands must be
    safe to repeat.
    """
    for attempt in (1, 2):
        pipe = r.pipeline(transaction=False)
        build(pipe)
        try:
            return pipe.execute()
        except redis.exceptions.NoScriptError:
            if attempt == 2:
                raise
            for script in scripts:
                r.script_load(script.script)
    raise AssertionError("unreachable")


def queue_script(pipe, script, keys: list[str], args: list) -> None:
    """Queue ``script`` on ``pipe`` as a bare ``EVALSHA`` (see :func:`execute_pipelined`)."""
    pipe.evalsha(script.sha, len(keys), *keys, *args)
