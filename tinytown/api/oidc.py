"""OIDC bearer tokens: JWTs (RS256, ES256) checked against the issuer's JWKS, issuer, audience
and expiry. Loaded only when ``[townhall.auth] mode = "oidc"`` (:class:`tinytown.api.auth.
Authenticator` imports it then), so a town with API keys does not carry jwt, cryptography and
requests in every townhall process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import jwt
import requests

from tinytown.api.principals import (
    INSUFFICIENT,
    INVALID_CREDENTIALS,
    OIDC_ALGORITHMS,
    AuthError,
    Principal,
    normalize_scopes,
)
from tinytown.config import AuthConfig
from tinytown.core import defaults


def _fetch_jwks(url: str) -> dict:
    resp = requests.get(url, timeout=defaults.JWKS_FETCH_TIMEOUT_SECS)
    resp.raise_for_status()
    return resp.json()


class OidcVerifier:
    """Bearer JWTs (RS256, ES256) checked against the issuer's JWKS, issuer, audience and expiry."""

    def __init__(
        self,
        auth: AuthConfig,
        *,
        fetch: Callable[[str], dict] = _fetch_jwks,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.auth, self.fetch, self.clock = auth, fetch, clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = threading.Lock()

    def _refresh(self, *, force: bool) -> None:
        now = self.clock()
        with self._lock:
            age = None if self._fetched_at is None else now - self._fetched_at
            if age is not None and (
                age < defaults.JWKS_MIN_REFETCH_INTERVAL_SECS
                or (not force and age < defaults.JWKS_CACHE_TTL_SECS)
            ):
                return
            try:
                data = self.fetch(self.auth.jwks_url)
                keyset = jwt.PyJWKSet.from_dict(data)
            except (requests.RequestException, ValueError, jwt.PyJWKSetError) as err:
                if self._keys:  # keep serving with the keys we have
                    self._fetched_at = now
                    return
                raise AuthError(
                    401,
                    INVALID_CREDENTIALS,
                    f"cannot load the issuer's keys from {self.auth.jwks_url}: {err}",
                ) from None
            self._keys = {k.key_id: k for k in keyset.keys if k.key_id}
            self._fetched_at = now

    def _key_for(self, kid: str | None) -> jwt.PyJWK:
        self._refresh(force=False)
        if kid not in self._keys:
            self._refresh(force=True)  # key rotation: an unknown kid refetches (rate-limited)
        if kid not in self._keys:
            raise AuthError(
                401, INVALID_CREDENTIALS, f"token key id {kid!r} is not in the issuer's JWKS"
            )
        return self._keys[kid]

    def authenticate(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as err:
            raise AuthError(401, INVALID_CREDENTIALS, f"not a JWT: {err}") from None
        alg = header.get("alg")
        if alg not in OIDC_ALGORITHMS:
            raise AuthError(
                401, INVALID_CREDENTIALS, f"token algorithm {alg!r} is not accepted (RS256, ES256)"
            )
        kid = header.get("kid")
        key = self._key_for(kid)
        if key.algorithm_name != alg:  # e.g. an RS256 header naming an EC key
            raise AuthError(
                401,
                INVALID_CREDENTIALS,
                f"token algorithm {alg} does not match key {kid!r} ({key.algorithm_name})",
            )
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self.auth.audience,
                issuer=self.auth.issuer,
                leeway=self.auth.clock_skew_seconds,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except (
            jwt.PyJWTError,
            TypeError,
            ValueError,
        ) as err:  # the library's key errors are not all PyJWTError
            raise AuthError(401, INVALID_CREDENTIALS, f"token rejected: {err}") from None
        raw = claims.get("scope", claims.get("scp", ""))
        values = (
            raw.split()
            if isinstance(raw, str)
            else [str(v) for v in raw]
            if isinstance(raw, list)
            else []
        )
        principal = Principal(
            str(claims["sub"]), normalize_scopes(values), expires_at=float(claims["exp"])
        )
        missing = [s for s in self.auth.required_scopes if s not in principal.scopes]
        if missing:
            raise AuthError(
                403, INSUFFICIENT, f"token lacks required scope(s): {', '.join(missing)}", principal
            )
        return principal


# --- the request side -------------------------------------------------------------------------
