"""What an agent worker reads and writes about itself, each in one round trip.

The worker's loop (``agent_worker.py``) calls these; its heartbeat thread calls :meth:`beat` and
its control thread listens through :meth:`listener`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import redis

from tinytown.core.defaults import DOCKET_GROUP as GROUP
from tinytown.core.liveness import Beat
from tinytown.core.states import AGENT, TASK_RUNNING, TERMINAL_TASK_STATES
from tinytown.store import task_tokens, transaction
from tinytown.store.control import Listener
from tinytown.store.scripts import execute_pipelined, queue_script
from tinytown.store.task_tokens import TaskTokens
from tinytown.store.tasks import Transition, parse_transition

MESSAGES_PER_CHECK = 100  # inbox messages a control check looks at for a shutdown

# The end of a round, queued right behind the final state's transition in the same round trip:
# nothing is done if the task is still running for this agent (the transition failed: the entry
# stays held, as at-least-once needs), nor if the entry is no longer held (this round ended
# already: a retry after a lost reply; or another worker took it over); else the output's end
# entry once the task is in a final state (as TaskOutput.finish; its errors ignored: output
# never breaks a task), the entry acknowledged, the round counted, and a completed task counted
# (on the agent's record only while it exists: counting on a deleted one would make a record
# with no id and no state, which a worker adopting that id would take for its own).
# KEYS: 1 task hash, 2 docket stream, 3 agent hash, 4 output stream ('' for none)
# ARGV: 1 group, 2 agent id, 3 entry id, 4 output ttl secs, 5 ',terminal,states,'
# Returns {'unfinished' | 'done', the task's state ('' if missing)}.
_END_ROUND = """
local t = redis.call('HMGET', KEYS[1], 'state', 'assigned_to')
local state = t[1] or ''
if state == 'running' and t[2] == ARGV[2] then return {'unfinished', state} end
if #redis.call('XPENDING', KEYS[2], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2]) == 0 then
  return {'done', state}
end
if KEYS[4] ~= '' and state ~= '' and string.find(ARGV[5], ',' .. state .. ',', 1, true) then
  local newest = redis.pcall('XREVRANGE', KEYS[4], '+', '-', 'COUNT', 1)
  if type(newest) == 'table' and not newest.err then
    local at = newest[1] and tonumber(string.match(newest[1][1], '^%d+')) or 0
    local added = redis.pcall('XADD', KEYS[4], string.format('%d-*', at), 'end', '1')
    if type(added) ~= 'table' then redis.pcall('EXPIRE', KEYS[4], ARGV[4]) end
  end
end
redis.call('XACK', KEYS[2], ARGV[1], ARGV[3])
if redis.call('EXISTS', KEYS[3]) == 1 then  -- (a pruned agent's record is not made again)
  redis.call('HINCRBY', KEYS[3], 'rounds_completed', 1)
  if state == 'completed' then redis.call('HINCRBY', KEYS[3], 'tasks_completed', 1) end
end
return {'done', state}
"""


# What a CLI's start takes for itself, only while the task is still this agent's running one
# (a worker that thaws after its task went to another attempt must not replace that attempt's
# token, nor take messages off the inbox for a prompt it will never give): the attempt's token
# stored, and the messages its prompt carries removed from their lists.
# KEYS: 1 task hash, 2 token key, 3.. one list per message; ARGV: 1 agent id, 2 the running
# state, 3 token digest ('' = none), 4 its ttl secs, 5.. the messages (raw), one per list key.
# Returns 1 if taken, 0 if the task is not this agent's running one.
_TAKE_IF_MINE = """
local t = redis.call('HMGET', KEYS[1], 'state', 'assigned_to')
if t[1] ~= ARGV[2] or t[2] ~= ARGV[1] then return 0 end
if ARGV[3] ~= '' then redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[4]) end
for i = 3, #KEYS do redis.call('LREM', KEYS[i], 1, ARGV[i + 2]) end
return 1
"""


@dataclass(frozen=True)
class RoundEnd:
    """What ends a round besides the final state: the entry to acknowledge, the task whose output
    stream to mark finished (None: its CLI never started), the agent's ``last_active_at``."""

    entry: object  # a tinytown.store.docket.Entry
    output_of: str | None
    last_active_at: str


@dataclass(frozen=True)
class Controls:
    """What the control check reads: the stop flag, the agent's state (None: the record is gone)
    and the first messages of both lists, ``(list key, raw)``, urgent first."""

    stop_requested: bool
    state: str | None
    messages: list[tuple[str, str]]


@dataclass(frozen=True)
class BeatReply:
    """What a heartbeat read: the agent's state (None: the record is gone), whether its stop
    flag is set, whether its urgent or inbox list holds messages, and while a task runs whether
    its entry is still this worker's, the task's state (None: deleted) and its agent; None while
    idle."""

    state: str | None
    stop_requested: bool
    has_messages: bool
    still_held: bool | None = None
    task_state: str | None = None
    task_owner: str | None = None  # the task's assigned_to


class WorkerStore:
    def __init__(self, town, agent_id: str, heartbeat_interval_secs: int):
        """``town``: the :class:`tinytown.store.Town` the worker serves."""
        self.town, self.r, self.keys = town, town.redis, town.keys
        self.agent_id, self.interval = agent_id, heartbeat_interval_secs
        self.tokens = TaskTokens(self.r, self.keys)  # its tasks' tokens (made once, not per task)
        self._end_round = self.r.register_script(_END_ROUND)
        self._take_if_mine = self.r.register_script(_TAKE_IF_MINE)

    def controls(self) -> Controls:
        pipe = self.r.pipeline(transaction=False)
        pipe.get(self.keys.stop(self.agent_id))
        pipe.hget(self.keys.agent(self.agent_id), "state")
        lists = self.town.inbox.lists(self.agent_id)
        for key in lists:
            pipe.lrange(key, 0, MESSAGES_PER_CHECK - 1)
        stop_flag, state, *raws = pipe.execute()
        return Controls(
            bool(stop_flag), state, [(key, raw) for key, rs in zip(lists, raws) for raw in rs]
        )

    def clear_stop(self) -> None:
        self.r.delete(self.keys.stop(self.agent_id))

    def beat(self, docket, entry=None, interval_secs: int | None = None) -> BeatReply:
        """A heartbeat at ``interval_secs`` (its window: 3 of them; default: the working
        interval), which also reads the agent's state and whether its lists hold messages;
        while a task runs (``entry``: its entry on ``docket``, the worker's
        :class:`tinytown.store.docket.Docket`), it keeps the entry fresh and reads the task's
        state too. One round trip."""
        agents = self.town.agents

        def build(pipe):
            agents.queue_worker_beat(pipe, self.agent_id, interval_secs or self.interval)
            if entry is not None:
                docket.queue_keep_alive(pipe, entry)
                pipe.hmget(self.keys.task(entry.task_id), "state", "assigned_to")

        beat, *held = execute_pipelined(self.r, build, agents.scripts + docket.scripts)
        found = beat[0] == "ok"
        return BeatReply(
            state=beat[1] if found else None,
            stop_requested=found and int(beat[2]) > 0,
            has_messages=found and int(beat[3]) > 0,
            still_held=bool(held[0]) if held else None,
            task_state=held[1][0] if held else None,
            task_owner=held[1][1] if held else None,
        )

    def cli_started(
        self,
        task_id: str,
        started_at: str,
        *,
        pgid: int,
        host: str,
        taken: list[tuple[str, str]],
        token: tuple[str, int] | None = None,
        meanwhile: Callable[[], object] | None = None,
    ) -> tuple[str, str, bool]:
        """Once the CLI runs: its task token stored (``(token, ttl secs)``), the task's
        ``started_at``, the agent ``working`` with its task and the CLI's process group and a
        heartbeat (its window the working one from now: an idle one is longer), and the messages
        its prompt carried off the inbox. Returns the agent move's ``(status, old state)`` and
        whether the task was still this agent's running task (False: it was taken from this
        worker while it could not run — frozen, judged dead — and ended or went to another).
        ``meanwhile`` runs while Redis works on them (:class:`Sent`); it may run again if a
        connection error makes the caller retry."""
        tasks, agents = self.town.tasks, self.town.agents
        queued = [
            lambda p: tasks.queue_transition(
                p, task_id, "record", assignee=self.agent_id, set_fields={"started_at": started_at}
            )
        ]
        secret, ttl = (task_tokens.digest(token[0]), token[1]) if token else ("", 0)
        take_keys = [self.keys.task(task_id), self.keys.task_token(task_id)]
        take_keys += [key for key, _ in taken]
        take_args = [self.agent_id, TASK_RUNNING, secret, ttl, *(raw for _, raw in taken)]
        queued.append(lambda p: queue_script(p, self._take_if_mine, take_keys, take_args))
        working = {
            "current_task": task_id,
            "last_active_at": started_at,
            "cli_pgid": str(pgid),
            "host": host,
        }
        beat = Beat(self.interval)  # the working window from now (an idle one is longer)
        queued.append(
            lambda p: agents.queue_update(p, self.agent_id, "work", beat=beat, set_fields=working)
        )
        sent = Sent(self.r, queued, tasks.scripts + agents.scripts + (self._take_if_mine,))
        try:
            if meanwhile is not None:
                meanwhile()
        finally:
            replies = sent.replies()
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        recorded = replies[0][0] == "ok" and replies[1] == 1
        status, old = replies[2]
        if status == "state" and old == AGENT["pause"].target:
            # paused since the claim: it stays paused, and its record still names the task, its
            # CLI and a heartbeat (the working window), as a pause of a working agent leaves them
            agents.update(self.agent_id, "beat", beat=beat, set_fields=working)
        return status, old, recorded

    def attempt_ended(
        self,
        task_id: str,
        *,
        token: str | None,
        run_secs: float,
        move: str | None = None,
        set_fields: dict[str, str] | None = None,
        output: tuple[list[str], int] | None = None,
        round_end: RoundEnd | None = None,
    ) -> tuple[Transition | None, Exception | None, tuple[str, tuple[str, str]] | None]:
        """An attempt's CLI has ended, in one round trip: the last of its output appended to the
        task's stream (``output``: ``(texts, bytes lost before them)``), its task token revoked
        (if one was issued), its seconds counted toward ``worker_seconds``, and (with ``move``,
        ``complete`` or ``fail``) the task's final state written from ``running`` by this
        agent, with ``set_fields``. Returns that transition (None without ``move``), the output's
        error if its write failed (other errors raise), and with ``round_end`` (and ``move``)
        the round's end in the same round trip (else None): what :meth:`round_done` does, only
        if the transition left the task no longer running for this agent, as ``(the task's
        state, the agent move's (status, old state))``."""
        tasks, queued, out = self.town.tasks, [], self.town.output
        texts, lost = output or ([], 0)
        for i, text in enumerate(texts):
            lost_now = lost if i == 0 else 0
            queued.append(lambda p, text=text, n=lost_now: out.queue_append(p, task_id, text, n))
        if token is not None:  # its seconds counted with it, once (a retry finds it gone)
            secs = (self.keys.worker_seconds, run_secs) if run_secs else None
            queued.append(lambda p: self.tokens.queue_revoke(p, task_id, token, secs))
        elif run_secs:
            queued.append(lambda p: tasks.queue_add_worker_seconds(p, run_secs))
        if move is not None:
            queued.append(
                lambda p: tasks.queue_transition(
                    p,
                    task_id,
                    move,
                    expect=TASK_RUNNING,
                    assignee=self.agent_id,
                    set_fields=set_fields,
                )
            )
        ending = round_end is not None and move is not None
        if ending:
            queued += self._queue_round_end(task_id, round_end)
        scripts = tasks.scripts + (self.tokens._revoke, out._append)
        scripts += (self._end_round, self.town.agents._update)
        replies = each_once(self.r, queued, scripts)
        output_error = next((x for x in replies[: len(texts)] if isinstance(x, Exception)), None)
        for reply in replies[len(texts) :]:
            if isinstance(reply, Exception):
                raise reply
        if not ending:
            return (parse_transition(replies[-1]) if move is not None else None), output_error, None
        (status, state), (agent_status, old) = replies[-2], replies[-1]
        if status != "done":  # (the transition's error was raised above)
            raise RuntimeError(f"task {task_id} still running after its final write")
        return parse_transition(replies[-3]), output_error, (state, (agent_status, old))

    def _queue_round_end(self, task_id: str, end: RoundEnd) -> list[Callable]:
        keys = [
            self.keys.task(task_id),
            end.entry.stream,
            self.keys.agent(self.agent_id),
            self.town.output.stream(end.output_of) if end.output_of else "",
        ]
        terminal = "," + ",".join(TERMINAL_TASK_STATES) + ","
        ttl = self.town.output.ttl_secs
        args = [GROUP, self.agent_id, end.entry.entry_id, ttl, terminal]
        return [
            lambda p: queue_script(p, self._end_round, keys, args),
            lambda p: self.town.agents.queue_update(
                p,
                self.agent_id,
                "rest",
                set_fields={"last_active_at": end.last_active_at},
                delete_fields=("current_task", "cli_pgid"),
            ),
        ]

    def round_done(
        self, entry, *, last_active_at: str, output_of: str | None
    ) -> tuple[str, tuple[str, str]]:
        """After the task's final state is written (and its workspace dealt with), in one round
        trip, what the final write does itself when nothing follows it (``_END_ROUND``): its
        output stream marked finished (``output_of``: the task, when it is in a final state),
        the docket entry acknowledged, the round (and a completed task) counted, all only while
        the entry is still held, so that a retry after a lost reply counts nothing twice; and
        the agent back to ``idle`` (its task and CLI process group dropped). Returns the task's
        state as the script saw it (``unfinished``: still running for this agent, nothing done)
        and the agent move's ``(status, old state)``."""
        end = RoundEnd(entry, output_of, last_active_at)
        replies = each_once(
            self.r,
            self._queue_round_end(entry.task_id, end),
            (self._end_round, self.town.agents._update),
        )
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        (status, state), (agent_status, old) = replies
        return ("unfinished" if status != "done" else state), (agent_status, old)

    def cli_of(self, holder: str) -> tuple[str | None, str | None]:
        """``(host, cli_pgid)`` another agent recorded while its CLI ran."""
        host, pgid = self.r.hmget(self.keys.agent(holder), "host", "cli_pgid")
        return host, pgid

    def listener(self) -> Listener:
        return Listener(self.r, self.keys, self.agent_id)

    def ping(self) -> bool:
        return bool(self.r.ping())


class Sent:
    """Commands sent to Redis in one write whose replies are read later (:meth:`replies`), so
    that the worker's own work runs meanwhile instead of waiting for Redis. Each command runs
    once: after a lost script cache only the scripts that failed (``NOSCRIPT``) are sent again.

    Call :meth:`replies` once, always (it gives the connection back); on a connection error
    the connection is dropped and the error raised, as a redis-py pipeline would."""

    def __init__(self, r: redis.Redis, queued: list[Callable], scripts):
        self.r, self.queued, self.scripts = r, queued, scripts
        pipe = r.pipeline(transaction=False)
        for queue in queued:
            queue(pipe)
        self.commands = [args for args, _options in pipe.command_stack]
        self.pool = r.connection_pool
        self.conn = self.pool.get_connection()
        try:
            self.conn.send_packed_command(transaction.pack(self.conn, self.commands))
        except BaseException:
            self._drop()
            raise

    def _drop(self) -> None:
        self.conn.disconnect()  # replies may be left unread on it
        self.pool.release(self.conn)
        self.conn = None

    def replies(self) -> list:
        """The replies in order, an error reply as its exception (not raised)."""
        replies = []
        try:
            for _ in self.commands:
                try:
                    replies.append(self.conn.read_response())
                except redis.ResponseError as err:
                    replies.append(err)
        except BaseException:
            self._drop()
            raise
        self.pool.release(self.conn)
        self.conn = None
        lost = [i for i, x in enumerate(replies) if isinstance(x, redis.exceptions.NoScriptError)]
        if lost:
            for script in self.scripts:
                self.r.script_load(script.script)
            pipe = self.r.pipeline(transaction=False)
            for i in lost:
                self.queued[i](pipe)
            for i, reply in zip(lost, pipe.execute(raise_on_error=False)):
                replies[i] = reply
        return replies


def each_once(r: redis.Redis, queued: list[Callable], scripts) -> list:
    """Run the commands ``queued`` (each queues one on a pipeline) in one round trip, in order,
    and return their replies, errors as values (:class:`Sent`, read at once)."""
    return Sent(r, queued, scripts).replies()
