"""A lease: one holder at a time for a town-wide duty, that lapses if its holder dies.

``SET key token NX PX ttl`` takes it; only the holder's token renews or releases it (a script
compares first), so a holder that outlived its lease never releases the next holder's.
"""

from __future__ import annotations

import secrets

import redis

# KEYS: 1 lease; ARGV: 1 token, 2 ttl ms ("" = release). Returns 1 if this token held it.
_RENEW_OR_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""


class Lease:
    def __init__(self, r: redis.Redis, key: str, ttl_ms: int):
        self.r, self.key, self.ttl_ms = r, key, ttl_ms
        self.token = secrets.token_hex(8)
        self._script = r.register_script(_RENEW_OR_RELEASE)

    def acquire(self) -> bool:
        """Take the lease if nobody holds it, or renew it if this holder does."""
        if self.r.set(self.key, self.token, nx=True, px=self.ttl_ms):
            return True
        return bool(self._script(keys=[self.key], args=[self.token, self.ttl_ms]))

    def release(self) -> bool:
        return bool(self._script(keys=[self.key], args=[self.token, ""]))
