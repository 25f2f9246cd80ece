"""Who a caller is and what it may do: the principal, the scopes it holds, and the auth errors
with upstream's constant texts — shared by the API-key and OIDC verifiers."""

from __future__ import annotations

from dataclasses import dataclass, field

from tinytown.config import SCOPES

ALL_SCOPES = frozenset(SCOPES)
OIDC_ALGORITHMS = ("RS256", "ES256")

# Upstream's constant auth error texts (§9.2).
AUTH_REQUIRED = "Authentication required"
INVALID_CREDENTIALS = "Invalid credentials"
INSUFFICIENT = "Insufficient permissions"


@dataclass(frozen=True)
class Principal:
    id: str
    scopes: frozenset[str]
    # when the credential stops being good (Unix seconds): an OIDC token's ``exp``; None for keys
    expires_at: float | None = field(default=None, compare=False)

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes


LOCAL = Principal("local", ALL_SCOPES)


class AuthError(Exception):
    """401 or 403 with upstream's constant ``error`` text and a specific ``detail``.

    ``principal`` is set when the caller was identified but is not allowed (a 403), so the
    audit line names who was denied.
    """

    def __init__(self, status: int, error: str, detail: str, principal: Principal | None = None):
        super().__init__(detail)
        self.status, self.error, self.detail, self.principal = status, error, detail, principal


def normalize_scopes(values) -> frozenset[str]:
    """Known scopes from a token or config; ``town:read`` spellings accepted, others ignored."""
    return frozenset(s.replace(":", ".") for s in values if s.replace(":", ".") in ALL_SCOPES)
