"""API keys: generation and Argon2id hashing (upstream spec §11 parameters and output).

A key is 64 lowercase hex characters. Its hash is an Argon2id PHC string with m=19456 KiB, t=2,
p=1, a 32-byte output and a 16-byte random salt; only the hash is ever stored.
"""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from tinytown.core import defaults

HASHER = PasswordHasher(
    time_cost=defaults.ARGON2_TIME_COST,
    memory_cost=defaults.ARGON2_MEMORY_KIB,
    parallelism=defaults.ARGON2_PARALLELISM,
    hash_len=defaults.ARGON2_HASH_LEN_BYTES,
    salt_len=defaults.ARGON2_SALT_LEN_BYTES,
    type=Type.ID,
)


def generate_key() -> str:
    """A new raw API key: 32 random bytes as 64 lowercase hex characters."""
    return secrets.token_hex(32)


def hash_key(key: str) -> str:
    """The Argon2id PHC string to put in ``tinytown.toml``."""
    return HASHER.hash(key)


def verify_key(phc: str, key: str) -> bool:
    """Constant-time Argon2 verification with the parameters in the PHC string."""
    try:
        return HASHER.verify(phc, key)
    except (VerificationError, InvalidHashError):
        return False
