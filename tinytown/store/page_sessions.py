"""Page sessions: who logged in on the status pages' ``/login``, kept in Redis, so that the
browser's cookie holds a random id and never a key.

A session is ``page_session:<SHA-256 of its id>`` (a hash: the principal, its scopes and what
it is bound to; see :meth:`tinytown.api.auth.Authenticator.session_binding`), expiring with the
session. Only the digest is stored, so reading Redis gives nobody a cookie to replay. The
``page_sessions`` zset (digest → expiry, Unix seconds) lists them, so ``tt auth end-sessions``
can end every one without scanning the key space; expired members are pruned at each log-in.
Logging out deletes the session: a copied cookie stops working then, not 30 days later.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass

import redis

from tinytown.core.keys import Keys

ID_BYTES = 32
# what secrets.token_urlsafe(ID_BYTES) makes: a cookie of any other shape is not looked up
_ID = re.compile(r"[A-Za-z0-9_-]{43}")

# Delete every session the index names, and the index. KEYS: 1 the index; ARGV: 1 the session
# key prefix (the script builds the keys itself: one Redis, not a cluster, as everywhere here).
_END_ALL = """
local digests = redis.call('ZRANGE', KEYS[1], 0, -1)
for _, d in ipairs(digests) do redis.call('DEL', ARGV[1] .. d) end
redis.call('DEL', KEYS[1])
return #digests
"""


@dataclass(frozen=True)
class PageSession:
    principal: str
    scopes: frozenset[str]
    binding: str


def digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class PageSessions:
    def __init__(self, r: redis.Redis, keys: Keys, clock=time.time):
        self.r, self.keys, self.clock = r, keys, clock
        self._end_all = r.register_script(_END_ALL)

    def open(self, principal: str, scopes, binding: str, ttl_secs: int) -> str:
        """A new session for ``principal`` lasting ``ttl_secs`` (≥ 1); returns its id (for the
        cookie; stored only as its digest)."""
        session_id = secrets.token_urlsafe(ID_BYTES)
        d, now, ttl = digest(session_id), self.clock(), max(int(ttl_secs), 1)
        key, index = self.keys.page_session(d), self.keys.page_sessions
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(
            key,
            mapping={
                "principal": principal,
                "scopes": ",".join(sorted(scopes)),
                "binding": binding,
            },
        )
        pipe.expire(key, ttl)
        pipe.zremrangebyscore(index, "-inf", now)
        pipe.zadd(index, {d: now + ttl})
        # the index outlives its longest session by nothing (a town nobody logs in to keeps
        # none); relative, so this host's clock cannot end it early
        pipe.expire(index, ttl + 1, gt=True)
        pipe.expire(index, ttl + 1, nx=True)
        pipe.execute()
        return session_id

    def find(self, session_id: str | None) -> PageSession | None:
        """The live session with this id, or None (unknown, expired, ended, or not an id)."""
        if not session_id or not _ID.fullmatch(session_id):
            return None
        rec = self.r.hgetall(self.keys.page_session(digest(session_id)))
        if not rec or "principal" not in rec:
            return None
        scopes = frozenset(s for s in rec.get("scopes", "").split(",") if s)
        return PageSession(rec["principal"], scopes, rec.get("binding", ""))

    def end(self, session_id: str | None) -> bool:
        """End one session (logging out); True if it was live."""
        if not session_id or not _ID.fullmatch(session_id):
            return False
        d = digest(session_id)
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(self.keys.page_session(d))
        pipe.zrem(self.keys.page_sessions, d)
        return bool(pipe.execute()[0])

    def end_all(self) -> int:
        """End every session (a cookie leaked, a key withdrawn); how many the index named."""
        return int(self._end_all(keys=[self.keys.page_sessions], args=[self.keys.page_session("")]))
