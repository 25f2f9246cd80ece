"""Who is calling, and what they may do: API keys (Argon2id) and OIDC bearer tokens.

Scopes are ``town.read``, ``town.write``, ``agent.manage`` and ``admin`` (implies all). An API key
with no scopes configured has all of them (upstream §11); an OIDC token has exactly the scopes it
carries in ``scope`` (space-separated) or ``scp`` (list or string).

API keys are checked against the upstream single ``api_key_hash`` (principal ``api_key``) and every
named ``[[townhall.auth.keys]]`` entry (principal = its name), so a key can be rotated by adding
the new one, moving clients, then removing the old one. Argon2 costs tens of milliseconds by
design; a successful verification is remembered for ``API_KEY_CACHE_TTL_SECS`` under an HMAC of
the raw key with a random per-process secret, so the cache never holds a key or anything that
can be checked against one offline. Failures are never cached.

A task token (``TINYTOWN_TASK_TOKEN``, :mod:`tinytown.store.task_tokens`), in any mode but
``none``, is the principal ``task:<id>``: allowed ``POST /v1/tasks/<id>/complete`` and ``/fail``
of its own task while that task runs and the token is its current attempt's, nothing else.

:mod:`tinytown.api.access` wires this into requests; the only Flask here is the default way a
task token learns the request's method and path and finds the town (:class:`Authenticator`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable

from tinytown.api.principals import (  # noqa: F401 (also this module's names, for callers)
    ALL_SCOPES,
    AUTH_REQUIRED,
    INSUFFICIENT,
    INVALID_CREDENTIALS,
    LOCAL,
    OIDC_ALGORITHMS,
    AuthError,
    Principal,
    normalize_scopes,
)
from tinytown.config import AuthConfig
from tinytown.core import defaults
from tinytown.core.apikeys import verify_key
from tinytown.store import task_tokens

# --- API keys ---------------------------------------------------------------------------------


class ApiKeyVerifier:
    def __init__(
        self,
        auth: AuthConfig,
        *,
        cache_ttl_secs: float = defaults.API_KEY_CACHE_TTL_SECS,
        max_entries: int = defaults.API_KEY_CACHE_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.keys: list[tuple[str, str, frozenset[str]]] = []
        if auth.api_key_hash:
            self.keys.append(
                ("api_key", auth.api_key_hash, frozenset(auth.api_key_scopes) or ALL_SCOPES)
            )
        for key in auth.keys:
            self.keys.append((key.name, key.hash, frozenset(key.scopes) or ALL_SCOPES))
        self.cache_ttl_secs, self.max_entries, self.clock = cache_ttl_secs, max_entries, clock
        self._secret = secrets.token_bytes(32)
        self._cache: dict[bytes, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def authenticate(self, raw_key: str) -> Principal:
        if not self.keys:
            raise AuthError(
                401,
                AUTH_REQUIRED,
                "no API key is configured; run `tt auth add-key NAME` in the town directory",
            )
        digest = hmac.new(
            self._secret, raw_key.encode("utf-8", "surrogatepass"), hashlib.sha256
        ).digest()
        now = self.clock()
        if self.cache_ttl_secs > 0:
            hit = self._cache.get(digest)
            if hit is not None and hit[0] > now:
                return hit[1]
        for name, phc, scopes in self.keys:
            if verify_key(phc, raw_key):
                principal = Principal(name, scopes)
                if self.cache_ttl_secs > 0:
                    with self._lock:
                        while len(self._cache) >= self.max_entries:
                            self._cache.pop(next(iter(self._cache)))
                        self._cache[digest] = (now + self.cache_ttl_secs, principal)
                return principal
        raise AuthError(401, INVALID_CREDENTIALS, "the API key does not match any configured key")

    def fingerprint(self, name: str) -> str | None:
        """The configured key named ``name``, as a page session is bound to it: a digest of its
        name and Argon2 hash (nothing that can be checked against a key). None: no such key."""
        for n, phc, _ in self.keys:
            if n == name:
                return _digest(n, phc)
        return None

    def by_fingerprint(self, fingerprint: str) -> Principal | None:
        """The principal of the configured key with this fingerprint, with its scopes as now
        configured; None once that key is removed or replaced."""
        for name, phc, scopes in self.keys:
            if hmac.compare_digest(_digest(name, phc), fingerprint):
                return Principal(name, scopes)
        return None


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:32]


def credential(authorization: str | None, x_api_key: str | None) -> str | None:
    """``Authorization: Bearer <x>`` first, then ``X-API-Key`` (upstream §11)."""
    if authorization and authorization.startswith("Bearer "):
        value = authorization[len("Bearer ") :].strip()
        if value:
            return value
    if x_api_key and x_api_key.strip():
        return x_api_key.strip()
    return None


class Authenticator:
    """The configured mode: ``none`` (everyone is ``local`` with all scopes), ``api_key``,
    ``oidc``; task tokens in the last two.

    ``task_token_valid`` (task id, token → whether Redis holds it for a running task; townhall
    passes its town's :class:`tinytown.store.task_tokens.TaskTokens`): without it, task tokens
    are refused.
    """

    def __init__(
        self,
        auth: AuthConfig,
        *,
        task_token_valid: Callable[[str, str], bool] | None = None,
        **kwargs,
    ):
        self.mode = auth.mode
        self.api_keys = ApiKeyVerifier(auth, **kwargs) if auth.mode == "api_key" else None
        self.oidc = None
        if auth.mode == "oidc":  # jwt, cryptography and requests load only for it (memory)
            from tinytown.api.oidc import OidcVerifier

            self.oidc = OidcVerifier(auth)
        self.task_token_valid = task_token_valid

    def authenticate(
        self,
        authorization: str | None,
        x_api_key: str | None,
        target: tuple[str, str] = ("", ""),
    ) -> Principal:
        """The caller's principal; ``target`` is the request's method and path (a task token is
        good for one route only)."""
        if self.mode == "none":
            return LOCAL
        token = credential(authorization, x_api_key)
        if token is None:
            raise AuthError(
                401, AUTH_REQUIRED, "send Authorization: Bearer <key or token> or X-API-Key: <key>"
            )
        if (task_id := task_tokens.task_of(token)) is not None:
            return self.task_principal(task_id, token, target)
        if self.oidc is not None:
            return self.oidc.authenticate(token)
        return self.api_keys.authenticate(token)

    def session_binding(self, principal: Principal) -> str | None:
        """What a status-page log-in by ``principal`` is tied to, so that it ends with it: the
        configured API key it used (removing or replacing the key ends its sessions), or the
        OIDC issuer and audience (the session also ends with the token). None: no log-in here.
        """
        if self.api_keys is not None:
            fingerprint = self.api_keys.fingerprint(principal.id)
            return f"key:{fingerprint}" if fingerprint else None
        if self.oidc is not None:
            return "oidc:" + _digest(self.oidc.auth.issuer or "", self.oidc.auth.audience or "")
        return None

    def resume(self, principal_id: str, scopes: frozenset[str], binding: str) -> Principal | None:
        """The principal of a page session made with ``binding``, if what it is bound to still
        holds: an API key's scopes as configured now; an OIDC session's as its token had them."""
        if self.api_keys is not None and binding.startswith("key:"):
            return self.api_keys.by_fingerprint(binding[len("key:") :])
        if self.oidc is not None and binding == self.session_binding(LOCAL):
            return Principal(principal_id, scopes)
        return None

    def task_principal(self, task_id: str, token: str, target: tuple[str, str]) -> Principal:
        """A task token may report its own task, while that runs: 403 on any other route
        (checked first, without Redis), 401 once it is not the running attempt's."""
        method, path = target
        own = (f"/v1/tasks/{task_id}/complete", f"/v1/tasks/{task_id}/fail")
        if method != "POST" or path.rstrip("/") not in own:
            raise AuthError(
                403,
                INSUFFICIENT,
                f"a task token only reports its own task: POST {own[0]} or {own[1]}",
            )
        if self.task_token_valid is None or not self.task_token_valid(task_id, token):
            raise AuthError(
                401,
                INVALID_CREDENTIALS,
                "the task token is not valid: its task is no longer running, or a later "
                "attempt holds a newer token",
            )
        return Principal(f"task:{task_id}", frozenset({"town.write"}))
