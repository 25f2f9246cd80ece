"""One ``MULTI``/``EXEC`` transaction, packed and sent in a single write.

For writes whose commands do not depend on what Redis holds (creating a task): atomic like a
script, no slower than one on the path between a submit and a blocked worker's wake-up, and
packed with hiredis directly, which costs a quarter of redis-py's pipeline there
(``docs/benchmarks.md``).
"""

from __future__ import annotations

from collections.abc import Sequence

import redis

try:  # a dependency (redis[hiredis]); without it, redis-py's own packer
    from hiredis import pack_command
except ImportError:  # pragma: no cover
    pack_command = None

Command = Sequence[str | int | float]


def pack(conn, commands: list[Command]) -> list[bytes]:
    """``commands`` packed for ``conn.send_packed_command``, by hiredis when it can (arguments
    that are str, bytes, int or float), else by redis-py."""
    if pack_command is None:  # pragma: no cover
        return conn.pack_commands(commands)
    try:
        return [b"".join([pack_command(tuple(c)) for c in commands])]
    except TypeError:  # an argument hiredis does not take (redis-py says what is wrong with it)
        return conn.pack_commands(commands)


def execute(r: redis.Redis, commands: list[Command]) -> list:
    """Run ``commands`` as one transaction on a pooled connection; returns their replies.

    The pool hands out a live connection (one the server closed meanwhile is reconnected).
    A connection error is raised, not retried: once sent, the transaction may have run, and a
    retry could run it twice. An error reply is raised as ``redis.ResponseError``: the
    transaction then did not run (a command refused when queued) or ran with that command
    failing (Redis does not roll back).
    """
    pool = r.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_packed_command(pack(conn, [("MULTI",), *commands, ("EXEC",)]))
        replies = [conn.read_response() for _ in range(len(commands) + 2)]
    except BaseException:
        conn.disconnect()  # replies may be left unread on it
        raise
    finally:
        pool.release(conn)
    for result in replies[-1]:
        if isinstance(result, redis.ResponseError):
            raise result
    return replies[-1]
