"""The docket's consume side: how a worker takes, keeps, finishes and reclaims tasks.

Producers (``TaskStore.add``, ``assign``, ``requeue``) put one entry per dispatch on a Redis
stream: the shared docket ``docket:tasks`` for backlog work, or ``docket:agent:<id>`` for work
aimed at one agent. Both streams have the consumer group ``workers``; a worker's consumer name
is its agent id, so an entry's holder can be matched to an agent and its heartbeat.

Delivery is **at-least-once**. An entry is acknowledged (``XACK``) only after the task's final
state for that attempt is written. The task record, not the entry, decides who runs it: taking
a task is one guarded Lua transition of the record, so an entry whose task was removed, taken
elsewhere or already finished is skipped and acknowledged. Entries a dead worker held are taken
over (``XAUTOCLAIM``) once they have been idle longer than ``claim_timeout_secs`` and their
holder's heartbeat is stale; a live worker resets its entry's idle time on every heartbeat, so a
task still being worked is never taken.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from tinytown.core import defaults
from tinytown.core.clock import now, to_rfc3339
from tinytown.core.records import Task
from tinytown.core.states import AGENT_NO_WORK_STATES, TASK, TASK_STATES
from tinytown.store.dockets import ACK_IF_HELD, GROUP, RELEASE_ENTRY, forget_consumer, is_dead
from tinytown.store.scripts import DOCKET_CLAIM, queue_script
from tinytown.store.tasks import ensure_group

# Take over one entry from the holder judged dead: only if that holder still holds it and it
# is still idle past the claim timeout, then XAUTOCLAIM from exactly that id (COUNT 1, so
# nothing else moves). KEYS: 1 stream; ARGV: 1 group, 2 new consumer, 3 min idle ms,
# 4 entry id, 5 dead holder. Returns the entry's fields as a flat list ({} when not taken).
_TAKE_OVER = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], ARGV[4], ARGV[4], 1, ARGV[5])
if #p == 0 then return {} end
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', 1)
local e = r[2][1]
if e == nil or e[1] ~= ARGV[4] or not e[2] then return {} end
return e[2]
"""

# Reset the idle time of an entry this consumer still holds (XCLAIM … JUSTID by its holder),
# and never take back one that was handed to another consumer meanwhile.
# KEYS: 1 stream; ARGV: 1 group, 2 consumer, 3 entry id. Returns 1 if still held.
_KEEP_ALIVE = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2]) == 0 then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
"""

# Acknowledge an entry only while this consumer holds it. One taken over meanwhile (its holder was
# judged dead: a pause, or a Redis outage longer than the heartbeat window) is the new holder's
# to acknowledge after its own run; acknowledging it here would leave its task with no entry, so
# that a new holder that died too would leave the task running forever, recovered by nobody.
# KEYS: 1 stream; ARGV: 1 group, 2 consumer, 3 entry id. Returns 1 if acknowledged.


# Plain slotted records, not frozen: they are built between a task's arrival and its CLI's start,
# where a frozen dataclass's __init__ costs about four times as much.
@dataclass(slots=True)
class Entry:
    """One docket entry held by this worker."""

    stream: str
    entry_id: str
    task_id: str
    directed: bool  # from the agent's own stream
    reclaimed_from: str = ""  # the dead holder's agent id, when taken over


@dataclass(slots=True)
class Claim:
    """The outcome of taking an entry's task: the task to run, or why the entry is skipped."""

    task: Task | None
    reason: str = ""  # when task is None: missing | state:<state> | owner | attempts
    peeked: tuple[list[str], ...] = ()  # the agent's urgent and inbox lists, read with the claim


@dataclass(slots=True)
class Delivery:
    """What one read brought: the entry whose task this worker has taken (with the read), and
    the entries it skipped."""

    entry: Entry | None
    claim: Claim | None
    skipped: tuple[tuple[Entry, str], ...] = ()  # (entry, reason), acknowledged already
    refused: str = ""  # the agent's state, when it says take no work (what came went back)


class Docket:
    """One worker's view of the docket: its own stream and the shared one."""

    def __init__(self, town, agent_id: str, reader: redis.Redis | None = None):
        """``town``: the :class:`tinytown.store.Town` whose docket this is."""
        self.town, self.r, self.keys = town, town.redis, town.keys
        self.config = town.config
        self.agent_id = agent_id
        self.own, self.shared = self.keys.agent_docket(agent_id), self.keys.docket
        # The blocking read (and the claim sent behind it) needs a connection of its own, which
        # also lets another thread CLIENT UNBLOCK it.
        self.reader = reader or redis.Redis(
            connection_pool=self.r.connection_pool, single_connection_client=True
        )
        # The reader connection's CLIENT ID during the current read (None between reads), for
        # CLIENT UNBLOCK from another thread; asked with the first read on each connection.
        self.reader_id: int | None = None
        self._reader_client_id: int | None = None  # None: not asked on this connection yet
        self.reader.connection.register_connect_callback(self._reader_connected)
        self._release = self.r.register_script(RELEASE_ENTRY)
        self._keep_alive = self.r.register_script(_KEEP_ALIVE)
        self._ack_if_held = self.r.register_script(ACK_IF_HELD)
        self._take_over = self.r.register_script(_TAKE_OVER)
        self._claim_delivered = self.r.register_script(DOCKET_CLAIM)
        self.scripts = (self._keep_alive,)  # for scripts.execute_pipelined after a cache loss
        k = self.keys
        self._claim_keys = [
            self.own,
            self.shared,
            k.tasks,
            k.backlog,
            k.urgent(agent_id),
            k.inbox(agent_id),
            k.agent(agent_id),
            k.events,
        ]
        self._claim_keys += [k.tasks_in_state(s) for s in TASK_STATES]
        self._claim_args = [
            GROUP,
            agent_id,
            k.task_prefix,
            "," + ",".join(AGENT_NO_WORK_STATES) + ",",
            k.task_token(""),
        ]

    def _reader_connected(self, _conn) -> None:
        """redis-py reconnected the reader: a new connection has a new CLIENT ID."""
        self._reader_client_id = None

    def end_read(self) -> bool:
        """Make a blocking read in progress return now (``CLIENT UNBLOCK``, from another thread);
        False if no read is in progress or it had already returned."""
        reader = self.reader_id
        return reader is not None and bool(self.r.client_unblock(reader))

    def close(self) -> None:
        self.reader.close()

    def ensure_groups(self) -> None:
        ensure_group(self.r, self.own)
        ensure_group(self.r, self.shared)

    # -- reading ----------------------------------------------------------------------------

    def _entries(self, reply) -> list[Entry]:
        out = []
        for stream, rows in reply or []:
            for entry_id, fields in rows:
                if fields is None:  # a held entry deleted from the stream: nothing to run
                    self.r.xack(stream, GROUP, entry_id)
                    continue
                out.append(Entry(stream, entry_id, fields.get("task_id", ""), stream == self.own))
        return out

    def read(self, block_ms: int) -> Delivery | None:
        """Wait up to ``block_ms`` for the next entry from this agent's stream or the shared one,
        and take its task — one round trip in all.

        One ``XREADGROUP`` covers both streams (own first). The claim script
        (``scripts.DOCKET_CLAIM``) is sent on the same connection right behind it, so Redis runs
        it the moment the read is served, before the worker wakes. What came and was not taken
        (an entry from each stream, or the agent's record says take no work) is put back at
        once for another idle worker. Returns None when nothing came.
        """
        conn = self.reader.connection
        read = (
            "XREADGROUP",
            "GROUP",
            GROUP,
            self.agent_id,
            "COUNT",
            1,
            "BLOCK",
            max(block_ms, 1),
            "STREAMS",
            self.own,
            self.shared,
            ">",
            ">",
        )
        claim = (
            "EVALSHA",
            self._claim_delivered.sha,
            len(self._claim_keys),
            *self._claim_keys,
            *self._claim_args,
        )
        conn.connect()  # (a no-op when connected; a reconnect forgets the CLIENT ID)
        ask_id = self._reader_client_id is None
        commands = [("CLIENT", "ID"), read, claim] if ask_id else [read, claim]
        conn.send_packed_command(conn.pack_commands(commands))
        read_error = None
        try:
            if ask_id:
                self._reader_client_id = conn.read_response()  # answered before the read blocks
            self.reader_id = self._reader_client_id
            # raw replies, without redis-py's reply callbacks:
            # stream → [[entry id, [field, value, …]], …]
            try:
                # Waits the block time plus the usual reply timeout, so an idle read never meets
                # the connection's socket timeout (whatever it is).
                reply = conn.read_response(
                    timeout=block_ms / 1000 + defaults.REDIS_SOCKET_TIMEOUT_SECS
                )
            except (
                redis.ResponseError
            ) as err:  # NOGROUP or UNBLOCKED; the claim's reply follows all the same
                reply, read_error = None, err
            try:
                claimed = conn.read_response()
            except (
                redis.exceptions.NoScriptError
            ):  # Redis lost its script cache: load it and claim now
                claimed = self._claim_delivered(keys=self._claim_keys, args=self._claim_args)
        finally:
            self.reader_id = None
        delivery = self._delivery(reply, claimed)
        if read_error is not None and (delivery is None or delivery.entry is None):
            # (a task the claim took anyway is run first; the error comes back next read)
            raise read_error
        return delivery

    def _delivery(self, reply: dict | list | None, claimed: list) -> Delivery | None:
        status, stream, entry_id, task_id, record, urgent, inbox, flat = claimed
        skipped = (
            tuple(
                (Entry(s, e, t, s == self.own), reason)
                for s, e, t, reason in zip(flat[::4], flat[1::4], flat[2::4], flat[3::4])
            )
            if flat
            else ()
        )
        # What came and was neither taken nor skipped goes back (RESP3 map or RESP2 pairs). The
        # usual read brought the one entry the claim took: nothing to look up then.
        came = [
            (got_stream, got_id)
            for got_stream, rows in (reply.items() if isinstance(reply, dict) else reply or ())
            for got_id, _fields in rows
        ]
        if came and came != [(stream, entry_id)]:
            handled = {(e.stream, e.entry_id) for e, _ in skipped} | {(stream, entry_id)}
            for got_stream, got_id in came:
                if (got_stream, got_id) not in handled:
                    self._release(keys=[got_stream], args=[GROUP, got_id])
        if status == "ok":
            task = Task.from_hash(dict(zip(record[::2], record[1::2])))
            entry = Entry(stream, entry_id, task_id, stream == self.own)
            return Delivery(entry, Claim(task, peeked=(urgent, inbox)), skipped)
        if status == "none":
            return Delivery(None, None, skipped) if skipped else None
        return Delivery(None, None, refused=status.partition(":")[2])  # refused:<agent state>

    def held_by_me(self) -> list[Entry]:
        """Entries this agent id received before and never acknowledged (a restarted worker)."""
        reply = self.r.xreadgroup(
            GROUP, self.agent_id, {self.own: "0", self.shared: "0"}, count=100
        )
        return [
            Entry(e.stream, e.entry_id, e.task_id, e.directed, reclaimed_from=self.agent_id)
            for e in self._entries(reply)
        ]

    # -- taking the task --------------------------------------------------------------------

    def claim(self, entry: Entry) -> Claim:
        """Take the task of an entry got otherwise than by :meth:`read` (which claims what it
        delivers): one held from before a restart (:meth:`held_by_me`) or taken over from a dead
        worker (:meth:`reclaim_one`). Its task is taken if it is ``pending`` (a shared entry) or
        still ``running``/``assigned`` for the holder — as a new attempt, or failed past
        ``max_attempts``.
        """
        task = self.town.tasks.find(entry.task_id)
        if task is None:
            return Claim(None, "missing")
        holder = entry.reclaimed_from
        if not entry.directed and TASK["take_shared"].allows(task.state):
            assignee = ""
        elif task.assigned_to == holder and TASK["take_over"].allows(task.state):
            assignee = holder
        else:
            return Claim(None, f"state:{task.state}")
        max_attempts = task.attempts_allowed(self.config.agent.max_attempts)
        if task.attempts >= max_attempts:
            reason = (
                f"failed after {task.attempts} attempts "
                f"(max_attempts = {max_attempts}); "
                f"the last one ended when worker {holder} stopped without finishing it"
            )
            self.town.tasks.transition(
                task.id,
                "fail",
                expect=task.state,
                assignee=assignee,
                set_fields={"result": reason, "completed_at": to_rfc3339(now())},
            )
            return Claim(None, "attempts")
        fields = {"assigned_to": self.agent_id, "started_at": to_rfc3339(now())}
        result = self.town.tasks.transition(
            task.id,
            "take_over",
            expect=task.state,
            assignee=assignee,
            set_fields=fields,
            incr_attempts=True,
        )
        if not result.ok:
            return Claim(
                None, result.status if result.status != "state" else f"state:{result.old_state}"
            )
        self.r.delete(self.keys.task_token(task.id))  # (as the read's claim: the old attempt's)
        return Claim(Task.from_hash(result.record))

    # -- while the task runs, and after -----------------------------------------------------

    def keep_alive(self, entry: Entry) -> bool:
        """Reset the entry's idle time (``XCLAIM … JUSTID`` by its holder). False if no longer
        held."""
        return bool(
            self._keep_alive(keys=[entry.stream], args=[GROUP, self.agent_id, entry.entry_id])
        )

    def queue_keep_alive(self, pipe, entry: Entry) -> None:
        """Queue a :meth:`keep_alive` on ``pipe`` (see ``scripts.execute_pipelined``); its reply
        is 1 if the entry is still held."""
        queue_script(pipe, self._keep_alive, [entry.stream], [GROUP, self.agent_id, entry.entry_id])

    def ack(self, entry: Entry) -> bool:
        """Acknowledge: call only after the task's final state for this attempt is written.
        False, and nothing done, when another worker took the entry over meanwhile."""
        args = [GROUP, self.agent_id, entry.entry_id]
        return bool(self._ack_if_held(keys=[entry.stream], args=args))

    def queue_ack(self, pipe, entry: Entry) -> None:
        """Queue an :meth:`ack` on ``pipe`` (``scripts.queue_script``); its reply is 1 if
        acknowledged. The same rule: queue it only behind (or after) the final state's write."""
        queue_script(
            pipe, self._ack_if_held, [entry.stream], [GROUP, self.agent_id, entry.entry_id]
        )

    # -- taking over from dead workers ------------------------------------------------------

    def reclaim_one(self) -> Entry | None:
        """Take over one shared-docket entry whose holder is dead, if any.

        Candidates are entries idle longer than ``claim_timeout_secs`` (``XPENDING … IDLE``);
        one is taken only if its holder's agent is missing, terminal or past its own heartbeat
        window, and never while Redis has just started (``AgentStore.settled``). The take-over
        itself is ``XAUTOCLAIM`` from exactly that entry, in one script that first checks the
        same holder still has it idle, so a holder that refreshed it in the meantime keeps it.
        """
        min_idle_ms = self.config.agent.claim_timeout_secs * 1000
        try:
            rows = self.r.xpending_range(
                self.shared, GROUP, min="-", max="+", count=20, idle=min_idle_ms
            )
        except redis.ResponseError as err:
            if "NOGROUP" in str(err):
                return None
            raise
        verdicts: dict[str, bool] = {}
        settled: bool | None = None
        now_ms = self.town.agents.now_ms() if rows else 0
        for row in rows:
            holder = row["consumer"]
            if holder == self.agent_id:
                continue
            if holder not in verdicts:
                verdicts[holder] = is_dead(self.town.agents.find(holder), now_ms)
            if not verdicts[holder]:
                continue
            if settled is None:  # asked once, and only when a holder is dead
                settled = self.town.agents.settled()
            if not settled:
                return None
            entry_id = row["message_id"]
            flat = self._take_over(
                keys=[self.shared], args=[GROUP, self.agent_id, min_idle_ms, entry_id, holder]
            )
            if flat:
                fields = dict(zip(flat[::2], flat[1::2]))
                return Entry(
                    self.shared, entry_id, fields.get("task_id", ""), False, reclaimed_from=holder
                )
        return None

    def forget_dead_consumers(self, silent_ms: int) -> list[str]:
        """Remove consumers of the shared docket that hold nothing, have not read for
        ``silent_ms`` (a live worker reads at least every claim timeout) and whose agent is
        dead. One command while every consumer reads: it looks up no agent then."""
        removed = []
        try:
            consumers = self.r.xinfo_consumers(self.shared, GROUP)
        except redis.ResponseError:
            return removed
        consumers = [
            c
            for c in consumers
            if c["name"] != self.agent_id
            and int(c.get("pending", 0)) == 0
            and int(c.get("idle", 0)) >= silent_ms
        ]
        now_ms = self.town.agents.now_ms() if consumers else 0
        for c in consumers:
            name = c["name"]
            if is_dead(self.town.agents.find(name), now_ms) and forget_consumer(
                self.r, self.shared, name
            ):
                removed.append(name)
        return removed
