"""Lua scripts: each moves one record between states and its index sets in one atomic step.

No state name is written here: the scripts are templates whose ``{{NAME}}`` marks are filled from
the one table of states (:mod:`tinytown.core.states`) when this module loads, and
``tests/test_states.py`` holds them to it.
"""

from __future__ import annotations

import redis

from tinytown.core import defaults
from tinytown.core import events as ev
from tinytown.core.states import (
    ACTIVE_AGENT_STATES,
    AGENT_DEFAULT_STATE,
    AGENT_STATES,
    BACKLOG_STATE,
    TASK,
    TASK_DEFAULT_STATE,
    TASK_STATE_ALIASES,
    TASK_STATES,
)


def _state_table(states: tuple[str, ...], first_key: int) -> str:
    return "{" + ", ".join(f'["{s}"] = KEYS[{first_key + i}]' for i, s in enumerate(states)) + "}"


# Lua: ``active[state]`` is true for the states whose agents beat (ACTIVE_AGENT_STATES).
_ACTIVE_TABLE = (
    "local active = {" + ", ".join(f'["{s}"] = true' for s in ACTIVE_AGENT_STATES) + "}\n"
)


def _lua_table(mapping: dict[str, str]) -> str:
    return "{" + ", ".join(f"[\"{k}\"] = '{v}'" for k, v in mapping.items()) + "}"


def _fill(template: str) -> str:
    """A script with its ``{{NAME}}`` marks replaced by Lua literals from the state table and
    the event types (:mod:`tinytown.core.events`)."""
    template = template.replace("{{TASK_EVENTS}}", _lua_table(ev.TASK_EVENT_BY_STATE))
    ((alias, aliased),) = TASK_STATE_ALIASES.items()
    values = {
        "TASK_DEFAULT": TASK_DEFAULT_STATE,
        "BACKLOG": BACKLOG_STATE,
        "ALIAS": alias,
        "ALIASED": aliased,
        "TAKE_SHARED_FROM": "," + ",".join(TASK["take_shared"].source) + ",",
        "TAKE_DIRECTED_FROM": "," + ",".join(TASK["take_directed"].source) + ",",
        "TAKEN": TASK["take_shared"].target,
        "AGENT_DEFAULT": AGENT_DEFAULT_STATE,
        "EVENTS_MAXLEN": defaults.EVENTS_MAXLEN,
        "MISSION_EVENTS_MAXLEN": defaults.MISSION_EVENTS_MAXLEN,
        "AGENT_SPAWNED": ev.AGENT_SPAWNED,
        "AGENT_STOPPED": ev.AGENT_STOPPED,
        "AGENT_STATE_CHANGED": ev.AGENT_STATE_CHANGED,
        "AGENT_STOPPED_STATE": ev.AGENT_STOPPED_STATE,
        "REASON_STATES": "," + ",".join(ev.TASK_REASON_STATES) + ",",
        "TASK_DELETED": ev.TASK_DELETED,
        "PROMPT_MESSAGES": defaults.PROMPT_MESSAGES_MAX,
    }
    if TASK["take_shared"].target != TASK["take_directed"].target:
        raise RuntimeError("the scripts' TAKEN state assumes both takes end in the same state")
    for name, value in values.items():
        template = template.replace("{{" + name + "}}", f"'{value}'")
    if "{{" in template:
        raise RuntimeError(f"a script mark was left unfilled: {template}")
    return template


# Append an event document (a Lua table; :mod:`tinytown.core.events`) to the town's event stream
# and, when it names a mission, to that mission's stream (the key is the town's plus
# ``:mission:<id>``, as ``Keys.mission_event_stream``). Entries as upstream: event_type and data.
_EMIT_FUNCTION = """
local function emit(stream, doc)
  local data = cjson.encode(doc)
  redis.call('XADD', stream, 'MAXLEN', '~', {{EVENTS_MAXLEN}}, '*',
    'event_type', doc.event_type, 'data', data)
  if doc.mission_id then
    redis.call('XADD', stream .. ':mission:' .. doc.mission_id, 'MAXLEN', '~',
      {{MISSION_EVENTS_MAXLEN}}, '*', 'event_type', doc.event_type, 'data', data)
  end
end
"""

# The task transition, as a Lua function that more than one script calls.
# K: {task hash, tasks zset, backlog list, dispatch stream, event stream}; idx: state → index
# zset;
# A: 1 task id, 2 allowed from-states as ",a,b," or "*", 3 new state, 4 now (RFC 3339),
#    5 required assignee ("" = any), 6 incr attempts (0/1), 7 dispatch entry fields count
#    (0 = no XADD), 8 fields-to-set count, 9 fields-to-delete count, then the pairs/names.
# A change of state appends its event (TASK_EVENT_BY_STATE), with the task's agent, mission and
# work item, and for a failed or cancelled task its result's first line (and, joined by ' | ',
# its last non-blank line: the CLI's own last word) as the reason; so
# does a new attempt in the same state (a dead worker's running task taken over: task_started
# again, with the attempt), and every event of a move that counts an attempt carries it.
# Returns {status, old_state[, stream entry id, the task hash as a flat list]}; status is
# ok | missing | state | owner.
_TRANSITION_FUNCTION = """
local TASK_EVENTS = {{TASK_EVENTS}}
local function transition(K, idx, A)
  local h = redis.call('HGETALL', K[1])
  if #h == 0 then return {'missing', ''} end
  local rec = {}
  for i = 1, #h, 2 do rec[h[i]] = h[i + 1] end
  local id, allowed, new, ts = A[1], A[2], A[3], A[4]
  local old = rec.state or {{TASK_DEFAULT}}
  if old == {{ALIAS}} then old = {{ALIASED}} end
  if allowed ~= '*' and not string.find(allowed, ',' .. old .. ',', 1, true) then
    return {'state', old}
  end
  if A[5] ~= '' and rec.assigned_to ~= A[5] then return {'owner', old} end
  local n_xadd, n_set, n_del = tonumber(A[7]), tonumber(A[8]), tonumber(A[9])
  local i = 10
  local xfields = {}
  for _ = 1, n_xadd do
    xfields[#xfields + 1] = A[i]; xfields[#xfields + 1] = A[i + 1]; i = i + 2
  end
  local set = {}
  for _ = 1, n_set do
    set[#set + 1] = A[i]; set[#set + 1] = A[i + 1]; rec[A[i]] = A[i + 1]; i = i + 2
  end
  local del = {}
  for _ = 1, n_del do del[#del + 1] = A[i]; rec[A[i]] = nil; i = i + 1 end
  if new == '' then new = old end  -- a move that keeps the state
  rec.state, rec.updated_at = new, ts
  set[#set + 1] = 'state'; set[#set + 1] = new; set[#set + 1] = 'updated_at'; set[#set + 1] = ts
  if A[6] == '1' then
    rec.attempts = tostring((tonumber(rec.attempts) or 0) + 1)
    set[#set + 1] = 'attempts'; set[#set + 1] = rec.attempts
  end
  redis.call('HSET', K[1], unpack(set))
  if #del > 0 then redis.call('HDEL', K[1], unpack(del)) end
  if old ~= new then
    if idx[old] then redis.call('ZREM', idx[old], id) end
    redis.call('ZADD', idx[new], redis.call('ZSCORE', K[2], id) or 0, id)
  end
  if old == {{BACKLOG}} and new ~= {{BACKLOG}} then redis.call('LREM', K[3], 1, id) end
  if new == {{BACKLOG}} and old ~= {{BACKLOG}} then redis.call('RPUSH', K[3], id) end
  local entry = ''
  if n_xadd > 0 then entry = redis.call('XADD', K[4], '*', unpack(xfields)) end
  if old ~= new or A[6] == '1' then  -- (a take-over starts a new attempt in the same state)
    local doc = {event_type = TASK_EVENTS[new], task_id = id, agent_id = rec.assigned_to,
      mission_id = rec.mission_id, work_item_id = rec.work_item_id, old_state = old,
      new_state = new, message = 'task ' .. id .. ' ' .. old .. ' -> ' .. new, timestamp = ts}
    if A[6] == '1' then doc.attempt = tonumber(rec.attempts) end
    if old == new then doc.message = doc.message .. ' (attempt ' .. rec.attempts .. ')' end
    if rec.result and string.find({{REASON_STATES}}, ',' .. new .. ',', 1, true) then
      -- the first line (what happened) and the last non-blank one (the CLI's own last word)
      local first = string.match(rec.result, '^[^\\n]*')
      local last = string.match(rec.result, '([^\\n]*%S[^\\n]*)%s*$')
      if last and last ~= first then first = first .. ' | ' .. last end
      doc.reason = string.sub(first, 1, 300)
      doc.attempt = tonumber(rec.attempts)
    end
    emit(K[5], doc)
  end
  local flat = {}
  for k, v in pairs(rec) do flat[#flat + 1] = k; flat[#flat + 1] = v end
  return {'ok', old, entry, flat}
end
"""

# The Redis clock as RFC 3339 UTC, as records.to_rfc3339 writes it, except that the microseconds
# are always there (isoformat() leaves them out when they are 0; both forms parse and sort).
# Days to civil date after Howard Hinnant's ``civil_from_days``.
_NOW_FUNCTION = """
local function rfc3339(secs, usec)
  local days = math.floor(secs / 86400)
  local rem = secs - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400 + (m <= 2 and 1 or 0)
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%06d+00:00', y, m, d,
    math.floor(rem / 3600), math.floor(rem % 3600 / 60), rem % 60, usec)
end
local function rfc3339_now()
  local t = redis.call('TIME')
  return rfc3339(tonumber(t[1]), tonumber(t[2]))
end
"""

# KEYS: 1 task hash, 2 tasks zset, 3 backlog list, 4 dispatch stream, 5 event stream,
#       6.. one zset per task state
# ARGV: as A of the transition function above.
TASK_TRANSITION = _fill(
    f"local idx = {_state_table(TASK_STATES, 6)}\n"
    + _EMIT_FUNCTION
    + _TRANSITION_FUNCTION
    + "return transition({KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]}, idx, ARGV)\n"
)

# A worker's claim of what its blocking XREADGROUP just delivered, sent right behind that read
# so that Redis runs it the moment the read is served: the entry and its task are taken before
# the worker even wakes, one round trip in all. If the agent's record says it must take no work
# (stopped from outside, paused, …), nothing is taken and the status says why. Otherwise it looks
# at the entries this consumer holds, its own stream first (oldest first): an entry whose task it
# can take (own stream: ``assigned`` to it; shared docket: ``pending``) is claimed — ``running``,
# ``assigned_to``, ``started_at``, attempts + 1 — and the agent's two inbox lists are read with
# it; an entry whose task is gone, finished or someone else's is acknowledged and reported as
# skipped; an entry whose task is already ``running`` for this agent (a reply lost earlier,
# which the worker resumes) is left.
# KEYS: 1 own stream, 2 shared docket, 3 tasks zset, 4 backlog list, 5 urgent list, 6 inbox
#       list, 7 agent hash, 8 event stream, 9.. one zset per task state
# ARGV: 1 group, 2 consumer (the agent id), 3 task hash key prefix (the script builds the task's
#       key itself, as it learns the id from the entry: one Redis, not a cluster, as everywhere
#       here), 4 agent states that take no work, as ",a,b,", 5 task token key prefix (a claim
#       deletes the task's token: an earlier attempt's CLI, still running somewhere, must not
#       report the task this attempt now runs)
# Returns {status, stream, entry id, task id, task hash (flat), urgent, inbox, skipped} with
# status ok | none | refused:<agent state> and skipped a flat list of (stream, entry id, task
# id, reason).
DOCKET_CLAIM = _fill(
    f"local idx = {_state_table(TASK_STATES, 9)}\n"
    + _EMIT_FUNCTION
    + _TRANSITION_FUNCTION
    + _NOW_FUNCTION
    + """
local group, me, prefix = ARGV[1], ARGV[2], ARGV[3]
local none = {'none', '', '', '', {}, {}, {}, {}}
-- What this consumer holds, with each entry's fields, own stream first (history, not blocking).
-- Unlike XPENDING, a history read resets those entries' idle time and adds to their delivery
-- count: harmless, as only this live holder refreshes its own entries and no code reads counts.
-- One call for both streams: a missing group fails it whole, and the read reports that error.
-- Read first, so that a read that brought nothing costs one command more (an idle worker's).
local ok, held = pcall(redis.call, 'XREADGROUP', 'GROUP', group, me, 'COUNT', 10,
  'STREAMS', KEYS[1], KEYS[2], '0', '0')
if not ok then return none end  -- a group is missing: the read failed too, and says so
local n = 0
for _, pair in ipairs(held) do n = n + #pair[2] end
if n == 0 then return none end
local agent_state = redis.call('HGET', KEYS[7], 'state')
if agent_state and string.find(ARGV[4], ',' .. agent_state .. ',', 1, true) then
  return {'refused:' .. agent_state, '', '', '', {}, {}, {}, {}}
end
local ts = rfc3339_now()
local skipped = {}
for s, pair in ipairs(held) do
  local stream = pair[1]
  for _, e in ipairs(pair[2]) do
    local eid, f, task_id = e[1], e[2], ''
    if f then
      for i = 1, #f, 2 do if f[i] == 'task_id' then task_id = f[i + 1] end end
    end
    local r = {'missing', ''}
    if task_id ~= '' then
      local allowed, assignee = {{TAKE_SHARED_FROM}}, ''
      if stream == KEYS[1] then allowed, assignee = {{TAKE_DIRECTED_FROM}}, me end
      r = transition({prefix .. task_id, KEYS[3], KEYS[4], stream, KEYS[8]}, idx,
        {task_id, allowed, {{TAKEN}}, ts, assignee, '1', '0', '2', '0', 'assigned_to', me,
         'started_at', ts})
    end
    if r[1] == 'ok' then
      redis.call('DEL', ARGV[5] .. task_id)  -- an earlier attempt's token reports nothing now
      local urgent, inbox = {}, {}
      if redis.call('EXISTS', KEYS[5], KEYS[6]) > 0 then
        urgent = redis.call('LRANGE', KEYS[5], 0, {{PROMPT_MESSAGES}} - 1)
        inbox = redis.call('LRANGE', KEYS[6], 0, {{PROMPT_MESSAGES}} - 1)
      end
      return {'ok', stream, eid, task_id, r[4], urgent, inbox, skipped}
    end
    -- a task already running for this agent (a reply lost earlier) is left held, for resuming
    if r[2] ~= {{TAKEN}} or redis.call('HGET', prefix .. task_id, 'assigned_to') ~= me then
      redis.call('XACK', stream, group, eid)
      local reason = r[1]
      if reason == 'state' then reason = 'state:' .. r[2] end
      for _, v in ipairs({stream, eid, task_id, reason}) do skipped[#skipped + 1] = v end
    end
  end
end
none[8] = skipped
return none
"""
)


# KEYS: 1 task hash, 2 tasks zset, 3 backlog list, 4 event stream, 5.. one zset per task state
# ARGV: 1 task id, 2 allowed states as ",a,b," ("" = any), 3 now (RFC 3339)
# Returns {status, old_state}; deletes the record, removes it from every index and appends
# task_deleted (with its agent, mission and work item).
TASK_DELETE = _fill(
    f"local idx = {_state_table(TASK_STATES, 5)}\n"
    + _EMIT_FUNCTION
    + """
local rec = redis.call('HMGET', KEYS[1], 'state', 'assigned_to', 'mission_id', 'work_item_id')
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing', ''} end
for i = 2, 4 do if rec[i] == '' then rec[i] = false end end  -- (unset: left out of the event)
local old = rec[1] or {{TASK_DEFAULT}}
if ARGV[2] ~= '' and not string.find(ARGV[2], ',' .. old .. ',', 1, true) then
  return {'state', old}
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
for _, key in pairs(idx) do redis.call('ZREM', key, ARGV[1]) end
redis.call('LREM', KEYS[3], 1, ARGV[1])
emit(KEYS[4], {event_type = {{TASK_DELETED}}, task_id = ARGV[1], agent_id = rec[2] or nil,
  mission_id = rec[3] or nil, work_item_id = rec[4] or nil, old_state = old,
  message = 'task ' .. ARGV[1] .. ' deleted (was ' .. old .. ')', timestamp = ARGV[3]})
return {'ok', old}
"""
)


# Register, update or beat an agent: fields, state and its index in one step. Each agent state
# has a zset of agent ids scored by ``alive_until`` (ms, Redis clock), so live and dead agents
# are counted with ZCOUNT on either side of now (AGENT_COUNTS) and a heartbeat is one ZADD.
# Agents in an active state are also in one zset of deadlines (``Keys.agents_alive``, the same
# scores), so the earliest moment any agent can die is one ZRANGE (townhall's keeper); so is an
# agent stopped from outside while its worker still runs a task (``current_task`` set, its
# window open): if that worker dies, the keeper wakes for it too and returns what it held.
# KEYS: 1 agent hash, 2 agents set, 3 event stream, 4.. one zset per agent state, then the
#       deadlines zset
# ARGV: 1 agent id, 2 allowed from-states ",a,b," or "*", 3 new state ("" = keep),
#       4 dead-after ms ("" = no heartbeat: keep alive_until), 5 the heartbeat's age in ms
#       (0 = now), 6 "1" = create the record if missing, 7 fields-to-set count,
#       8 fields-to-delete count, then pairs/names.
# A heartbeat writes last_heartbeat (RFC 3339) and alive_until = beat + dead-after, both from
# the Redis clock, so liveness never depends on the clocks of the hosts that beat or look.
# A new record appends agent_spawned, a move to stopped agent_stopped and any other change of
# state agent_state_changed (a heartbeat alone appends nothing).
# Returns {status, old_state}; status is ok | missing | state (old_state "" when created).
AGENT_UPDATE = _fill(
    f"local idx = {_state_table(AGENT_STATES, 4)}\n"
    + f"local alive_key = KEYS[{4 + len(AGENT_STATES)}]\n"
    + _ACTIVE_TABLE
    + _EMIT_FUNCTION
    + _NOW_FUNCTION
    + """
local id, allowed, new = ARGV[1], ARGV[2], ARGV[3]
local exists = redis.call('EXISTS', KEYS[1]) == 1
if not exists and ARGV[6] ~= '1' then return {'missing', ''} end
local old = ''
if exists then old = redis.call('HGET', KEYS[1], 'state') or {{AGENT_DEFAULT}} end
if exists and allowed ~= '*' and not string.find(allowed, ',' .. old .. ',', 1, true) then
  return {'state', old}
end
local i = 9
for _ = 1, tonumber(ARGV[7]) do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]); i = i + 2 end
for _ = 1, tonumber(ARGV[8]) do redis.call('HDEL', KEYS[1], ARGV[i]); i = i + 1 end
if not exists then redis.call('SADD', KEYS[2], id) end
local score = tonumber(redis.call('HGET', KEYS[1], 'alive_until')) or 0
if ARGV[4] ~= '' then
  local t = redis.call('TIME')
  local beat_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[5])
  score = beat_ms + tonumber(ARGV[4])
  redis.call('HSET', KEYS[1], 'alive_until', string.format('%.0f', score),
    'last_heartbeat', rfc3339(math.floor(beat_ms / 1000), (beat_ms % 1000) * 1000))
end
local state = old
if new ~= '' and new ~= old then
  redis.call('HSET', KEYS[1], 'state', new)
  if idx[old] then redis.call('ZREM', idx[old], id) end
  state = new
end
if not exists or state ~= old then
  local kind = {{AGENT_STATE_CHANGED}}
  if not exists then
    kind = {{AGENT_SPAWNED}}
  elseif state == {{AGENT_STOPPED_STATE}} then
    kind = {{AGENT_STOPPED}}
  end
  local doc = {event_type = kind, agent_id = id, new_state = state,
    message = 'agent ' .. id .. ' ' .. (old ~= '' and old or 'new') .. ' -> ' .. state,
    timestamp = rfc3339_now()}
  if old ~= '' then doc.old_state = old end
  emit(KEYS[3], doc)
end
if idx[state] then redis.call('ZADD', idx[state], string.format('%.0f', score), id) end
local indexed = active[state]
if not indexed and redis.call('HEXISTS', KEYS[1], 'current_task') == 1 then
  -- stopped from outside while its worker runs a task: indexed until its window ends
  local t = redis.call('TIME')
  indexed = score > tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
if not indexed then
  redis.call('ZREM', alive_key, id)
elseif ARGV[4] ~= '' or state ~= old or not exists or not active[state] then
  redis.call('ZADD', alive_key, string.format('%.0f', score), id)
end
return {'ok', old}
"""
)


# A worker's heartbeat, and what its controls say, in one step (AGENT_UPDATE's beat, leaner: a
# beat runs every few seconds for every worker, and a per-command price charges each command).
# KEYS: 1 agent hash, 2 stop flag, 3 urgent list, 4 inbox list, 5.. one zset per agent state,
#       then the deadlines zset
# ARGV: 1 agent id, 2 dead-after ms, 3 the beat's interval (secs)
# Returns {'missing'} when the record is gone (never recreated here), else
# {'ok', state, stop flag set (0/1), how many of the two lists hold messages}.
AGENT_BEAT = _fill(
    f"local idx = {_state_table(AGENT_STATES, 5)}\n"
    + f"local alive_key = KEYS[{5 + len(AGENT_STATES)}]\n"
    + _ACTIVE_TABLE
    + _NOW_FUNCTION
    + """
local id = ARGV[1]
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
  state = {{AGENT_DEFAULT}}
end
local t = redis.call('TIME')
local beat_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = string.format('%.0f', beat_ms + tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 'alive_until', score, 'heartbeat_interval_secs', ARGV[3],
  'last_heartbeat', rfc3339(math.floor(beat_ms / 1000), (beat_ms % 1000) * 1000))
if idx[state] then redis.call('ZADD', idx[state], score, id) end
if active[state] or redis.call('HEXISTS', KEYS[1], 'current_task') == 1 then
  redis.call('ZADD', alive_key, score, id)
end
return {'ok', state, redis.call('EXISTS', KEYS[2]), redis.call('EXISTS', KEYS[3], KEYS[4])}
"""
)


# Agents by state, live and dead, by the Redis clock: O(log n) per state, plus the activity times
# of live idle agents when asked (O(live idle agents)), for /api/scaling and /metrics.
# KEYS: one zset per agent state (AGENT_STATES order)
# ARGV: 1 agent hash key prefix, 2 "1" = read live idle agents' last_active_at, 3 index of the
#       idle zset in KEYS
# Returns {live counts, dead counts, last_active_at (or created_at) of live idle agents, now ms}.
AGENT_COUNTS = """
local t = redis.call('TIME')
local now = string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local live, dead, times = {}, {}, {}
for i, key in ipairs(KEYS) do
  live[i] = redis.call('ZCOUNT', key, '(' .. now, '+inf')
  dead[i] = redis.call('ZCOUNT', key, '-inf', now)
end
if ARGV[2] == '1' then
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[tonumber(ARGV[3])], '(' .. now, '+inf')) do
    local v = redis.call('HMGET', ARGV[1] .. id, 'last_active_at', 'created_at')
    times[#times + 1] = v[1] or v[2] or ''
  end
end
return {live, dead, times, now}
"""


def execute_pipelined(
    r: redis.Redis, build, scripts, *, transaction: bool = False, raise_on_error: bool = True
) -> list:
    """Run the commands ``build(pipe)`` queues in one round trip; returns their replies.

    Scripts go in as plain ``EVALSHA`` (:func:`queue_script`): redis-py would otherwise ask
    ``SCRIPT EXISTS`` first, a second round trip on every call. If Redis lost its script cache
    (a restart), ``scripts`` are loaded and the pipeline runs once more, so its commands must be
    safe to repeat (in MULTI/EXEC too, with ``transaction``: EXEC runs the other commands even
    when an EVALSHA fails). ``raise_on_error=False``: errors come back as replies.
    """
    for attempt in (1, 2):
        pipe = r.pipeline(transaction=transaction)
        build(pipe)
        try:
            replies = pipe.execute(raise_on_error=raise_on_error)
        except redis.exceptions.NoScriptError:
            if attempt == 2:
                raise
            replies = None
        else:
            if attempt == 2 or not any(
                isinstance(x, redis.exceptions.NoScriptError) for x in replies
            ):
                return replies
        for script in scripts:
            r.script_load(script.script)
    raise AssertionError("unreachable")


def queue_script(pipe, script, keys: list[str], args: list) -> None:
    """Queue ``script`` on ``pipe`` as a bare ``EVALSHA`` (see :func:`execute_pipelined`)."""
    pipe.evalsha(script.sha, len(keys), *keys, *args)
